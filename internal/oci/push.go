package oci

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Pushed is what Push uploaded.
type Pushed struct {
	Manifest string // the manifest's digest: ref@Manifest names this upload forever
	Layer    string // the blob's digest, the .asr file's SHA-256
	Size     int64
	Reused   bool // the registry held the blob already: nothing was uploaded
}

// Push uploads the file at path (a prepared image, checked by the caller)
// to ref, a tag, as an asr artifact: the file whole as its one layer,
// then the manifest under the tag. The upload gives up when it makes no
// progress for o.Timeout.
func Push(ctx context.Context, path, ref string, o Options) (*Pushed, error) {
	r, err := ParseReference(ref)
	if err != nil {
		return nil, err
	}
	if err := r.ValidateReferenceAsTag(); err != nil {
		return nil, fmt.Errorf("%s%s: push needs a tag (REPOSITORY:TAG), not a digest: the registry computes the digest", Scheme, r)
	}
	c, err := newClient(r, o)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	layer := ocispec.Descriptor{
		MediaType:   LayerMediaType,
		Digest:      digest.NewDigest(digest.SHA256, h),
		Size:        st.Size(),
		Annotations: map[string]string{ocispec.AnnotationTitle: filepath.Base(path)},
	}
	p := &Pushed{Layer: layer.Digest.String(), Size: layer.Size}

	if p.Reused, err = c.exists(ctx, layer); err != nil {
		return nil, err
	}
	if !p.Reused {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return nil, err
		}
		if err := c.upload(ctx, layer, f); err != nil {
			return nil, err
		}
	}
	config := ocispec.DescriptorEmptyJSON
	if ok, err := c.exists(ctx, config); err != nil {
		return nil, err
	} else if !ok {
		if err := c.upload(ctx, config, bytes.NewReader(config.Data)); err != nil {
			return nil, err
		}
	}
	m := ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: ArtifactType,
		Config:       config,
		Layers:       []ocispec.Descriptor{layer},
		// The image file's time, not the upload's: pushing the same file
		// again gives the same manifest, and the same digest.
		Annotations: map[string]string{ocispec.AnnotationCreated: st.ModTime().UTC().Format(time.RFC3339)},
	}
	mb, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	md := ocispec.Descriptor{MediaType: m.MediaType, ArtifactType: ArtifactType, Digest: digest.FromBytes(mb), Size: int64(len(mb))}
	tctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if err := c.repo.PushReference(tctx, md, bytes.NewReader(mb), r.Reference); err != nil {
		return nil, c.explain(tctx, err, "repository name")
	}
	p.Manifest = md.Digest.String()
	return p, nil
}

func (c *client) exists(ctx context.Context, d ocispec.Descriptor) (bool, error) {
	tctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	ok, err := c.repo.Blobs().Exists(tctx, d)
	if err != nil {
		return false, c.explain(tctx, err, "repository name")
	}
	return ok, nil
}

// upload sends a blob under a watchdog: every read of r by the
// transport, and the answer after the last, must come within c.timeout.
func (c *client) upload(ctx context.Context, d ocispec.Descriptor, r io.Reader) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	timer := time.AfterFunc(c.timeout, func() { cancel(errStalled) })
	defer timer.Stop()
	err := c.repo.Blobs().Push(ctx, d, &watchdogReader{r: r, timer: timer, d: c.timeout, total: d.Size, progress: c.progress, last: time.Now()})
	if err != nil {
		if errors.Is(context.Cause(ctx), errStalled) {
			return fmt.Errorf("%s%s: the upload made no progress for %s", Scheme, c.ref, c.timeout)
		}
		return c.explain(ctx, err, "repository name")
	}
	return nil
}

var errStalled = errors.New("stalled")

// watchdogReader restarts its timer at every read: the transport reads
// only as fast as the registry takes the bytes.
// It also reports progress, now and then.
type watchdogReader struct {
	r        io.Reader
	timer    *time.Timer
	d        time.Duration
	sent     int64
	total    int64
	progress func(sent, total int64)
	last     time.Time
}

func (w *watchdogReader) Read(p []byte) (int, error) {
	w.timer.Reset(w.d)
	n, err := w.r.Read(p)
	w.sent += int64(n)
	if w.progress != nil && time.Since(w.last) >= ProgressEvery {
		w.last = time.Now()
		w.progress(w.sent, w.total)
	}
	return n, err
}
