package main

// End-to-end tests of signed images: keys made by the real minisign CLI,
// images signed by `asr sign`, and restores that must refuse, before
// writing anything, every image no trusted key signed: over a local file,
// HTTP (nginx in a network namespace) and multicast (asr server in a lab of
// namespaces). Namespaces are named with the prefix "sg" and removed at the
// end.

import (
	"bufio"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asrlinux/asr/internal/image"
	"github.com/asrlinux/asr/internal/netlab"
	"github.com/asrlinux/asr/internal/testenv"
	"github.com/asrlinux/asr/internal/trust"
)

// signKeys makes a key pair with minisign -G: without a password when pw is
// empty (-W), else with it (minisign reads it twice from stdin).
func signKeys(t *testing.T, dir, name, pw string) (pub, sec string) {
	t.Helper()
	pub, sec = filepath.Join(dir, name+".pub"), filepath.Join(dir, name+".key")
	args := []string{"-G", "-p", pub, "-s", sec}
	if pw == "" {
		args = append(args, "-W")
	}
	cmd := exec.Command("minisign", args...)
	cmd.Stdin = strings.NewReader(pw + "\n" + pw + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("minisign -G: %v\n%s", err, out)
	}
	return pub, sec
}

func keyID(t *testing.T, pub string) string {
	t.Helper()
	k, err := trust.LoadFile(pub)
	if err != nil {
		t.Fatal(err)
	}
	return trust.FormatID(k.ID)
}

