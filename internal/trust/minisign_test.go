package trust

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/asrlinux/asr/internal/testenv"
)

// minisignKeys makes a key pair with the real minisign CLI: without a
// password (-W) when password is empty, else with it (minisign reads it
// twice from stdin when that is not a terminal).
func minisignKeys(t *testing.T, dir, name, password string) (pub, sec string) {
	t.Helper()
	pub, sec = filepath.Join(dir, name+".pub"), filepath.Join(dir, name+".key")
	args := []string{"-G", "-p", pub, "-s", sec}
	if password == "" {
		args = append(args, "-W")
	}
	cmd := exec.Command("minisign", args...)
	cmd.Stdin = strings.NewReader(password + "\n" + password + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("minisign -G: %v\n%s", err, out)
	}
	return pub, sec
}

// TestMinisignInterop: keys made by minisign -G (with and without a
// password) sign with asr; minisign -V checks asr's signature on a file
// holding the image's first 64 bytes, as FORMAT.md says; and a signature
// minisign -S makes over those bytes is one asr trusts.
func TestMinisignInterop(t *testing.T) {
	testenv.Require(t, "minisign")
	dir := t.TempDir()
	h, d := header("an image")
	hdr := writeFile(t, filepath.Join(dir, "image.header"), h)

	for _, tc := range []struct{ name, password string }{{"plain", ""}, {"encrypted", "correct horse"}} {
		t.Run(tc.name, func(t *testing.T) {
			pubPath, secPath := minisignKeys(t, dir, tc.name, tc.password)
			key, err := LoadFile(pubPath)
			if err != nil {
				t.Fatal(err)
			}
			// asr prints key IDs as minisign does.
			pubText, _ := os.ReadFile(pubPath)
			if !strings.Contains(string(pubText), "minisign public key "+FormatID(key.ID)) {
				t.Errorf("minisign's public key file %q does not name key ID %s", pubText, FormatID(key.ID))
			}
			// A wrong password is tested in cmd/asr (TestE2ESignMinisignInterop):
			// each try costs minisign's 1 GiB, seconds-long key derivation.
			priv, err := LoadSecretKey(secPath, Password{Env: tc.password})
			if err != nil {
				t.Fatal(err)
			}
			sig := Sign(priv, h, d, time.Unix(1700000000, 0))
			sigPath := writeFile(t, filepath.Join(dir, tc.name+".minisig"), sig)
			out, err := exec.Command("minisign", "-V", "-p", pubPath, "-m", hdr, "-x", sigPath).CombinedOutput()
			if err != nil {
				t.Fatalf("minisign -V refused asr's signature: %v\n%s", err, out)
			}
			if !strings.Contains(string(out), "asr image digest "+d.String()) {
				t.Errorf("minisign -V output %q does not show the trusted comment with the digest", out)
			}
			// minisign -V refuses the signature on a changed header.
			other, od := header("another image")
			bad := writeFile(t, filepath.Join(dir, tc.name+".other"), other)
			if out, err := exec.Command("minisign", "-V", "-p", pubPath, "-m", bad, "-x", sigPath).CombinedOutput(); err == nil {
				t.Errorf("minisign -V accepted the signature on another image's header (%s): %s", od, out)
			}
			if tc.password != "" {
				return // the other way round needs no second slow unlock
			}
			// The other way round: minisign signs the header, asr trusts it.
			msSig := filepath.Join(dir, tc.name+"-ms.minisig")
			cmd := exec.Command("minisign", "-S", "-W", "-s", secPath, "-m", hdr, "-x", msSig)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("minisign -S: %v\n%s", err, out)
			}
			ms, err := os.ReadFile(msSig)
			if err != nil {
				t.Fatal(err)
			}
			if signer, err := Check([]Key{key}, h, [][]byte{ms}); err != nil || signer.KeyID != key.ID {
				t.Errorf("Check(minisign's own signature) = %v, %v, want trusted", signer, err)
			}
		})
	}
}
