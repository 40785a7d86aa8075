package source

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"hash/crc32"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ulikunitz/xz"
)

// The guard passes every shape of xz file the xz tool writes: one block or
// many, several streams, every check type, padding between streams.
func TestXZGuardPassesRealFiles(t *testing.T) {
	if _, err := exec.LookPath("xz"); err != nil {
		t.Skip("xz is not installed")
	}
	d := fixtures(t).disk[:512<<10] // the decoder is slow: keep it short
	dir := t.TempDir()
	in := filepath.Join(dir, "disk")
	os.WriteFile(in, d, 0o644)
	xzOut := func(args ...string) []byte {
		out, err := exec.Command("xz", append(args, "-c", in)...).Output()
		if err != nil {
			t.Fatalf("xz %v: %v", args, err)
		}
		return out
	}
	cases := map[string][]byte{
		"default":          xzOut("-0"),
		"-9":               xzOut("-9"),
		"blocks of 64KiB":  xzOut("-1", "-T2", "--block-size=65536"),
		"blocks of 100000": xzOut("-0", "--block-size=100000"),
		"check none":       xzOut("-0", "--check=none"),
		"check crc32":      xzOut("-0", "--check=crc32"),
		"check sha256":     xzOut("-0", "--check=sha256"),
		"two streams":      append(xzOut("-0"), xzOut("-1", "--block-size=100000")...),
		"stream padding":   append(append(xzOut("-0"), 0, 0, 0, 0, 0, 0, 0, 0), xzOut("-0")...),
		"uncompressible":   xzOut("-0", "--format=xz", "--lzma2=preset=0,mode=fast"),
	}
	for name, x := range cases {
		t.Run(name, func(t *testing.T) {
			z, err := xz.NewReader(newXZGuard(bytes.NewReader(x), MaxDecoderWindow))
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(z)
			if err != nil {
				t.Fatalf("decoding through the guard: %v", err)
			}
			want := d
			if strings.Contains(name, "stream") {
				want = append(bytes.Clone(d), d...)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("decoded %d bytes, want %d", len(got), len(want))
			}
		})
	}
}

// A file whose first block is small and a later block asks for 1536 MiB
// is refused before that block is decoded.
func TestXZGuardLaterBlock(t *testing.T) {
	if _, err := exec.LookPath("xz"); err != nil {
		t.Skip("xz is not installed")
	}
	d := fixtures(t).disk[:256<<10]
	in := filepath.Join(t.TempDir(), "disk")
	os.WriteFile(in, d, 0o644)
	small, err := exec.Command("xz", "-0", "-c", in).Output()
	if err != nil {
		t.Fatal(err)
	}
	x := append(small, xzWithDict(t, small, 37)...)
	z, err := xz.NewReader(newXZGuard(bytes.NewReader(x), MaxDecoderWindow))
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, z)
	if err == nil || !strings.Contains(err.Error(), "needs a 1536 MiB dictionary") {
		t.Errorf("decoding = %d bytes, %v; want a refusal of the second stream's dictionary", n, err)
	}
	if n != int64(len(d)) {
		t.Errorf("decoded %d bytes before the refusal, want the first stream's %d", n, len(d))
	}
}

// detect reads the format from the first bytes, the name only for damaged
// prepared images.
func TestDetect(t *testing.T) {
	f := fixtures(t)
	cases := []struct {
		name     string
		data     []byte
		file     string
		prepared bool
		comp     string
	}{
		{"prepared", f.prepared, "x.img", true, ""},
		{"prepared by name", []byte("garbage!"), "x.ASR", true, ""},
		{"damaged magic", append([]byte("ASRIMX\r\n"), 0), "x", true, ""},
		{"raw", f.disk, "x.asr.img", false, ""},
		{"gzip", f.gz, "x.asr.gz", false, "gzip"},
		{"xz", f.xz, "x", false, "xz"},
		{"zstd", f.zst, "x", false, "zstd"},
		{"short", []byte{0x1f}, "x", false, ""},
	}
	for _, c := range cases {
		ft := detect(c.data[:min(len(c.data), headLen)], c.file)
		if ft.prepared != c.prepared || ft.compression != c.comp {
			t.Errorf("detect(%s) = prepared %v, %q; want %v, %q", c.name, ft.prepared, ft.compression, c.prepared, c.comp)
		}
	}
}