// moveTrailer gives dst the signatures of src (or none), as someone who
// copies the trailer bytes from one image file to another would.
func moveTrailer(t *testing.T, src, dst string) {
	t.Helper()
	read := func(p string, flag int) (*os.File, *image.Image, int64) {
		f, err := os.OpenFile(p, flag, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		st, _ := f.Stat()
		im, err := image.Open(f, st.Size())
		if err != nil {
			t.Fatal(err)
		}
		return f, im, st.Size()
	}
	sf, sim, ssize := read(src, os.O_RDONLY)
	sigs, err := image.ReadSignatures(sf, ssize, sim.Manifest)
	if err != nil {
		t.Fatal(err)
	}
	df, dim, _ := read(dst, os.O_RDWR)
	if err := image.WriteSignatures(df, dim.Manifest, sigs); err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, src, dst string) string {
	t.Helper()
	sh(t, "cp", "--sparse=always", src, dst)
	return dst
}

// signedSet is a sample disk and the images the refusal tests restore:
//
//	signed    signed by the trusted key (and restored)
//	unsigned  the same image without signatures
//	foreign   the same image signed only by another key
//	tampered  the disk with one byte of one chunk changed, scanned again
//	          (new chunk digest, manifest and image digest), carrying the
//	          signed image's signature
//	swapped   the unsigned image carrying the signature of another image
//	          (another disk, signed by the trusted key)
type signedSet struct {
	dir, disk, trusted, trustedID, otherID string
	img                                    map[string]string
}

func newSignedSet(t *testing.T, dir string) *signedSet {
	t.Helper()
	testenv.Require(t, "minisign", "sgdisk")
	s := &signedSet{dir: dir, img: map[string]string{}}
	var sec, osec string
	s.trusted, sec = signKeys(t, t.TempDir(), "trusted", "")
	other, osec := signKeys(t, t.TempDir(), "other", "")
	s.trustedID, s.otherID = keyID(t, s.trusted), keyID(t, other)

	s.disk = makeDisk(t, t.TempDir(), diskSize, 71)
	unsigned := filepath.Join(dir, "unsigned.asr")
	mustAsr(t, "imagescan", "--source", s.disk, "--output", unsigned)
	s.img["unsigned"] = unsigned
	s.img["signed"] = copyFile(t, unsigned, filepath.Join(dir, "signed.asr"))
	r := mustAsr(t, "sign", "--source", s.img["signed"], "--key", sec)
	if !strings.Contains(r.stdout, "with key ID "+s.trustedID) {
		t.Fatalf("asr sign does not name the key:\n%s", r.stdout)
	}
	s.img["foreign"] = copyFile(t, unsigned, filepath.Join(dir, "foreign.asr"))
	mustAsr(t, "sign", "--source", s.img["foreign"], "--key", osec)

	changed := copyFile(t, s.disk, filepath.Join(t.TempDir(), "changed.img"))
	f, err := os.OpenFile(changed, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	f.ReadAt(b, 3<<20+12345)
	b[0] ^= 0xFF
	f.WriteAt(b, 3<<20+12345)
	f.Close()
	s.img["tampered"] = filepath.Join(dir, "tampered.asr")
	mustAsr(t, "imagescan", "--source", changed, "--output", s.img["tampered"])
	moveTrailer(t, s.img["signed"], s.img["tampered"])

	another := makeDisk(t, t.TempDir(), diskSize, 72)
	anotherImg := filepath.Join(t.TempDir(), "another.asr")
	mustAsr(t, "imagescan", "--source", another, "--output", anotherImg, "--sign", sec)
	s.img["swapped"] = copyFile(t, unsigned, filepath.Join(dir, "swapped.asr"))
	moveTrailer(t, anotherImg, s.img["swapped"])
	return s
}

// refusals are the images that must be refused with the trusted key, and
// what the message must say.
func (s *signedSet) refusals() []struct{ name, want string } {
	return []struct{ name, want string }{
		{"unsigned", "the image is not signed"},
		{"foreign", "signed by key ID " + s.otherID + " (key not trusted here)"},
		{"tampered", "key ID " + s.trustedID + " (BAD SIGNATURE: does not match this image)"},
		{"swapped", "key ID " + s.trustedID + " (BAD SIGNATURE: does not match this image)"},
	}
}

// TestE2ESignedLocal: over a local file, the signed image restores and the
// signer is printed; every other image is refused with exit 1, a message
// naming what was found, and the target unchanged. A raw disk (a clone)
// restores with "not signature-checked".
func TestE2ESignedLocal(t *testing.T) {
	requireRoot(t)
	s := newSignedSet(t, t.TempDir())
	want := hashRange(t, s.disk, 0, diskSize)

	out := filepath.Join(t.TempDir(), "target.raw")
	fillRandom(t, out, diskSize, 73)
	r := mustAsr(t, "restore", "--source", s.img["signed"], "--target", out, "--erase", "--noprompt", "--trusted-key", s.trusted)
	if !strings.Contains(r.stdout, "Signed by key ID "+s.trustedID+" (trusted)") || !strings.Contains(r.stdout, "Verified") {
		t.Errorf("signed restore output lacks the signer or the verification:\n%s", r.stdout)
	}
	if h := hashRange(t, out, 0, diskSize); h != want {
		t.Errorf("signed restore: target sha256 %s, want %s", h, want)
	}

	// The trusted keys directory counts as --trusted-key does.
	kd := t.TempDir()
	copyFile(t, s.trusted, filepath.Join(kd, "admin.pub"))
	for i, c := range s.refusals() {
		for _, keys := range [][]string{{"--trusted-key", s.trusted}, {"--trusted-keys-dir", kd}} {
			t.Run(c.name+keys[0], func(t *testing.T) {
				// A loop device for one case, files for the others.
				tgt := filepath.Join(t.TempDir(), "target.raw")
				fillRandom(t, tgt, diskSize, uint64(80+i))
				before := hashRange(t, tgt, 0, diskSize)
				dev := tgt
				if i == 0 {
					dev = loop(t, tgt)
				}
				r := asr(t, append([]string{"restore", "--source", s.img[c.name], "--target", dev, "--erase", "--noprompt"}, keys...)...)
				if r.code != 1 || r.err == nil || !strings.Contains(r.err.Error(), c.want) || !strings.Contains(r.err.Error(), "nothing was written") {
					t.Errorf("restore of the %s image: exit %d, error %v; want 1 saying %q", c.name, r.code, r.err, c.want)
				}
				if strings.Contains(r.stdout, "Erasing") {
					t.Errorf("restore of the %s image began erasing:\n%s", c.name, r.stdout)
				}
				if h := hashRange(t, tgt, 0, diskSize); h != before {
					t.Errorf("refused restore of the %s image changed the target", c.name)
				}
			})
		}
	}

	t.Run("clone not checked", func(t *testing.T) {
		tgt := filepath.Join(t.TempDir(), "target.raw")
		fillRandom(t, tgt, diskSize, 90)
		r := mustAsr(t, "restore", "--source", s.disk, "--target", tgt, "--erase", "--noprompt", "--trusted-key", s.trusted)
		if !strings.Contains(r.stdout, "not signature-checked") {
			t.Errorf("a raw disk source with a trusted key does not say it was not checked:\n%s", r.stdout)
		}
	})

	t.Run("info", func(t *testing.T) {
		r := mustAsr(t, "info", "--source", s.img["tampered"], "--trusted-key", s.trusted)
		if !strings.Contains(r.stdout, "key ID "+s.trustedID+": BAD SIGNATURE") {
			t.Errorf("asr info of the tampered image:\n%s", r.stdout)
		}
		r = mustAsr(t, "info", "--source", s.img["signed"], "--trusted-key", s.trusted)
		if !strings.Contains(r.stdout, "key ID "+s.trustedID+": trusted, valid") {
			t.Errorf("asr info of the signed image:\n%s", r.stdout)
		}
		r = mustAsr(t, "info", "--source", s.img["foreign"])
		if !strings.Contains(r.stdout, "key ID "+s.otherID+": key not trusted here") {
			t.Errorf("asr info of the foreign image:\n%s", r.stdout)
		}
		r = mustAsr(t, "info", "--source", s.img["unsigned"])
		if !strings.Contains(r.stdout, "Signatures:    none") {
			t.Errorf("asr info of the unsigned image:\n%s", r.stdout)
		}
	})
}

// TestE2ESignMinisignInterop: a password-protected key made by minisign -G
// signs with asr sign (password from --password-file, from the
// environment); minisign -V checks asr's signature as FORMAT.md says (with
// asr sign --minisig, and with head -c 64); re-signing with the same key
// replaces its signature, a second key adds one, --remove drops one; and
// none of it changes the image digest or its chunks.
func TestE2ESignMinisignInterop(t *testing.T) {
	testenv.Require(t, "minisign", "sgdisk")
	dir := t.TempDir()
	pub, sec := signKeys(t, dir, "pw", "correct horse")
	pub2, sec2 := signKeys(t, dir, "plain", "")
	id, id2 := keyID(t, pub), keyID(t, pub2)
	disk := makeDisk(t, dir, diskSize, 74)
	img := filepath.Join(dir, "lab.asr")
	mustAsr(t, "imagescan", "--source", disk, "--output", img)
	unsigned, _ := os.ReadFile(img)

	r := asr(t, "sign", "--source", img, "--key", sec)
	if r.code != 1 || !strings.Contains(r.err.Error(), "--password-file") {
		t.Errorf("signing with an encrypted key and no password: exit %d, %v; want 1 and a hint", r.code, r.err)
	}
	bad := filepath.Join(dir, "bad-password")
	os.WriteFile(bad, []byte("wrong\n"), 0o600)
	if r := asr(t, "sign", "--source", img, "--key", sec, "--password-file", bad); r.code != 1 || !strings.Contains(r.err.Error(), "wrong password") {
		t.Errorf("signing with a wrong password: exit %d, %v", r.code, r.err)
	}
	if b, _ := os.ReadFile(img); string(b) != string(unsigned) {
		t.Fatal("failed signing attempts changed the image")
	}
	pwf := filepath.Join(dir, "password")
	os.WriteFile(pwf, []byte("correct horse\n"), 0o600)
	mustAsr(t, "sign", "--source", img, "--key", sec, "--password-file", pwf)
	mustAsr(t, "sign", "--source", img, "--key", sec2)
	// Signing again with the first key, its password from the environment.
	var o, eb strings.Builder
	e := env{stdin: strings.NewReader(""), stdout: &o, stderr: &eb, isTerminal: func() bool { return false },
		getenv: func(k string) string {
			if k == trust.PasswordEnv {
				return "correct horse"
			}
			return ""
		}}
	if err := run(context.Background(), e, []string{"sign", "--source", img, "--key", sec}); err != nil {
		t.Fatalf("asr sign with %s: %v", trust.PasswordEnv, err)
	}
	if !strings.Contains(o.String(), "2 signatures, by key IDs "+id+", "+id2) {
		t.Errorf("re-signing with the same key did not replace its signature: %s", o.String())
	}
	signed, _ := os.ReadFile(img)
	if string(signed[:len(unsigned)]) != string(unsigned) {
		t.Fatal("signing changed the image before its trailer")
	}

	// minisign -V, as FORMAT.md describes it.
	sig := filepath.Join(dir, "lab.header.minisig")
	mustAsr(t, "sign", "--source", img, "--minisig", sig, "--key-id", id)
	out, err := exec.Command("minisign", "-V", "-p", pub, "-m", filepath.Join(dir, "lab.header"), "-x", sig).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Signature and comment signature verified") {
		t.Errorf("minisign -V of asr's signature: %v\n%s", err, out)
	}
	sh(t, "sh", "-c", "head -c 64 "+img+" > "+filepath.Join(dir, "head64"))
	if out, err := exec.Command("minisign", "-V", "-p", pub, "-m", filepath.Join(dir, "head64"), "-x", sig).CombinedOutput(); err != nil {
		t.Errorf("minisign -V on head -c 64 of the image: %v\n%s", err, out)
	}
	// With another key's public key, minisign refuses.
	if out, err := exec.Command("minisign", "-V", "-p", pub2, "-m", filepath.Join(dir, "lab.header"), "-x", sig).CombinedOutput(); err == nil {
		t.Errorf("minisign -V accepted the signature with another key:\n%s", out)
	}
	r = asr(t, "sign", "--source", img, "--minisig", filepath.Join(dir, "x.minisig"))
	if r.code != 2 || !strings.Contains(r.err.Error(), "--key-id") {
		t.Errorf("--minisig with two signatures and no --key-id: exit %d, %v", r.code, r.err)
	}

	// The other way round: minisign -S over the header, added with --add-minisig.
	ms := filepath.Join(dir, "ms.minisig")
	cmd := exec.Command("minisign", "-S", "-W", "-s", sec2, "-m", filepath.Join(dir, "lab.header"), "-x", ms)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("minisign -S: %v\n%s", err, out)
	}
	mustAsr(t, "sign", "--source", img, "--add-minisig", ms)
	r = mustAsr(t, "info", "--source", img, "--trusted-key", pub, "--trusted-key", pub2)
	if strings.Count(r.stdout, "trusted, valid") != 2 {
		t.Errorf("asr info with both keys trusted:\n%s", r.stdout)
	}

	r = mustAsr(t, "sign", "--source", img, "--remove", id2)
	if !strings.Contains(r.stdout, "1 signature, by key ID "+id) {
		t.Errorf("--remove: %s", r.stdout)
	}
	mustAsr(t, "sign", "--source", img, "--remove", id)
	if b, _ := os.ReadFile(img); string(b) != string(unsigned) {
		t.Error("removing every signature did not give back the unsigned image byte for byte")
	}
	if r := asr(t, "sign", "--source", img, "--remove", id); r.code != 1 || !strings.Contains(r.err.Error(), "no signature by key ID "+id) {
		t.Errorf("removing a signature that is not there: exit %d, %v", r.code, r.err)
	}
}

