package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/asrlinux/asr/internal/image"
	"github.com/asrlinux/asr/internal/oci"
	"github.com/asrlinux/asr/internal/progress"
	"github.com/asrlinux/asr/internal/trust"
)

const manPush = `NAME
    asr push - upload a prepared image to an OCI registry

SYNOPSIS
    asr push --source IMAGE [--cacert FILE] [--timeout SECONDS] oci://HOST[:PORT]/REPOSITORY:TAG

DESCRIPTION
    Uploads IMAGE, a prepared image ('asr imagescan'), signatures included, to an OCI
    registry (Harbor, Zot, GitLab's, the CNCF distribution registry) as an artifact of
    asr's own type, and tags it TAG. Machines then restore it with
      asr restore --source oci://HOST/REPOSITORY:TAG --target DEVICE --erase
    or, from a kernel command line, asr.source=oci://HOST/REPOSITORY:TAG. The digest
    asr push prints names this upload forever: oci://HOST/REPOSITORY@sha256:DIGEST.

    The image is checked first (header, manifest, signature trailer): nothing is
    uploaded from a file that is not a prepared image. The file is read once for its
    SHA-256 (the blob's digest, which the upload names), then sent; a blob the registry
    holds already is not sent again. A long upload reports its progress every 10 s.
    FORMAT.md describes the artifact's media types.

REGISTRIES
    Credentials come from the Docker config file: $DOCKER_CONFIG/config.json, else
    ~/.docker/config.json, as 'docker login' or 'oras login' write it (credential
    helpers included); the registry gets them as basic auth or exchanges them for a
    bearer token. A registry on localhost or 127.0.0.1 is reached over plain HTTP, as
    Docker does; any other over HTTPS (--cacert adds CAs for it).

OPTIONS
@OPTIONS@
EXAMPLES
    asr push --source lab-2026.asr oci://registry.example.com/lab/disk:2026-12
    DOCKER_CONFIG=/etc/asr/docker asr push --source lab.asr oci://127.0.0.1:5000/lab/disk:v2
`

func runPush(ctx context.Context, e env, args []string) error {
	fs := newFlags("push")
	src := fs.String("source", "", "the prepared `IMAGE` file to upload")
	cacert := fs.String("cacert", "", "also trust the CA certificates in `FILE` for the registry's HTTPS")
	timeout := fs.Int("timeout", 30, "give up after this many `SECONDS` without an answer or without upload progress")
	// The reference may come before or after the options.
	var ref string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		ref, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return parse(e, fs, manPush, args) // the manual for -h, or a usage error
	}
	if fs.NArg() > 0 {
		if ref != "" || fs.NArg() > 1 {
			return usageError("push: give one destination oci://HOST/REPOSITORY:TAG (see 'asr help push')")
		}
		ref = fs.Arg(0)
	}
	switch {
	case *src == "":
		return usageError("push: --source is required (the prepared image file to upload)")
	case ref == "":
		return usageError("push: give the destination, oci://HOST/REPOSITORY:TAG (see 'asr help push')")
	case !strings.HasPrefix(strings.ToLower(ref), oci.Scheme):
		return usageError("push: destination %s: give oci://HOST/REPOSITORY:TAG", ref)
	case *timeout <= 0:
		return usageError("push: --timeout must be a positive number of seconds")
	}
	if r, err := oci.ParseReference(ref); err != nil {
		return usageError("push: destination %s: %v", ref, err)
	} else if r.ValidateReferenceAsTag() != nil {
		return usageError("push: destination %s: push needs a tag (REPOSITORY:TAG), not a digest: the registry computes the digest", ref)
	}

	// Nothing leaves the machine before the image is checked whole.
	f, st, im, err := openImageFile(*src, os.O_RDONLY, "pushes")
	if err != nil {
		return err
	}
	defer f.Close()
	im.Close()
	sigs, err := image.ReadSignatures(f, st.Size(), im.Manifest)
	if err != nil {
		return fmt.Errorf("source %s: %w", *src, err)
	}
	signed := "unsigned"
	if len(sigs) > 0 {
		signed = "signed by " + trust.IDList(trust.SignerIDs(sigs))
	}
	fmt.Fprintf(e.stdout, "Pushing %s (%s, image %s, %s) to %s\n", *src, progress.HumanBytes(st.Size()), im.Digest, signed, ref)
	start := time.Now()
	p, err := oci.Push(ctx, *src, ref, oci.Options{CACert: *cacert, Timeout: time.Duration(*timeout) * time.Second,
		Progress: func(sent, total int64) {
			fmt.Fprintf(e.stdout, "Uploaded %s of %s (%d%%)\n", progress.HumanBytes(sent), progress.HumanBytes(total), sent*100/max(total, 1))
		}})
	if err != nil {
		return fmt.Errorf("push: %w", err)
	}
	how := fmt.Sprintf("uploaded in %.1f s", time.Since(start).Seconds())
	if p.Reused {
		how = "the registry held it already"
	}
	r, _ := oci.ParseReference(ref)
	fmt.Fprintf(e.stdout, "Pushed %s: manifest %s, blob %s (%d bytes, %s)\n", ref, p.Manifest, p.Layer, p.Size, how)
	fmt.Fprintf(e.stdout, "Restore it with --source %s%s/%s@%s\n", oci.Scheme, r.Registry, r.Repository, p.Manifest)
	return nil
}
