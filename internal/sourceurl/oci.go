package sourceurl

import (
	"context"
	"errors"

	"github.com/asrlinux/asr/internal/oci"
	"github.com/asrlinux/asr/internal/source"
)

const ociHelp = `oci://HOST/REPO:TAG a prepared image in an OCI registry (Harbor, Zot, GitLab's, the
                    CNCF distribution registry) put there by 'asr push', or
                    oci://HOST/REPO@sha256:DIGEST: its blob is read with range
                    requests on several connections, as over HTTP. Credentials come
                    from the Docker config file ($DOCKER_CONFIG/config.json, else
                    ~/.docker/config.json: docker login, credential helpers), sent
                    as basic auth or exchanged for a bearer token. A registry on
                    localhost or 127.0.0.1 is reached over plain HTTP, any other
                    over HTTPS
`

func checkOCI(s string) error {
	_, err := oci.ParseReference(s)
	return err
}

func openOCI(ctx context.Context, s string, o Options) (source.Source, error) {
	if o.Checksum != "" {
		return nil, errors.New("--checksum applies to raw images over HTTP; an image from a registry is checked chunk by chunk against its manifest")
	}
	b, err := oci.Resolve(ctx, s, oci.Options{CACert: o.CACert, Timeout: o.Timeout})
	if err != nil {
		return nil, err
	}
	if o.Log != nil {
		o.Log("Registry: %s is manifest %s, blob %s (%d bytes)", redactURL(s), b.Manifest, b.Digest, b.Size)
	}
	return source.OpenHTTP(ctx, b.URL, source.HTTPOptions{
		Client: b.Client, Name: redactURL(s), Kind: "OCI registry", Size: b.Size, PreparedOnly: true,
		Stall: o.Timeout, Retries: o.Retries, Log: o.Log, MaxSize: o.MaxSize,
	})
}
