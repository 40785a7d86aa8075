package main

// End-to-end tests of oci:// sources and asr push against Debian's
// docker-registry (the CNCF distribution registry), started by each test
// with its own configuration and storage, listening on 127.0.0.1 only.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/asrlinux/asr/internal/testenv"
)

// startRegistry runs a registry on a free port of 127.0.0.1 until t ends,
// and returns it with its address.
func startRegistry(t *testing.T, o testenv.RegistryOptions) (*testenv.Registry, string) {
	t.Helper()
	testenv.Require(t, "docker-registry", "losetup")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o.Addr = ln.Addr().String()
	ln.Close()
	reg := testenv.NewRegistry(t, o)
	var logb bytes.Buffer
	cmd := exec.Command("docker-registry", "serve", reg.Config)
	cmd.Stdout, cmd.Stderr = &logb, &logb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for range 100 {
		if resp, err := http.Get("http://" + o.Addr + "/v2/"); err == nil {
			resp.Body.Close()
			return reg, o.Addr
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("docker-registry does not answer on %s:\n%s", o.Addr, logb.String())
	return nil, ""
}

var manifestDigest = regexp.MustCompile(`manifest (sha256:[0-9a-f]{64}), blob (sha256:[0-9a-f]{64})`)

// push runs asr push and returns the manifest's and the blob's digests.
func push(t *testing.T, img, ref string) (manifest, blob string, out string) {
	t.Helper()
	r := mustAsr(t, "push", "--source", img, ref)
	m := manifestDigest.FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("asr push %s: no digests in its output:\n%s", ref, r.stdout)
	}
	return m[1], m[2], r.stdout
}

// blankTarget makes a loop device over a file of random bytes and returns
// it with the sha256 of its contents.
func blankTarget(t *testing.T, dir string, seed uint64) (dev, sum string) {
	t.Helper()
	tfile := filepath.Join(dir, fmt.Sprintf("target%d.img", seed))
	fillRandom(t, tfile, diskSize, seed)
	dev = loop(t, tfile)
	return dev, hashRange(t, dev, 0, diskSize)
}

func TestE2EOCIPushInfoRestore(t *testing.T) {
	requireRoot(t)
	_, addr := startRegistry(t, testenv.RegistryOptions{})
	dir := t.TempDir()
	disk := makeDisk(t, dir, diskSize, 81)
	img := scan(t, disk)
	ref := "oci://" + addr + "/lab/disk:v1"

	manifest, blob, out := push(t, img, ref)
	if want := "sha256:" + hashRange(t, img, 0, fileSize(t, img)); blob != want {
		t.Errorf("asr push: blob %s, want the file's SHA-256 %s", blob, want)
	}
	if !strings.Contains(out, "Restore it with --source oci://"+addr+"/lab/disk@"+manifest) {
		t.Errorf("asr push does not say how to restore this upload by digest:\n%s", out)
	}
	// Pushing the same file again uploads nothing and gives the same
	// manifest: the digest printed the first time still names it.
	again, _, out2 := push(t, img, ref)
	if again != manifest || !strings.Contains(out2, "the registry held it already") {
		t.Errorf("second push: manifest %s (first %s), want the same and no upload:\n%s", again, manifest, out2)
	}

	info := mustAsr(t, "info", "--source", ref)
	local := mustAsr(t, "info", "--source", img)
	digestLine := regexp.MustCompile(`(?m)^Digest: .*$`)
	if d := digestLine.FindString(local.stdout); d == "" || !strings.Contains(info.stdout, d) {
		t.Errorf("asr info over oci:// does not show the image's digest %q:\n%s", d, info.stdout)
	}

	want := hashRange(t, disk, 0, diskSize)
	for _, src := range []string{ref, "oci://" + addr + "/lab/disk@" + manifest} {
		dev, _ := blankTarget(t, dir, 82)
		r := mustAsr(t, "restore", "--source", src, "--target", dev, "--erase", "--noprompt")
		if got := hashRange(t, dev, 0, diskSize); got != want {
			t.Errorf("restore from %s: target sha256 %s, want the disk's %s", src, got, want)
		}
		if !strings.Contains(r.stdout, "Verified") {
			t.Errorf("restore from %s: not verified:\n%s", src, r.stdout)
		}
	}
}

// TestE2EOCIRefusals: a reference the registry does not have, or that is
// not an asr image, is refused in one line naming it, before the target
// is touched.
func TestE2EOCIRefusals(t *testing.T) {
	requireRoot(t)
	_, addr := startRegistry(t, testenv.RegistryOptions{})
	dir := t.TempDir()
	img := scan(t, makeDisk(t, dir, diskSize, 83))
	push(t, img, "oci://"+addr+"/lab/disk:v1")
	pushForeign(t, addr, "lab/other:v1")

	for _, c := range []struct{ name, src, want string }{
		{"no such tag", "oci://" + addr + "/lab/disk:v9", "oci://" + addr + "/lab/disk:v9: not found in the registry"},
		{"no such repository", "oci://" + addr + "/lab/nothing:v1", "oci://" + addr + "/lab/nothing:v1: not found in the registry"},
		{"no such digest", "oci://" + addr + "/lab/disk@sha256:" + strings.Repeat("0", 64), "not found in the registry"},
		{"not an asr artifact", "oci://" + addr + "/lab/other:v1", "not an asr image"},
		{"no tag", "oci://" + addr + "/lab/disk", "no tag or digest"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dev, before := blankTarget(t, dir, 84)
			r := asr(t, "restore", "--source", c.src, "--target", dev, "--erase", "--noprompt")
			msg := strings.TrimSpace(r.stderr)
			t.Logf("asr restore --source %s: %s", c.src, msg)
			if r.code == 0 || !strings.Contains(msg, c.want) || strings.Count(msg, "\n") > 1 {
				t.Errorf("restore from %s: exit %d, stderr %q; want a failure saying %q", c.src, r.code, msg, c.want)
			}
			if got := hashRange(t, dev, 0, diskSize); got != before {
				t.Errorf("refused restore from %s changed the target", c.src)
			}
		})
	}
}

