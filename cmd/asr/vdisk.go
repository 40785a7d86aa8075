package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/asrlinux/asr/internal/source"
)

// openScanSource opens imagescan's source. A VM disk image (qcow2, VMDK,
// VHD, VHDX, VDI) is converted by qemu-img to an unnamed raw file beside
// the output first; since that takes a while, an output that may not be
// replaced is refused before it starts.
func openScanSource(ctx context.Context, src, output string, overwrite bool) (*source.Stream, error) {
	vd, err := source.DetectVirtualDisk(src)
	if err != nil || vd.Name == "" {
		return source.OpenStream(src)
	}
	if _, err := os.Stat(output); err == nil && !overwrite {
		return nil, fmt.Errorf("%s already exists: add --overwrite to replace it", output)
	}
	return source.OpenVirtualDisk(ctx, src, filepath.Dir(output))
}
