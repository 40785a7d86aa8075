package blockmap

import (
	"bytes"
	"testing"
)

func TestIsZeroAllZero(t *testing.T) {
	for n := 0; n <= 200; n++ {
		if got := IsZero(make([]byte, n)); !got {
			t.Errorf("IsZero(%d zero bytes) = false, want true", n)
		}
	}
	if got := IsZero(nil); !got {
		t.Errorf("IsZero(nil) = false, want true")
	}
	// A whole default-sized chunk, as the scanner hands it over.
	if got := IsZero(make([]byte, 1<<20)); !got {
		t.Errorf("IsZero(1 MiB of zeros) = false, want true")
	}
}

func TestIsZeroOneNonzeroByte(t *testing.T) {
	for n := 1; n <= 200; n++ {
		for pos := range n {
			// Every bit of the byte must count, not only the low one.
			for _, v := range []byte{0x01, 0x80, 0xff} {
				b := make([]byte, n)
				b[pos] = v
				if IsZero(b) {
					t.Errorf("IsZero(%d bytes with %#x at %d) = true, want false", n, v, pos)
				}
			}
		}
	}
}

// TestIsZeroUnaligned checks subslices that start at odd addresses, as a
// caller that hands over part of a buffer does.
func TestIsZeroUnaligned(t *testing.T) {
	buf := make([]byte, 300)
	for off := range 9 {
		for n := 0; n+off <= 200; n++ {
			b := buf[off : off+n]
			if !IsZero(b) {
				t.Fatalf("IsZero(buf[%d:%d] of zeros) = false, want true", off, off+n)
			}
			if n == 0 {
				continue
			}
			b[n-1] = 1
			if IsZero(b) {
				t.Errorf("IsZero(buf[%d:%d] ending in 1) = true, want false", off, off+n)
			}
			// Bytes just outside the slice must not count.
			b[n-1] = 0
			buf[off+n] = 1
			if !IsZero(b) {
				t.Errorf("IsZero(buf[%d:%d]) = false with a nonzero byte after the slice, want true", off, off+n)
			}
			buf[off+n] = 0
		}
	}
	if !bytes.Equal(buf, make([]byte, len(buf))) {
		t.Fatalf("test left nonzero bytes in its buffer")
	}
}

func BenchmarkIsZero(b *testing.B) {
	buf := make([]byte, 1<<20)
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		if !IsZero(buf) {
			b.Fatal("IsZero(zeros) = false")
		}
	}
}