// TestE2EOCIPushRefusals: asr push sends nothing from a file that is not a
// prepared image, and wants a tag to push to.
func TestE2EOCIPushRefusals(t *testing.T) {
	requireRoot(t)
	_, addr := startRegistry(t, testenv.RegistryOptions{})
	dir := t.TempDir()
	disk := makeDisk(t, dir, diskSize, 94)
	img := scan(t, disk)
	for _, c := range []struct {
		name string
		args []string
		want string
		code int
	}{
		{"raw disk", []string{"--source", disk, "oci://" + addr + "/lab/raw:v1"}, "asr pushes prepared images", 1},
		{"digest", []string{"--source", img, "oci://" + addr + "/lab/disk@sha256:" + strings.Repeat("0", 64)}, "push needs a tag", 2},
		{"not oci", []string{"--source", img, "http://" + addr + "/lab/disk:v1"}, "give oci://HOST/REPOSITORY:TAG", 2},
		{"no destination", []string{"--source", img}, "give the destination", 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := asr(t, append([]string{"push"}, c.args...)...)
			if r.code != c.code || !strings.Contains(r.stderr, c.want) {
				t.Errorf("asr push %v: exit %d, stderr %q; want exit %d saying %q", c.args, r.code, r.stderr, c.code, c.want)
			}
		})
	}
	resp, err := http.Get("http://" + addr + "/v2/_catalog")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var cat struct{ Repositories []string }
	if err := json.NewDecoder(resp.Body).Decode(&cat); err != nil || len(cat.Repositories) != 0 {
		t.Errorf("after refused pushes the registry holds %v (%v), want nothing", cat.Repositories, err)
	}
}

