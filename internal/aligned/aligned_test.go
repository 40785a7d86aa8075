package aligned

import (
	"testing"
	"unsafe"
)

func TestMakeIsAlignedAndLargeEnough(t *testing.T) {
	for _, n := range []int{1, 4095, 4096, 4097, 1 << 20, 1<<20 + 512, hugePage - 1, hugePage, 8 << 20, 8<<20 + 4096} {
		b := Make(n)
		if !Is(b) {
			t.Errorf("Make(%d) starts off a %d-byte boundary", n, Align)
		}
		if len(b) < n || len(b)%Align != 0 || cap(b) != len(b) {
			t.Errorf("Make(%d): len %d cap %d, want a multiple of %d no smaller than %d, cap = len", n, len(b), cap(b), Align, n)
		}
		// A chunk buffer starts on a huge page, so that the kernel can
		// back it with huge pages from its first byte.
		if n >= hugePage && uintptr(unsafe.Pointer(&b[0]))%hugePage != 0 {
			t.Errorf("Make(%d) starts off a huge-page boundary", n)
		}
		b[0], b[len(b)-1] = 1, 1 // the whole length is usable memory
	}
	if b := Make(8192); Is(b[1:]) || Is(nil) {
		t.Error("Is accepts a buffer off the boundary, or an empty one")
	}
}

func TestCloneIsAnAlignedCopy(t *testing.T) {
	for _, n := range []int{1, 4097, hugePage + 3} {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(i*7 + 1)
		}
		b := Clone(p)
		if !Is(b) || len(b) != n || string(b) != string(p) {
			t.Errorf("Clone of %d bytes: aligned %v, len %d, equal %v", n, Is(b), len(b), string(b) == string(p))
		}
		if p[0]++; b[0] == p[0] {
			t.Errorf("Clone of %d bytes shares memory with its source", n)
		}
	}
}

func TestPoolReusesUpToWhatItKeeps(t *testing.T) {
	p := NewPool(8<<20, 1)
	a, b := p.Get(), p.Get()
	if !Is(a) || len(a) != 8<<20 || &a[0] == &b[0] {
		t.Fatalf("Get: aligned %v, len %d, two Gets share memory %v", Is(a), len(a), &a[0] == &b[0])
	}
	p.Put(a[:10])
	p.Put(b) // beyond what it keeps: dropped
	if c := p.Get(); &c[0] != &a[0] || len(c) != 8<<20 {
		t.Errorf("Get after Put: a new buffer or a short one (len %d), want the kept one whole", len(c))
	}
	if d := p.Get(); &d[0] == &a[0] || &d[0] == &b[0] {
		t.Error("the pool kept more buffers than it was told to")
	}
}