// sgLab is a lab of network namespaces named sg...: h hosts nginx (and asr
// server at 198.18.0.1); c is a client at 198.18.0.11.
func sgLab(t *testing.T, prefix string) (*netlab.Lab, *netlab.Host, *netlab.Host) {
	t.Helper()
	nl, err := netlab.New(prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nl.Close() })
	h, err := nl.AddHost("s", 1)
	if err != nil {
		t.Fatal(err)
	}
	c, err := nl.AddHost("c", 11)
	if err != nil {
		t.Fatal(err)
	}
	return nl, h, c
}

// TestE2ESignedHTTP: the same over HTTP from nginx: the signatures come
// with one range request at the end of the file; a server without Range
// support is refused when a key is trusted (and still works when none is).
func TestE2ESignedHTTP(t *testing.T) {
	testenv.Require(t, "nginx", "ip", "sgdisk", "minisign")
	_, h, _ := sgLab(t, "sgh")
	l := &lab{t: t, host: h, ns: h.NS, dir: t.TempDir(), asr: testenv.Asr(t)}
	s := newSignedSet(t, l.dir)
	_, cert, key := testCA(t)
	l.startNginx(cert, key)
	want := hashRange(t, s.disk, 0, diskSize)
	restore := func(url string, seed uint64, extra ...string) (string, int, string, string) {
		tgt := filepath.Join(t.TempDir(), "target.raw")
		fillRandom(t, tgt, diskSize, seed)
		before := hashRange(t, tgt, 0, diskSize)
		out, code := l.run(append([]string{"restore", "--source", url, "--target", tgt, "--erase", "--noprompt"}, extra...)...)
		return out, code, before, hashRange(t, tgt, 0, diskSize)
	}
	out, code, _, after := restore("http://127.0.0.1:8080/signed.asr", 100, "--trusted-key", s.trusted)
	if code != 0 || after != want || !strings.Contains(out, "Signed by key ID "+s.trustedID+" (trusted)") {
		t.Errorf("signed image over HTTP: exit %d, target right %v:\n%s", code, after == want, out)
	}
	for i, c := range s.refusals() {
		t.Run(c.name, func(t *testing.T) {
			out, code, before, after := restore("http://127.0.0.1:8080/"+c.name+".asr", uint64(101+i), "--trusted-key", s.trusted)
			if code != 1 || !strings.Contains(out, c.want) {
				t.Errorf("%s image over HTTP: exit %d, want 1 saying %q:\n%s", c.name, code, c.want, out)
			}
			if before != after {
				t.Errorf("refused %s image over HTTP changed the target", c.name)
			}
		})
	}
	t.Run("no ranges", func(t *testing.T) {
		out, code, before, after := restore("http://127.0.0.1:8080/norange/signed.asr", 110, "--trusted-key", s.trusted)
		if code != 1 || !strings.Contains(out, "does not answer range requests") || before != after {
			t.Errorf("signed image from a server without Range, key trusted: exit %d, target unchanged %v:\n%s", code, before == after, out)
		}
		// Without trusted keys a signed image still restores from it: old
		// behaviour, and the trailer does not upset the length check.
		out, code, _, after = restore("http://127.0.0.1:8080/norange/signed.asr", 111)
		if code != 0 || after != want {
			t.Errorf("signed image from a server without Range, no key: exit %d:\n%s", code, out)
		}
	})
}

