package oci

import (
	"errors"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestParseReference(t *testing.T) {
	const d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, tc := range []struct{ in, host, repo, ref, err string }{
		{"oci://127.0.0.1:5000/lab/disk:v1", "127.0.0.1:5000", "lab/disk", "v1", ""},
		{"OCI://registry.example.com/lab/disk:2026-12", "registry.example.com", "lab/disk", "2026-12", ""},
		{"oci://r.example/lab/disk@" + d, "r.example", "lab/disk", d, ""},
		{"oci://r.example/lab/disk:v1@" + d, "r.example", "lab/disk", d, ""}, // the tag is ignored, as Docker does
		{"r.example/disk:v1", "r.example", "disk", "v1", ""},
		{"oci://r.example/lab/disk", "", "", "", "no tag or digest"},
		{"oci://r.example/Lab/disk:v1", "", "", "", "not a valid OCI reference"},
		{"oci://u:pw@r.example/lab/disk:v1", "", "", "", "not a valid OCI reference"},
		{"oci://r.example/lab/disk@sha256:short", "", "", "", "not a valid OCI reference"},
		{"oci://", "", "", "", "not a valid OCI reference"},
	} {
		r, err := ParseReference(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseReference(%q) = %v, want an error saying %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || r.Registry != tc.host || r.Repository != tc.repo || r.Reference != tc.ref {
			t.Errorf("ParseReference(%q) = %+v, %v; want %s %s %s", tc.in, r, err, tc.host, tc.repo, tc.ref)
		}
	}
}

func TestPlainHTTP(t *testing.T) {
	for host, want := range map[string]bool{
		"localhost:5000": true, "LOCALHOST": true, "127.0.0.1:5000": true, "127.9.9.9": true, "[::1]:5000": true,
		"198.18.0.1:5000": false, "registry.example.com": false, "localhost.example.com:5000": false, "10.0.0.1": false,
	} {
		if got := plainHTTP(host); got != want {
			t.Errorf("plainHTTP(%q) = %v, want %v", host, got, want)
		}
	}
}

const goodManifest = `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.asr.image.v1",
"config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},
"layers":[{"mediaType":"application/vnd.asr.image.layer.v1","digest":"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef","size":4096}]}`

func TestASRLayer(t *testing.T) {
	l, err := asrLayer(ocispec.MediaTypeImageManifest, []byte(goodManifest))
	if err != nil || l.Size != 4096 || l.MediaType != LayerMediaType {
		t.Fatalf("asrLayer(asr's manifest) = %+v, %v", l, err)
	}
	for _, tc := range []struct{ name, mediaType, body, want string }{
		{"index", ocispec.MediaTypeImageIndex, `{}`, "image index"},
		{"docker image", "application/vnd.docker.distribution.manifest.v2+json", `{}`, "not an OCI image manifest"},
		{"container image", ocispec.MediaTypeImageManifest, strings.Replace(strings.Replace(goodManifest, `"artifactType":"application/vnd.asr.image.v1",`, "", 1), "vnd.oci.empty.v1+json", "vnd.oci.image.config.v1+json", 1), `"application/vnd.oci.image.config.v1+json"`},
		{"other layer type", ocispec.MediaTypeImageManifest, strings.Replace(goodManifest, "vnd.asr.image.layer.v1", "vnd.oci.image.layer.v1.tar+gzip", 1), "its layer is of type"},
		{"no layer", ocispec.MediaTypeImageManifest, `{"artifactType":"application/vnd.asr.image.v1","layers":[]}`, "holds 0 layers"},
		{"bad digest", ocispec.MediaTypeImageManifest, strings.Replace(goodManifest, "sha256:0123", "md5:0123", 1), "not a sha256 digest"},
		{"zero size", ocispec.MediaTypeImageManifest, strings.Replace(goodManifest, `"size":4096`, `"size":0`, 1), "size is 0"},
		{"not JSON", ocispec.MediaTypeImageManifest, `{"layers":`, "not valid JSON"},
	} {
		_, err := asrLayer(tc.mediaType, []byte(tc.body))
		if !errors.Is(err, ErrNotASR) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: asrLayer = %v, want ErrNotASR saying %q", tc.name, err, tc.want)
		}
	}
	// An artifact from before OCI 1.1 says its type in the config.
	old := strings.Replace(strings.Replace(goodManifest, `"artifactType":"application/vnd.asr.image.v1",`, "", 1), "application/vnd.oci.empty.v1+json", ArtifactType, 1)
	if _, err := asrLayer(ocispec.MediaTypeImageManifest, []byte(old)); err != nil {
		t.Errorf("asrLayer(config media type %s) = %v, want accepted", ArtifactType, err)
	}
}

// FuzzASRLayer: a registry's manifest is untrusted; whatever it holds,
// asrLayer returns a valid layer or ErrNotASR, never panics.
func FuzzASRLayer(f *testing.F) {
	f.Add(ocispec.MediaTypeImageManifest, []byte(goodManifest))
	f.Add(ocispec.MediaTypeImageIndex, []byte(`{"manifests":[]}`))
	f.Add(ocispec.MediaTypeImageManifest, []byte(`{"layers":[{"digest":"sha256:","size":-1}]}`))
	f.Fuzz(func(t *testing.T, mediaType string, b []byte) {
		l, err := asrLayer(mediaType, b)
		if err != nil {
			if !errors.Is(err, ErrNotASR) {
				t.Fatalf("asrLayer error %v is not ErrNotASR", err)
			}
			return
		}
		if l.Size <= 0 || l.Digest.Validate() != nil || l.MediaType != LayerMediaType {
			t.Fatalf("asrLayer accepted a bad layer %+v", l)
		}
	})
}

// FuzzParseReference: whatever follows oci://, ParseReference refuses it
// or returns a reference that names a registry, a repository and a tag or
// digest, and none of them holds user info or white space.
func FuzzParseReference(f *testing.F) {
	for _, s := range []string{"oci://127.0.0.1:5000/lab/disk:v1", "oci://r/x@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "oci://u:p@h/r:t", "oci://h/r"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseReference(s)
		if err != nil {
			return
		}
		if r.Registry == "" || r.Repository == "" || r.Reference == "" {
			t.Fatalf("ParseReference(%q) = %+v: a part is empty", s, r)
		}
		if strings.Contains(r.Registry, "@") || strings.ContainsAny(r.Registry+r.Repository+r.Reference, " \t\r\n") {
			t.Fatalf("ParseReference(%q) = %+v: user info or white space got through", s, r)
		}
	})
}