// pushForeign puts another tool's artifact at ref: an OCI 1.1 artifact of
// another type, as oras push would.
func pushForeign(t *testing.T, addr, ref string) {
	t.Helper()
	repo, err := remote.NewRepository(addr + "/" + ref)
	if err != nil {
		t.Fatal(err)
	}
	repo.PlainHTTP = true
	ctx := context.Background()
	data := []byte("not a disk")
	layer := ocispec.Descriptor{MediaType: "application/vnd.example.thing", Digest: digest.FromBytes(data), Size: int64(len(data))}
	if err := repo.Push(ctx, layer, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	desc, err := oras.PackManifest(ctx, repo, oras.PackManifestVersion1_1, "application/vnd.example.artifact", oras.PackManifestOptions{Layers: []ocispec.Descriptor{layer}})
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Tag(ctx, desc, repo.Reference.Reference); err != nil {
		t.Fatal(err)
	}
}

// TestE2EOCICorruptBlob: a bit flipped in the blob in the registry's
// storage fails the restore on that chunk's digest, leaves the target's
// first chunk blank, and exits 1.
func TestE2EOCICorruptBlob(t *testing.T) {
	requireRoot(t)
	reg, addr := startRegistry(t, testenv.RegistryOptions{})
	dir := t.TempDir()
	img := scan(t, makeDisk(t, dir, diskSize, 85))
	ref := "oci://" + addr + "/lab/disk:v1"
	_, blob, _ := push(t, img, ref)
	bad := corruptChunk(t, reg.BlobPath(blob))

	dev, _ := blankTarget(t, dir, 86)
	r := asr(t, "restore", "--source", ref, "--target", dev, "--erase", "--noprompt")
	if r.code != 1 {
		t.Fatalf("restore of a corrupted blob: exit %d, want 1\n%s%s", r.code, r.stdout, r.stderr)
	}
	if msg := r.err.Error(); !strings.Contains(msg, fmt.Sprintf("chunk %d", bad)) || !strings.Contains(msg, "fails its BLAKE3-256 check") {
		t.Errorf("error %q does not name chunk %d and its failed BLAKE3-256 check", msg, bad)
	}
	got := make([]byte, 1<<20)
	f, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.ReadAt(got, 0)
	if !bytes.Equal(got, make([]byte, 1<<20)) {
		t.Errorf("after a failed restore the first chunk of %s is not blank", dev)
	}
}

// TestE2EOCIAuth: a registry with htpasswd auth takes the credentials of
// the Docker config file that DOCKER_CONFIG names, and the refusals say
// whether credentials were missing or wrong.
func TestE2EOCIAuth(t *testing.T) {
	requireRoot(t)
	_, addr := startRegistry(t, testenv.RegistryOptions{User: "lab", Password: "s3cret-pw"})
	dir := t.TempDir()
	disk := makeDisk(t, dir, diskSize, 87)
	img := scan(t, disk)
	ref := "oci://" + addr + "/lab/disk:v1"

	dockerConfig := func(user, pw string) string {
		d := t.TempDir()
		auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + pw))
		conf := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, addr, auth)
		if err := os.WriteFile(filepath.Join(d, "config.json"), []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		return d
	}

	t.Setenv("DOCKER_CONFIG", t.TempDir()) // no config.json: no credentials
	r := asr(t, "push", "--source", img, ref)
	if r.code != 1 || !strings.Contains(r.stderr, "authentication failed") || !strings.Contains(r.stderr, "holds no credentials for "+addr) {
		t.Errorf("push without credentials: exit %d, want 1 and a message saying none were found:\n%s", r.code, r.stderr)
	}

	t.Setenv("DOCKER_CONFIG", dockerConfig("lab", "wrong"))
	r = asr(t, "push", "--source", img, ref)
	if r.code != 1 || !strings.Contains(r.stderr, "refused the credentials") {
		t.Errorf("push with a wrong password: exit %d, want 1 and a message saying the registry refused them:\n%s", r.code, r.stderr)
	}

	t.Setenv("DOCKER_CONFIG", dockerConfig("lab", "s3cret-pw"))
	push(t, img, ref)
	dev, _ := blankTarget(t, dir, 88)
	mustAsr(t, "restore", "--source", ref, "--target", dev, "--erase", "--noprompt")
	if got, want := hashRange(t, dev, 0, diskSize), hashRange(t, disk, 0, diskSize); got != want {
		t.Errorf("restore with credentials: target sha256 %s, want %s", got, want)
	}

	t.Setenv("DOCKER_CONFIG", dockerConfig("lab", "wrong"))
	dev, before := blankTarget(t, dir, 89)
	r = asr(t, "restore", "--source", ref, "--target", dev, "--erase", "--noprompt")
	if r.code != 1 || !strings.Contains(r.stderr, "authentication failed") || strings.Contains(r.stdout+r.stderr, "wrong") {
		t.Errorf("restore with a wrong password: exit %d, want 1 and an authentication failure without the password:\n%s", r.code, r.stderr)
	}
	if hashRange(t, dev, 0, diskSize) != before {
		t.Errorf("a restore refused for its credentials changed the target")
	}
}

// TestE2EOCISigned: the signatures travel with the image into the
// registry, and --trusted-key applies to an oci:// source as to any other.
func TestE2EOCISigned(t *testing.T) {
	requireRoot(t)
	testenv.Require(t, "minisign")
	_, addr := startRegistry(t, testenv.RegistryOptions{})
	dir := t.TempDir()
	disk := makeDisk(t, dir, diskSize, 90)
	img := scan(t, disk)
	pub, sec := signKeys(t, dir, "admin", "")
	other, _ := signKeys(t, dir, "other", "")
	mustAsr(t, "sign", "--source", img, "--key", sec)
	ref := "oci://" + addr + "/lab/signed:v1"
	_, _, out := push(t, img, ref)
	if !strings.Contains(out, "signed by key ID "+keyID(t, pub)) {
		t.Errorf("asr push does not say who signed the image:\n%s", out)
	}

	dev, before := blankTarget(t, dir, 91)
	r := asr(t, "restore", "--source", ref, "--target", dev, "--erase", "--noprompt", "--trusted-key", other)
	if r.code != 1 || !strings.Contains(r.stderr, "image refused, nothing was written") {
		t.Errorf("restore of an image another key signed: exit %d, want 1 and a refusal:\n%s", r.code, r.stderr)
	}
	if hashRange(t, dev, 0, diskSize) != before {
		t.Errorf("a refused restore changed the target")
	}
	r = mustAsr(t, "restore", "--source", ref, "--target", dev, "--erase", "--noprompt", "--trusted-key", pub)
	if got, want := hashRange(t, dev, 0, diskSize), hashRange(t, disk, 0, diskSize); got != want || !strings.Contains(r.stdout+r.stderr, "Signed by") {
		t.Errorf("restore with the signer's key trusted: target sha256 %s, want %s; output:\n%s%s", got, want, r.stdout, r.stderr)
	}
}
