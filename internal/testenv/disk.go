package testenv

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Disk writes a sample disk of size bytes to a new file in dir: a GPT (made
// by sgdisk) with one partition named "data" holding 256 KiB stretches of
// random bytes, of text, and of zeros, chosen by seed. Its images have stored,
// compressible and zero chunks.
func Disk(t testing.TB, dir string, size int64, seed uint64) string {
	t.Helper()
	p := filepath.Join(dir, fmt.Sprintf("disk-%d.img", seed))
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	Run(t, "sgdisk", "-n1:2048:0", "-t1:8300", "-c1:data", p)
	rng := rand.New(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}))
	buf := make([]byte, 256<<10)
	for off := int64(1 << 20); off+int64(len(buf)) <= size-(1<<20); off += int64(len(buf)) {
		switch rng.IntN(4) {
		case 0:
			for i := range buf {
				buf[i] = byte(rng.Uint32())
			}
		case 1:
			var b bytes.Buffer
			for b.Len() < len(buf) {
				fmt.Fprintf(&b, "line %d of the sample disk, seed %d\n", rng.IntN(1e6), seed)
			}
			copy(buf, b.Bytes())
		default:
			continue
		}
		if _, err := f.WriteAt(buf, off); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// FillRandom writes size pseudo-random bytes to p: a target full of old data,
// so a restore that skips a zero chunk shows.
func FillRandom(t testing.TB, p string, size int64, seed uint64) {
	t.Helper()
	rng := rand.New(rand.NewChaCha8([32]byte{byte(seed), 1}))
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// Hash returns the SHA-256 of n bytes of p from off, in hex.
func Hash(t testing.TB, p string, off, n int64) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatalf("reading %s: %v", p, err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// ZeroHash is the SHA-256 of n zero bytes, in hex.
func ZeroHash(n int) string {
	s := sha256.Sum256(make([]byte, n))
	return hex.EncodeToString(s[:])
}

// Size is the size of a file or block device.
func Size(t testing.TB, p string) int64 {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n, err := f.Seek(0, 2)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Run runs a command and fails the test with its output if it fails.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// Loop attaches file to a loop device for the test's lifetime.
func Loop(t testing.TB, file string, extra ...string) string {
	t.Helper()
	dev := Run(t, "losetup", append(append([]string{"--show", "-f"}, extra...), file)...)
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	return dev
}

// Changed writes a new version of the sample disk v1 beside it, for delta
// restores: its first chunk changed past the GPT's entries (the table stays
// valid), pct percent of its other non-zero chunks of cs bytes (at least
// one) with 4 KiB of new random bytes each, and one more non-zero chunk
// turned to zeros. It returns the new file's path.
func Changed(t testing.TB, v1 string, cs int, pct int, seed uint64) string {
	t.Helper()
	b, err := os.ReadFile(v1)
	if err != nil {
		t.Fatal(err)
	}
	var used []int
	for i := 1; i < len(b)/cs; i++ {
		if !isZero(b[i*cs : (i+1)*cs]) {
			used = append(used, i)
		}
	}
	rng := rand.New(rand.NewPCG(seed, 2))
	rng.Shuffle(len(used), func(a, b int) { used[a], used[b] = used[b], used[a] })
	n := max(1, len(used)*pct/100)
	if len(used) < n+1 || cs < 600001 {
		t.Fatalf("%s has %d non-zero chunks of %d bytes: too few to change %d", v1, len(used), cs, n+1)
	}
	b[600000] ^= 0xff // chunk 0, far past the GPT's entries
	for _, i := range used[:n] {
		off := i*cs + rng.IntN(cs-4096)
		for k := range 4096 {
			b[off+k] = byte(rng.Uint32())
		}
	}
	z := used[n]
	clear(b[z*cs : (z+1)*cs])
	v2 := strings.TrimSuffix(v1, ".img") + fmt.Sprintf("-changed-%d.img", seed)
	if err := os.WriteFile(v2, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return v2
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
