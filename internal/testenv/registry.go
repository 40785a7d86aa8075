package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// Registry is the configuration of a CNCF distribution registry (Debian's
// docker-registry) for a test: its storage and config in t's temporary
// folders, never the package's own service or /var/lib/docker-registry.
type Registry struct {
	Config string // the config file: docker-registry serve Config
	// Root is the storage folder; a blob's bytes are at BlobPath.
	Root string
}

// RegistryOptions say how the test's registry listens and whom it lets in.
type RegistryOptions struct {
	Addr string // HOST:PORT it listens on
	// User and Password, if set, are the only account (htpasswd auth,
	// bcrypt as the registry wants).
	User, Password string
	// Cert and Key, if set, make it serve HTTPS with them (PEM files).
	Cert, Key string
	// Token, if set, makes it want bearer tokens from that token server
	// instead (User and Password are then the token server's business).
	Token *TokenAuth
}

// TokenAuth is the registry's side of the bearer-token flow: the token
// server's URL (realm), the service and issuer names the tokens carry, and
// the PEM file of the certificates that sign them.
type TokenAuth struct {
	Realm, Service, Issuer, RootCerts string
}

// NewRegistry writes a registry's configuration under t.TempDir(). The
// registry logs at level info: "listening on ADDR" says it is ready.
func NewRegistry(t testing.TB, o RegistryOptions) *Registry {
	t.Helper()
	dir := t.TempDir()
	r := &Registry{Config: filepath.Join(dir, "config.yml"), Root: filepath.Join(dir, "storage")}
	conf := fmt.Sprintf(`version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
http:
  addr: %s
  secret: asr-test-only
`, r.Root, o.Addr)
	if o.Cert != "" {
		conf += fmt.Sprintf("  tls:\n    certificate: %s\n    key: %s\n", o.Cert, o.Key)
	}
	if tk := o.Token; tk != nil {
		conf += fmt.Sprintf("auth:\n  token:\n    realm: %s\n    service: %s\n    issuer: %s\n    rootcertbundle: %s\n", tk.Realm, tk.Service, tk.Issuer, tk.RootCerts)
	} else if o.User != "" {
		hash, err := bcrypt.GenerateFromPassword([]byte(o.Password), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		htpasswd := filepath.Join(dir, "htpasswd")
		if err := os.WriteFile(htpasswd, []byte(o.User+":"+string(hash)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		conf += fmt.Sprintf("auth:\n  htpasswd:\n    realm: asr-test\n    path: %s\n", htpasswd)
	}
	if err := os.WriteFile(r.Config, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return r
}

// BlobPath is where the registry's filesystem storage keeps the bytes of
// the blob with that digest ("sha256:HEX").
func (r *Registry) BlobPath(digest string) string {
	hex := digest[len("sha256:"):]
	return filepath.Join(r.Root, "docker/registry/v2/blobs/sha256", hex[:2], hex, "data")
}
