package image

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"strings"
	"testing"
)

func sigText(n int, fill byte) []byte { return bytes.Repeat([]byte{fill}, n) }

func TestTrailerRoundTrip(t *testing.T) {
	for _, sigs := range [][][]byte{
		{[]byte("one")},
		{sigText(MaxSignatureLen, 'a'), []byte("b")},
		{sigText(10, '1'), sigText(20, '2'), sigText(30, '3'), sigText(40, '4'), sigText(50, '5'), sigText(60, '6'), sigText(70, '7'), sigText(80, '8')},
	} {
		b, err := EncodeTrailer(sigs)
		if err != nil {
			t.Fatalf("EncodeTrailer(%d sigs) = %v", len(sigs), err)
		}
		n, err := TrailerLen(b[len(b)-SigFooterSize:])
		if err != nil || n != len(b) {
			t.Errorf("TrailerLen = %d, %v, want %d, nil", n, err, len(b))
		}
		got, err := ParseTrailer(b)
		if err != nil {
			t.Fatalf("ParseTrailer = %v", err)
		}
		if len(got) != len(sigs) {
			t.Fatalf("ParseTrailer gave %d signatures, want %d", len(got), len(sigs))
		}
		for i := range sigs {
			if !bytes.Equal(got[i], sigs[i]) {
				t.Errorf("signature %d = %q, want %q", i, got[i], sigs[i])
			}
		}
	}
}

func TestEncodeTrailerLimits(t *testing.T) {
	nine := make([][]byte, MaxSignatures+1)
	for i := range nine {
		nine[i] = []byte("x")
	}
	for name, sigs := range map[string][][]byte{
		"none":      nil,
		"nine":      nine,
		"empty sig": {[]byte("a"), {}},
		"too long":  {sigText(MaxSignatureLen+1, 'z')},
	} {
		if _, err := EncodeTrailer(sigs); !errors.Is(err, ErrSignatures) {
			t.Errorf("EncodeTrailer(%s) = %v, want ErrSignatures", name, err)
		}
	}
}

// refooter recomputes a trailer's CRC after a test changed it, so the
// change is caught by the check meant for it rather than by the CRC.
func refooter(b []byte) []byte {
	binary.LittleEndian.PutUint32(b[len(b)-8:], crc32.Checksum(b[:len(b)-8], crcTable))
	return b
}

func TestParseTrailerRefuses(t *testing.T) {
	good, err := EncodeTrailer([][]byte{[]byte("first"), []byte("second")})
	if err != nil {
		t.Fatal(err)
	}
	f := len(good) - SigFooterSize
	mod := func(fn func(b []byte) []byte) []byte { return fn(bytes.Clone(good)) }
	for _, tc := range []struct {
		name, want string
		b          []byte
	}{
		{"empty", "shorter than its footer", nil},
		{"magic", "do not end in", mod(func(b []byte) []byte { b[f] = 'X'; return b })},
		{"version", "trailer version 2", mod(func(b []byte) []byte { b[f+8] = 2; return refooter(b) })},
		{"count 0", "0 signatures", mod(func(b []byte) []byte { b[f+12] = 0; return refooter(b) })},
		{"count 9", "9 signatures", mod(func(b []byte) []byte { b[f+12] = 9; return refooter(b) })},
		{"count 3", "signature 3 of 3 is missing", mod(func(b []byte) []byte { b[f+12] = 3; return refooter(b) })},
		{"count 1", "stray bytes", mod(func(b []byte) []byte { b[f+12] = 1; return refooter(b) })},
		{"length", "footer says", mod(func(b []byte) []byte { b[f+16]++; return refooter(b) })},
		{"huge length", "out of range", mod(func(b []byte) []byte { b[f+22] = 1; return refooter(b) })},
		{"crc", "checksum", mod(func(b []byte) []byte { b[0] ^= 1; return b })},
		{"sig length 0", "has length 0", mod(func(b []byte) []byte { b[0] = 0; return refooter(b) })},
		{"sig length past end", "has length", mod(func(b []byte) []byte { b[1] = 0x10; return refooter(b) })},
		{"reserved", "reserved", mod(func(b []byte) []byte { b[len(b)-1] = 1; return b })},
		{"cut", "do not end in", good[:len(good)-1]},
		{"extra byte in front", "footer says", append([]byte{0}, good...)},
	} {
		_, err := ParseTrailer(tc.b)
		if !errors.Is(err, ErrSignatures) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseTrailer(%s) = %v, want ErrSignatures saying %q", tc.name, err, tc.want)
		}
	}
}