// TestE2ESignedMulticast: asr server hands the signatures to its clients;
// a client that trusts the key restores the signed image and prints the
// signer, and refuses the others before erasing, telling the server why.
func TestE2ESignedMulticast(t *testing.T) {
	testenv.Require(t, "ip", "sgdisk", "minisign")
	_, srvHost, client := sgLab(t, "sgm")
	dir := t.TempDir()
	s := newSignedSet(t, dir)
	bin := testenv.Asr(t)
	cfg := filepath.Join(dir, "asrconfig.plist")
	os.WriteFile(cfg, []byte(`<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0"><dict>
<key>Multicast Address</key><string>239.255.71.1</string>
<key>Data Rate</key><integer>60000000</integer>
<key>DNS Service Discovery</key><false/>
</dict></plist>`), 0o644)
	want := hashRange(t, s.disk, 0, diskSize)

	// serve runs asr server on one image until the returned stop is called;
	// stop returns its log once it holds want (waiting at most 10 s: the
	// server logs a client's last status after the client has exited).
	serve := func(img string) func(want string) string {
		cmd := srvHost.Command(context.Background(), bin, "server", "--source", img, "--config", cfg)
		pr, pw := io.Pipe()
		cmd.Stdout, cmd.Stderr = pw, pw
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var log strings.Builder
		ready := make(chan struct{})
		go func() {
			sc := bufio.NewScanner(pr)
			once := sync.Once{}
			for sc.Scan() {
				mu.Lock()
				log.WriteString(sc.Text() + "\n")
				mu.Unlock()
				if strings.Contains(sc.Text(), "Ready to start accepting clients") {
					once.Do(func() { close(ready) })
				}
			}
		}()
		stop := func(want string) string {
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
				mu.Lock()
				has := strings.Contains(log.String(), want)
				mu.Unlock()
				if has {
					break
				}
			}
			cmd.Process.Kill()
			cmd.Wait()
			pw.Close()
			mu.Lock()
			defer mu.Unlock()
			return log.String()
		}
		select {
		case <-ready:
		case <-time.After(20 * time.Second):
			t.Fatalf("asr server did not get ready:\n%s", stop(""))
		}
		return stop
	}
	restore := func(seed uint64) (string, int, string, string) {
		tgt := filepath.Join(t.TempDir(), "target.raw")
		fillRandom(t, tgt, diskSize, seed)
		before := hashRange(t, tgt, 0, diskSize)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		out, err := client.Command(ctx, bin, "restore", "--source", "asr://198.18.0.1", "--target", tgt,
			"--erase", "--noprompt", "--timeout", "20", "--trusted-key", s.trusted).CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), code, before, hashRange(t, tgt, 0, diskSize)
	}

	stop := serve(s.img["signed"])
	out, code, _, after := restore(120)
	log := stop(" done")
	if code != 0 || after != want || !strings.Contains(out, "Signed by key ID "+s.trustedID+" (trusted)") {
		t.Errorf("signed image by multicast: exit %d, target right %v:\n%s", code, after == want, out)
	}
	if !strings.Contains(log, "Image signed by key ID "+s.trustedID) {
		t.Errorf("the server log does not name the signer:\n%s", log)
	}
	for i, c := range s.refusals() {
		t.Run(c.name, func(t *testing.T) {
			stop := serve(s.img[c.name])
			out, code, before, after := restore(uint64(121 + i))
			log := stop("image refused")
			if code != 1 || !strings.Contains(out, c.want) {
				t.Errorf("%s image by multicast: exit %d, want 1 saying %q:\n%s", c.name, code, c.want, out)
			}
			if before != after {
				t.Errorf("refused %s image by multicast changed the target", c.name)
			}
			if !strings.Contains(log, "image refused") {
				t.Errorf("the server was not told why the client refused the %s image:\n%s", c.name, log)
			}
		})
	}
}
