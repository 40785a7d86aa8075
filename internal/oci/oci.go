// Package oci keeps prepared images in OCI registries (the CNCF
// distribution registry, Harbor, Zot, GitLab's...): Push uploads an image
// as an OCI artifact of asr's own media types, and Resolve finds the blob
// that holds an image from a reference, with a client that authenticates
// to the registry.
//
// It speaks the registry protocol through oras-go (manifests, uploads,
// the Docker config file's credentials, basic and bearer-token auth). It
// does not read the image: a restore reads the blob with range requests
// through internal/source's HTTP transport, handed the blob's URL and the
// authenticating client, exactly as from a web server.
package oci

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"

	"github.com/asrlinux/asr/internal/source"
)

// The media types of an asr image in a registry (FORMAT.md describes
// them): an OCI 1.1 image manifest whose artifactType is ArtifactType,
// whose config is the empty descriptor, and whose one layer, of
// LayerMediaType, is the .asr file whole, signature trailer included.
const (
	ArtifactType   = "application/vnd.asr.image.v1"
	LayerMediaType = "application/vnd.asr.image.layer.v1"
)

// MaxManifestBytes is the most a manifest may weigh: an asr artifact's is
// under 1 KiB, and a registry's answer is untrusted.
const MaxManifestBytes = 4 << 20

// Scheme is what references start with on asr's command line.
const Scheme = "oci://"

// Options say how to reach a registry.
type Options struct {
	// CACert is a PEM file of extra trusted CAs, added to the system's.
	CACert string
	// DockerConfig is the Docker config file holding the registry's
	// credentials; "" means Docker's own choice: $DOCKER_CONFIG/config.json,
	// else ~/.docker/config.json. A missing file means no credentials.
	DockerConfig string
	// Timeout bounds each exchange of metadata (manifests, tags, upload
	// sessions) and how long an upload may make no progress; default 30 s.
	Timeout time.Duration
	// Progress, if set, hears how many bytes of the image Push has sent,
	// at most every ProgressEvery.
	Progress func(sent, total int64)
}

// ProgressEvery is how often Push reports its progress.
const ProgressEvery = 10 * time.Second

// ErrNotFound is a reference that names no manifest in its repository.
var ErrNotFound = errors.New("not found")

// ErrNotASR is an artifact that is not an asr image.
var ErrNotASR = errors.New("not an asr image")

// ErrAuth is a registry that refused our credentials, or wants some.
var ErrAuth = errors.New("authentication failed")

// ParseReference reads s, with or without the oci:// prefix: HOST[:PORT]/
// REPO:TAG or HOST[:PORT]/REPO@ALGO:DIGEST (a tag before the digest is
// ignored, as Docker does). A reference must say which image: there is no
// default tag, a machine must not restore "latest" by accident.
func ParseReference(s string) (registry.Reference, error) {
	s = trimScheme(s)
	ref, err := registry.ParseReference(s)
	if err != nil {
		var zero registry.Reference
		return zero, fmt.Errorf("not a valid OCI reference: give %sHOST[:PORT]/REPOSITORY:TAG or @sha256:DIGEST", Scheme)
	}
	if ref.Reference == "" {
		return ref, fmt.Errorf("no tag or digest: give %s%s/%s:TAG or @sha256:DIGEST", Scheme, ref.Registry, ref.Repository)
	}
	return ref, nil
}

func trimScheme(s string) string {
	if len(s) >= len(Scheme) && strings.EqualFold(s[:len(Scheme)], Scheme) {
		return s[len(Scheme):]
	}
	return s
}

// plainHTTP says whether a registry is spoken to over plain HTTP: only on
// this machine (localhost, 127.0.0.0/8, ::1), as Docker does; every other
// registry over HTTPS.
func plainHTTP(host string) bool {
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(h, "[]"))
	return ip != nil && ip.IsLoopback()
}

// client is a registry session for one repository: oras-go's repository
// over an authenticating client that sends through asr's own HTTP client.
type client struct {
	ref      registry.Reference
	repo     *remote.Repository
	auth     *auth.Client
	timeout  time.Duration
	progress func(sent, total int64)
}

func newClient(ref registry.Reference, o Options) (*client, error) {
	hc, err := source.NewHTTPClient(o.CACert)
	if err != nil {
		return nil, err
	}
	store, err := credentialStore(o.DockerConfig)
	if err != nil {
		return nil, err
	}
	ac := &auth.Client{
		Client:     hc,
		Header:     http.Header{"User-Agent": {"asr"}},
		Cache:      auth.NewCache(),
		Credential: credentials.Credential(store),
	}
	repo := &remote.Repository{
		Client:           ac,
		Reference:        ref,
		PlainHTTP:        plainHTTP(ref.Registry),
		MaxMetadataBytes: MaxManifestBytes,
	}
	c := &client{ref: ref, repo: repo, auth: ac, timeout: o.Timeout, progress: o.Progress}
	if c.timeout <= 0 {
		c.timeout = 30 * time.Second
	}
	return c, nil
}

// credentialStore reads the Docker config file: path, or Docker's default.
// Credential helpers it names (credsStore, credHelpers) are run as Docker
// runs them.
func credentialStore(path string) (credentials.Store, error) {
	opts := credentials.StoreOptions{AllowPlaintextPut: false}
	var (
		s   credentials.Store
		err error
	)
	switch {
	case path != "":
		s, err = credentials.NewStore(path, opts)
	case os.Getenv("DOCKER_CONFIG") == "" && !hasHome():
		// The appliance has no home, and so no Docker config file: no
		// credentials, which public and anonymous registries need not.
		return credentials.NewMemoryStore(), nil
	default:
		s, err = credentials.NewStoreFromDocker(opts)
	}
	if err != nil {
		return nil, fmt.Errorf("the Docker config file: %w", err)
	}
	return s, nil
}

func hasHome() bool {
	_, err := os.UserHomeDir()
	return err == nil
}

// blobURL is where the registry serves a blob: the distribution spec's
// GET /v2/<name>/blobs/<digest>, which takes range requests.
func (c *client) blobURL(digest string) string {
	scheme := "https"
	if c.repo.PlainHTTP {
		scheme = "http"
	}
	return fmt.Sprintf("%s://%s/v2/%s/blobs/%s", scheme, c.ref.Host(), c.ref.Repository, digest)
}

// Do sends a request for the repository's blobs with the registry's
// authentication: the pull scope is what a token is asked for.
func (c *client) Do(req *http.Request) (*http.Response, error) {
	ctx := auth.AppendRepositoryScope(req.Context(), c.ref, auth.ActionPull)
	return c.auth.Do(req.WithContext(ctx))
}