// TestWriteSignatures signs a real image file: its digest, header and chunks
// stay the same, old and new readers open it, and signatures can be
// replaced and removed.
func TestWriteSignatures(t *testing.T) {
	img, disk, m := testImage(t)
	p := writeImage(t, img)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sigs := [][]byte{[]byte("sig one\n"), sigText(300, 's')}
	if err := WriteSignatures(f, m, sigs); err != nil {
		t.Fatal(err)
	}
	signed, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(signed[:len(img)], img) {
		t.Fatal("signing changed bytes of the image before its trailer")
	}
	im := mustOpen(t, p)
	if im.Digest != Digest(sha256.Sum256(MarshalManifest(m))) || !bytes.Equal(im.Header, img[:HeaderSize]) {
		t.Error("the signed image's digest or header differ from the unsigned one's")
	}
	for i := range m.Chunks {
		data, _, err := im.ReadChunk(i, nil, nil)
		if err != nil {
			t.Fatalf("chunk %d of the signed image: %v", i, err)
		}
		if want := disk[i*testChunk : i*testChunk+m.ChunkLen(i)]; !bytes.Equal(data, want) {
			t.Fatalf("chunk %d of the signed image differs", i)
		}
	}
	got, err := ReadSignatures(f, int64(len(signed)), m)
	if err != nil || len(got) != 2 || !bytes.Equal(got[0], sigs[0]) || !bytes.Equal(got[1], sigs[1]) {
		t.Fatalf("ReadSignatures = %q, %v, want %q", got, err, sigs)
	}

	// Replace with a shorter trailer: no byte of the old one may remain.
	if err := WriteSignatures(f, m, sigs[:1]); err != nil {
		t.Fatal(err)
	}
	st, _ := f.Stat()
	if got, err := ReadSignatures(f, st.Size(), m); err != nil || len(got) != 1 {
		t.Errorf("after replacing: ReadSignatures = %q, %v, want 1 signature", got, err)
	}
	// Remove: the file is the unsigned image again, byte for byte.
	if err := WriteSignatures(f, m, nil); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); !bytes.Equal(b, img) {
		t.Error("removing every signature did not give back the unsigned image")
	}
	if got, err := ReadSignatures(f, int64(len(img)), m); err != nil || got != nil {
		t.Errorf("unsigned: ReadSignatures = %q, %v, want nil, nil", got, err)
	}
}

func TestReadSignaturesRefusesJunk(t *testing.T) {
	img, _, m := testImage(t)
	for name, tail := range map[string][]byte{
		"junk":      []byte("some bytes that are no trailer at all, appended by a careless copy"),
		"too long":  make([]byte, MaxTrailerLen+1),
		"one byte":  {0},
		"truncated": nil,
	} {
		b := append(bytes.Clone(img), tail...)
		if name == "truncated" {
			b = img[:len(img)-1]
		}
		_, err := ReadSignatures(bytes.NewReader(b), int64(len(b)), m)
		want := ErrSignatures
		if name == "truncated" {
			want = ErrTruncated
		}
		if !errors.Is(err, want) {
			t.Errorf("ReadSignatures(%s) = %v, want %v", name, err, want)
		}
	}
}

func FuzzParseTrailer(f *testing.F) {
	one, _ := EncodeTrailer([][]byte{[]byte("untrusted comment: x\nRW\ntrusted comment: y\nZZ\n")})
	two, _ := EncodeTrailer([][]byte{[]byte("a"), sigText(MaxSignatureLen, 'b')})
	f.Add(one)
	f.Add(two)
	f.Add(one[len(one)-SigFooterSize:])
	f.Add([]byte(SigMagic))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		checkTrailer(t, b)
		// The fuzzer cannot find a CRC-32C by itself: also try the input
		// with its footer's magic, length and CRC made right.
		if len(b) >= SigFooterSize && len(b) <= MaxTrailerLen {
			c := bytes.Clone(b)
			copy(c[len(c)-SigFooterSize:], SigMagic)
			binary.LittleEndian.PutUint64(c[len(c)-16:], uint64(len(c)))
			checkTrailer(t, refooter(c))
		}
	})
}

// checkTrailer: a parsed trailer encodes back to the same bytes, and a
// refused one is refused with ErrSignatures.
func checkTrailer(t *testing.T, b []byte) {
	sigs, err := ParseTrailer(b)
	if err != nil {
		if !errors.Is(err, ErrSignatures) {
			t.Fatalf("ParseTrailer error %v is not ErrSignatures", err)
		}
		return
	}
	enc, err := EncodeTrailer(sigs)
	if err != nil {
		t.Fatalf("EncodeTrailer of what ParseTrailer accepted: %v", err)
	}
	if !bytes.Equal(enc, b) {
		t.Fatalf("ParseTrailer accepted %x, which encodes back as %x", b, enc)
	}
}