// Local compressed images are measured up to the target's size only.
func TestOpenLocalLimit(t *testing.T) {
	f := fixtures(t)
	dir := t.TempDir()
	bomb := filepath.Join(dir, "bomb.img.gz")
	os.WriteFile(bomb, gzipOf(make([]byte, 256<<20)), 0o644)
	_, err := Open(bomb, Options{MaxSize: diskLen})
	var big *TooBigError
	if !errors.As(err, &big) {
		t.Errorf("Open(bomb) = %v, want a *TooBigError", err)
	}
	for name, data := range map[string][]byte{"disk.img.gz": f.gz, "disk.img.xz": f.xz, "disk.img.zst": f.zst, "disk.img": f.disk, "disk.asr": f.prepared} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, data, 0o644)
		src, err := Open(p, Options{MaxSize: diskLen, ChunkSize: testChunk, AllBlocks: true})
		if err != nil {
			t.Errorf("Open(%s) = %v", name, err)
			continue
		}
		got := make([]byte, src.Info().Size)
		cs := int64(src.Info().ChunkSize)
		err = src.Run(t.Context(), 2, func(c Chunk) error {
			copy(got[int64(c.Index)*cs:], c.Data)
			return nil
		})
		src.Close()
		if err != nil || !bytes.Equal(got, f.disk) {
			t.Errorf("%s: restored %d bytes (err %v), want the disk", name, len(got), err)
		}
	}
}

func FuzzSidecar(f *testing.F) {
	sum := sha256.Sum256([]byte("x"))
	f.Add([]byte("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  disk.img\n"), "disk.img")
	f.Add([]byte("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 *a.img\n"+
		"2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824  b.img\n# comment\n"), "b.img")
	f.Add([]byte("<html>"), "x")
	f.Add(sum[:], "")
	f.Fuzz(func(t *testing.T, b []byte, name string) {
		s, err := parseSidecar(b, name)
		if err == nil && len(s) != sha256.Size {
			t.Fatalf("parseSidecar = %d bytes, nil error", len(s))
		}
		if err != nil && s != nil {
			t.Fatalf("parseSidecar returned a sum with error %v", err)
		}
	})
}

// FuzzXZGuard: whatever the bytes, the guard neither panics nor lets a
// block header through that asks for more than its limit, and it passes
// what the encoder writes.
func FuzzXZGuard(f *testing.F) {
	var b bytes.Buffer
	w, _ := xz.WriterConfig{DictCap: 1 << 16}.NewWriter(&b)
	w.Write(bytes.Repeat([]byte("asr fuzz "), 1000))
	w.Close()
	f.Add(b.Bytes(), uint8(0))
	f.Add(append(b.Bytes(), b.Bytes()...), uint8(1))
	f.Fuzz(func(t *testing.T, x []byte, split uint8) {
		g := newXZGuard(bytes.NewReader(x), 1<<20)
		// Read in uneven pieces, as a network would deliver them.
		buf := make([]byte, int(split)%97+1)
		var got []byte
		for {
			n, err := g.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				break
			}
		}
		if !bytes.HasPrefix(x, got) {
			t.Fatalf("the guard changed the bytes it passed")
		}
		if g.err == nil && len(got) == len(x) {
			// Everything passed: no block may have asked for more.
			checkNoBigDict(t, x, 1<<20)
		}
	})
}

// checkNoBigDict decodes x with a decoder that would allocate whatever
// the headers ask, after checking each block header it can find.
func checkNoBigDict(t *testing.T, x []byte, limit int64) {
	for i := 0; i+12 < len(x); i++ {
		if string(x[i:i+6]) != xzMagic {
			continue
		}
		hs := (int(x[i+12]) + 1) * 4
		if x[i+12] == 0 || i+12+hs > len(x) {
			continue
		}
		h := x[i+12 : i+12+hs]
		if crc32.ChecksumIEEE(h[:hs-4]) != uint32(h[hs-4])|uint32(h[hs-3])<<8|uint32(h[hs-2])<<16|uint32(h[hs-1])<<24 {
			continue
		}
		if d, err := xzBlockDict(h); err == nil && d > limit {
			t.Fatalf("a first block header asking for %d bytes passed the guard", d)
		}
	}
}
