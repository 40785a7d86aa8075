package initramfs

import (
	"fmt"

	"github.com/asrlinux/asr/internal/trust"
)

// TrustedKeysDir is where the initramfs holds its trusted keys:
// trust.DefaultDir as an archive path (no leading slash).
const TrustedKeysDir = "etc/asr/trusted-keys"

// keyFile is one trusted key as it goes into the archive.
type keyFile struct {
	id   string // trust.FormatID: the file is named ID.pub
	text []byte // the key in minisign's .pub format
}

// trustedKeys reads and checks the public key files: each must be a
// minisign public key. They are named by key ID in the archive, so two
// files called key.pub from different places do not overwrite each other;
// the same key given twice goes in once. What goes in is the key as
// minisign writes it, not the file's bytes: nothing but the key reaches the
// appliance.
func trustedKeys(files []string) ([]keyFile, error) {
	var out []keyFile
	seen := map[string]bool{}
	for _, f := range files {
		k, err := trust.LoadFile(f)
		if err != nil {
			return nil, fmt.Errorf("initramfs: %w", err)
		}
		b, err := k.Pub.MarshalText()
		if err != nil {
			return nil, fmt.Errorf("initramfs: trusted key %s: %w", f, err)
		}
		id := trust.FormatID(k.ID)
		if seen[id] {
			continue
		}
		seen[id] = true
		out = append(out, keyFile{id: id, text: append(b, '\n')})
	}
	return out, nil
}
