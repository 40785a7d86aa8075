package oci

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/errcode"

	"github.com/asrlinux/asr/internal/safetext"
)

// Blob is an asr image in a registry: where its bytes are and how to ask
// for them.
type Blob struct {
	// URL is the blob's address on the registry; it holds no secret.
	URL string
	// Size and Digest are the layer descriptor's: the .asr file's length
	// and SHA-256.
	Size   int64
	Digest string
	// Manifest is the digest of the manifest the reference resolved to.
	Manifest string
	// Client sends requests for URL with the registry's authentication.
	Client interface {
		Do(*http.Request) (*http.Response, error)
	}
}

// Resolve finds the asr image that ref (with or without oci://) names:
// it fetches the manifest (at most MaxManifestBytes, checked against its
// digest), checks that it is an asr artifact, and returns its layer. It
// reads no byte of the image.
func Resolve(ctx context.Context, ref string, o Options) (*Blob, error) {
	r, err := ParseReference(ref)
	if err != nil {
		return nil, err
	}
	c, err := newClient(r, o)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	desc, rc, err := c.repo.FetchReference(ctx, r.Reference)
	if err != nil {
		return nil, c.explain(ctx, err, "tag")
	}
	defer rc.Close()
	if desc.Size > MaxManifestBytes {
		return nil, fmt.Errorf("%s%s: %w", Scheme, r, notASR("the registry says the manifest is %d bytes; an asr image's is under 1 KiB and asr reads at most %d", desc.Size, MaxManifestBytes))
	}
	if d, err := r.Digest(); err == nil && desc.Digest != d {
		return nil, fmt.Errorf("%s%s: the registry sent manifest %s instead: it does not serve what was asked for", Scheme, r, desc.Digest)
	}
	b, err := content.ReadAll(io.LimitReader(rc, MaxManifestBytes), desc)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s%s: reading the manifest: no answer within %s", Scheme, r, c.timeout)
		}
		return nil, fmt.Errorf("%s%s: reading the manifest: %w", Scheme, r, err)
	}
	layer, err := asrLayer(desc.MediaType, b)
	if err != nil {
		return nil, fmt.Errorf("%s%s: %w", Scheme, r, err)
	}
	return &Blob{URL: c.blobURL(layer.Digest.String()), Size: layer.Size, Digest: layer.Digest.String(), Manifest: desc.Digest.String(), Client: c}, nil
}

// asrLayer checks that a manifest is an asr artifact and returns its layer.
func asrLayer(mediaType string, b []byte) (ocispec.Descriptor, error) {
	var none ocispec.Descriptor
	switch mediaType {
	case ocispec.MediaTypeImageManifest:
	case ocispec.MediaTypeImageIndex, "application/vnd.docker.distribution.manifest.list.v2+json":
		return none, notASR("it is an image index (a multi-platform container image?)")
	default:
		return none, notASR("its manifest is of type %s, not an OCI image manifest (a container image?)", safetext.Short(mediaType, 80))
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return none, notASR("its manifest is not valid JSON (%v)", err)
	}
	// OCI 1.1: the artifact type, or, from tools that predate it, the
	// config's media type.
	at := m.ArtifactType
	if at == "" {
		at = m.Config.MediaType
	}
	if at != ArtifactType {
		return none, notASR("its artifact type is %q, not %s (a container image or another tool's artifact?)", safetext.Short(at, 80), ArtifactType)
	}
	if len(m.Layers) != 1 {
		return none, notASR("it holds %d layers; an asr image holds one", len(m.Layers))
	}
	if mt := m.Layers[0].MediaType; mt != LayerMediaType {
		return none, notASR("its layer is of type %q, not %s", safetext.Short(mt, 80), LayerMediaType)
	}
	l := m.Layers[0]
	if err := l.Digest.Validate(); err != nil || l.Digest.Algorithm() != digest.SHA256 {
		return none, notASR("its layer's digest %q is not a sha256 digest", safetext.Short(string(l.Digest), 80))
	}
	if l.Size <= 0 {
		return none, notASR("its layer's size is %d", l.Size)
	}
	return l, nil
}

// notASR is ErrNotASR, then why.
func notASR(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrNotASR}, a...)...)
}

// explain turns a registry's refusal into what a person can act on.
func (c *client) explain(ctx context.Context, err error, what string) error {
	var er *errcode.ErrorResponse
	switch {
	case errors.Is(err, errdef.ErrNotFound):
		return fmt.Errorf("%s%s: %w in the registry (check the repository and the %s)", Scheme, c.ref, ErrNotFound, what)
	case errors.As(err, &er) && er.StatusCode == http.StatusNotFound:
		return fmt.Errorf("%s%s: %w in the registry (check the repository and the %s)", Scheme, c.ref, ErrNotFound, what)
	case errors.Is(err, auth.ErrBasicCredentialNotFound), errors.As(err, &er) && er.StatusCode == http.StatusUnauthorized:
		return fmt.Errorf("%s%s: %w: %s", Scheme, c.ref, ErrAuth, c.credentialHint(ctx))
	case errors.As(err, &er) && er.StatusCode == http.StatusForbidden:
		return fmt.Errorf("%s%s: %w: the registry denies access to %s with these credentials", Scheme, c.ref, ErrAuth, c.ref.Repository)
	case errors.As(err, &er):
		return fmt.Errorf("%s%s: the registry answered %d (%s)", Scheme, c.ref, er.StatusCode, safetext.Short(er.Errors.Error(), 200))
	case ctx.Err() != nil:
		return fmt.Errorf("%s%s: the registry did not answer within %s", Scheme, c.ref, c.timeout)
	}
	return fmt.Errorf("%s%s: %w", Scheme, c.ref, err)
}

// credentialHint says whether the Docker config file held credentials for
// the registry, which is the difference between "log in" and "wrong
// password".
func (c *client) credentialHint(ctx context.Context) string {
	cred, err := c.auth.Credential(ctx, c.ref.Registry)
	switch {
	case err != nil:
		return "reading the credentials failed: " + err.Error()
	case cred.Username == "" && cred.Password == "" && cred.RefreshToken == "" && cred.AccessToken == "":
		return "the Docker config file holds no credentials for " + c.ref.Registry + " (docker login " + c.ref.Registry + ", or set DOCKER_CONFIG)"
	}
	return "the registry refused the credentials the Docker config file holds for " + c.ref.Registry
}
