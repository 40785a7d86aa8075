package main

// The bearer-token flow of a registry (Docker Hub's, GitLab's, Harbor's):
// docker-registry wants tokens from a token server, which this test runs
// on 127.0.0.1; asr exchanges the Docker config file's credentials for a
// token there, as docker does.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asrlinux/asr/internal/testenv"
)

// tokenServer issues registry tokens (JWTs signed ES256, their certificate
// in x5c, as distribution's token auth verifies them) to user:password,
// for whatever scope is asked. It counts the tokens it issued.
type tokenServer struct {
	auth    testenv.TokenAuth
	key     *ecdsa.PrivateKey
	certDER []byte
	issued  atomic.Int32
}

func startTokenServer(t *testing.T, user, password string) *tokenServer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "asr test token signer"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	roots := filepath.Join(t.TempDir(), "token-roots.pem")
	if err := os.WriteFile(roots, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &tokenServer{key: key, certDER: der, auth: testenv.TokenAuth{
		Realm: "http://" + ln.Addr().String() + "/token", Service: "asr-test-registry", Issuer: "asr-test-issuer", RootCerts: roots}}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != user || p != password {
			http.Error(w, `{"details":"wrong credentials"}`, http.StatusUnauthorized)
			return
		}
		tok, err := ts.token(r.URL.Query()["scope"])
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		ts.issued.Add(1)
		json.NewEncoder(w).Encode(map[string]any{"token": tok, "access_token": tok, "expires_in": 300})
	}), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ts
}

// token grants every scope asked ("repository:lab/disk:pull,push").
func (ts *tokenServer) token(scopes []string) (string, error) {
	type access struct {
		Type    string   `json:"type"`
		Name    string   `json:"name"`
		Actions []string `json:"actions"`
	}
	grants := []access{}
	for _, s := range scopes {
		for _, one := range strings.Fields(s) {
			parts := strings.Split(one, ":")
			if len(parts) != 3 {
				continue
			}
			grants = append(grants, access{parts[0], parts[1], strings.Split(parts[2], ",")})
		}
	}
	now := time.Now()
	header := map[string]any{"typ": "JWT", "alg": "ES256", "x5c": []string{base64.StdEncoding.EncodeToString(ts.certDER)}}
	claims := map[string]any{"iss": ts.auth.Issuer, "sub": "lab", "aud": ts.auth.Service,
		"exp": now.Add(5 * time.Minute).Unix(), "nbf": now.Add(-time.Minute).Unix(), "iat": now.Unix(),
		"jti": fmt.Sprint(now.UnixNano()), "access": grants}
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	signed := enc(header) + "." + enc(claims)
	sum := sha256.Sum256([]byte(signed))
	r, s, err := ecdsa.Sign(rand.Reader, ts.key, sum[:])
	if err != nil {
		return "", err
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

func TestE2EOCIBearerToken(t *testing.T) {
	requireRoot(t)
	ts := startTokenServer(t, "lab", "t0ken-pw")
	_, addr := startRegistry(t, testenv.RegistryOptions{Token: &ts.auth})
	dir := t.TempDir()
	disk := makeDisk(t, dir, diskSize, 92)
	img := scan(t, disk)
	ref := "oci://" + addr + "/lab/disk:v1"
	conf := t.TempDir()
	auth := base64.StdEncoding.EncodeToString([]byte("lab:t0ken-pw"))
	if err := os.WriteFile(filepath.Join(conf, "config.json"), fmt.Appendf(nil, `{"auths":{%q:{"auth":%q}}}`, addr, auth), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Setenv("DOCKER_CONFIG", t.TempDir())
	if r := asr(t, "info", "--source", ref); r.code != 1 || !strings.Contains(r.stderr, "authentication failed") {
		t.Errorf("info without credentials from a token registry: exit %d, want 1 and an authentication failure:\n%s", r.code, r.stderr)
	}

	t.Setenv("DOCKER_CONFIG", conf)
	push(t, img, ref)
	dev, _ := blankTarget(t, dir, 93)
	before := ts.issued.Load()
	mustAsr(t, "restore", "--source", ref, "--target", dev, "--erase", "--noprompt")
	if got, want := hashRange(t, dev, 0, diskSize), hashRange(t, disk, 0, diskSize); got != want {
		t.Errorf("restore through bearer tokens: target sha256 %s, want %s", got, want)
	}
	if ts.issued.Load() == before {
		t.Errorf("the restore got no token from the token server: the registry let it in without one?")
	}
}
