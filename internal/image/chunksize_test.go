package image

import "testing"

// TestImagescanChunkSize: imagescan's chunk size by disk size. Disks of 1 GiB and
// more get 8 MiB chunks (the compression window that keeps images no larger
// than partclone | zstd); smaller disks keep at least 128 chunks and never go
// below 1 MiB; a disk too large for MaxChunks chunks of 8 MiB gets larger
// ones, and every size it returns is one an image may have.
func TestImagescanChunkSize(t *testing.T) {
	const mib, gib = int64(1) << 20, int64(1) << 30
	for _, tt := range []struct {
		size int64
		want int
	}{
		{0, 1 << 20}, // unknown: a compressed stream
		{40 * mib, 1 << 20},
		{128 * mib, 1 << 20},
		{256 * mib, 2 << 20},
		{512*mib - 1, 2 << 20},
		{512 * mib, 4 << 20},
		{gib - 1, 4 << 20},
		{gib, 8 << 20},
		{500 * gib, 8 << 20},
		{int64(MaxChunks) * (8 << 20), 8 << 20},
		{int64(MaxChunks)*(8<<20) + 1, 16 << 20},
		{1 << 62, MaxChunkSize},
	} {
		got := ScanChunkSize(tt.size)
		if got != tt.want {
			t.Errorf("ScanChunkSize(%d) = %d, want %d", tt.size, got, tt.want)
		}
		if got < MinChunkSize || got > MaxChunkSize || got%4096 != 0 {
			t.Errorf("ScanChunkSize(%d) = %d: not a chunk size an image may have", tt.size, got)
		}
	}
}
