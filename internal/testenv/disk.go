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
