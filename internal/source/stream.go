package source

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"

	"github.com/asrlinux/asr/internal/blockmap"
	"github.com/asrlinux/asr/internal/image"
)

// transport is where a remote file's bytes come from (a web server today).
// It knows nothing of image formats: detect and the sources below do, the
// same for every transport.
type transport interface {
	// open reads [off, end) of the file (end -1: to its end) as one stream
	// that survives dropped connections.
	open(ctx context.Context, off, end int64) io.ReadCloser
	size() int64  // the file's length; -1 when unknown
	ranges() bool // open can start past 0 without reading what comes before
	name() string // for messages: no password in it
	kind() string // "HTTP", "HTTPS": for Info.Kind
	logf(format string, a ...any)
}

// streamPrepared is a prepared image behind a transport: read by spans of
// chunks when the transport takes ranges, else as one stream.
type streamPrepared struct {
	t    transport
	info Info
	dec  *image.Decoder
	// first is the stream the image was opened with; without ranges it is
	// the only way in, positioned just after the manifest.
	first io.ReadCloser
	have  func(int) bool // chunks the target holds already (delta): not fetched
}

// Skip leaves out of Run the stored chunks the target holds already: with
// ranges, they are never requested.
func (p *streamPrepared) Skip(have func(int) bool) { p.have = have }

// openStreamPrepared reads and checks the manifest from first (or, with
// ranges, from a stream of its own).
func openStreamPrepared(ctx context.Context, t transport, first io.ReadCloser) (Source, error) {
	if first == nil {
		first = openManifest(ctx, t)
	}
	m, d, hdr, err := image.ReadHeaderManifest(first)
	if err != nil {
		first.Close()
		var stall *StallError
		if errors.As(err, &stall) {
			return nil, stall
		}
		return nil, fmt.Errorf("source %s: %w", t.name(), err)
	}
	// A signed image is longer than its manifest says by its signature
	// trailer, and by nothing else.
	if extra := t.size() - m.FileSize(); t.size() >= 0 && (extra < 0 || extra > image.MaxTrailerLen) {
		first.Close()
		return nil, fmt.Errorf("source %s: the server says the file is %d bytes, its manifest says %d: the file on the server is truncated or not this image", t.name(), t.size(), m.FileSize())
	}
	dec, err := image.NewDecoder()
	if err != nil {
		first.Close()
		return nil, err
	}
	p := &streamPrepared{t: t, dec: dec, first: first, info: Info{
		Kind: "prepared image over " + t.kind(), Size: m.LogicalSize,
		ChunkSize: int(m.ChunkSize), Manifest: m, Digest: d, Header: hdr,
	}}
	var terr error
	p.info.Signatures, p.info.SignaturesErr, terr = readTrailer(ctx, t, m)
	if terr != nil {
		first.Close()
		dec.Close()
		return nil, terr
	}
	if t.ranges() {
		first.Close() // ranged workers fetch chunk runs on their own connections
		p.first = nil
	}
	return p, nil
}

// openManifest reads the header and the manifest with ranges that end
// where they do: a request to the end of the file, dropped once the
// manifest is read, would have the server send megabytes more into socket
// buffers, which a delta restore that fetches a few chunks cannot afford.
// A header that does not parse is returned alone, for ReadHeaderManifest
// to name what is wrong with it.
func openManifest(ctx context.Context, t transport) io.ReadCloser {
	hr := t.open(ctx, 0, image.HeaderSize)
	hb, err := io.ReadAll(io.LimitReader(hr, image.HeaderSize))
	hr.Close()
	if err != nil {
		return readCloser{errReader{err}, closerFunc(func() error { return nil })}
	}
	h, err := image.ParseHeader(hb)
	if err != nil {
		return io.NopCloser(bytes.NewReader(hb))
	}
	body := t.open(ctx, image.HeaderSize, image.HeaderSize+int64(h.ManifestLen))
	return readCloser{io.MultiReader(bytes.NewReader(hb), body), body}
}

// errReader is a reader that fails with its error.
type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// readTrailer fetches the signature trailer after the last chunk with one
// range request. Without ranges it cannot be read before the chunks have
// streamed past, which is too late to refuse an image: that is an error for
// callers that require a signature (and only for them), returned as sigErr.
// A server that says the file is longer than the image but cannot deliver
// those bytes is lying about the file: that is err, which fails the open.
func readTrailer(ctx context.Context, t transport, m *image.Manifest) (sigs [][]byte, sigErr, err error) {
	end := m.FileSize()
	switch {
	case t.size() == end:
		return nil, nil, nil
	case t.size() < 0:
		return nil, fmt.Errorf("the server does not say how long %s is, so its signatures cannot be found", t.name()), nil
	case !t.ranges():
		return nil, fmt.Errorf("the server does not answer range requests, so the signatures at the end of %s cannot be read before restoring: enable ranges (nginx and Apache do by default)", t.name()), nil
	}
	rc := t.open(ctx, end, t.size())
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, image.MaxTrailerLen+1))
	if err != nil {
		return nil, nil, fmt.Errorf("source %s: the server says the file is %d bytes, its manifest says %d, and reading the %d bytes after the image failed: %w", t.name(), t.size(), end, t.size()-end, err)
	}
	if int64(len(b)) != t.size()-end {
		return nil, nil, fmt.Errorf("source %s: the server says the file is %d bytes, its manifest says %d, but it sent %d bytes after the image", t.name(), t.size(), end, len(b))
	}
	sigs, sigErr = image.ParseTrailer(b)
	return sigs, sigErr, nil
}

// drainTail reads what follows the last chunk of a stream read without
// ranges: the signature trailer, if any. The stream must end exactly where
// the server said the file does (and no further than a trailer can reach):
// a file cut short, or longer than announced, is not the image it claims.
func (p *streamPrepared) drainTail() error {
	end := p.info.Manifest.FileSize()
	n, err := io.Copy(io.Discard, io.LimitReader(p.first, image.MaxTrailerLen+1))
	switch {
	case err != nil:
		return fmt.Errorf("source %s: the server says the file is %d bytes, its manifest says %d; reading the rest failed: %w", p.t.name(), p.t.size(), end, err)
	case p.t.size() >= 0 && end+n != p.t.size():
		return fmt.Errorf("source %s: the server says the file is %d bytes, its manifest says %d, but the stream ended at byte %d", p.t.name(), p.t.size(), end, end+n)
	case n > image.MaxTrailerLen:
		return fmt.Errorf("source %s: more than %d bytes follow the last chunk: the file on the server is not this image", p.t.name(), image.MaxTrailerLen)
	}
	return nil
}

func (p *streamPrepared) Info() Info { return p.info }

func (p *streamPrepared) Close() error {
	p.dec.Close()
	if p.first != nil {
		p.first.Close()
	}
	return nil
}

// spanBytes is how much stored data one range request asks for: big enough
// that request overhead vanishes, small enough that several workers share
// the image evenly and a resumed span repeats little.
const spanBytes = 8 << 20

func (p *streamPrepared) Run(ctx context.Context, workers int, fn func(Chunk) error) error {
	m := p.info.Manifest
	if !p.t.ranges() {
		if err := runPreparedStream(ctx, workers, m, p.first, p.dec, p.have, fn); err != nil {
			return err
		}
		return p.drainTail()
	}
	// Cut the chunk list into spans of about spanBytes stored bytes; each
	// worker fetches a span with one range request and decodes as it reads.
	// A chunk the target holds already (delta) ends a span and is in none:
	// the requests cover only the chunks to fetch, adjacent ones coalesced.
	// The list has at most one small entry per chunk, like the manifest.
	type span struct{ a, b int }
	var spans []span
	for a := 0; a < len(m.Chunks); {
		if m.Chunks[a].Codec.Stored() && !wanted(p.have, a) {
			a++
			continue
		}
		b, n := a, int64(0)
		for b < len(m.Chunks) && (n == 0 || n+int64(m.Chunks[b].Length) <= spanBytes) {
			if m.Chunks[b].Codec.Stored() && !wanted(p.have, b) {
				break
			}
			n += int64(m.Chunks[b].Length)
			b++
		}
		spans = append(spans, span{a, b})
		a = b
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	next := make(chan span)
	go func() {
		defer close(next)
		for _, s := range spans {
			select {
			case next <- s:
			case <-ctx.Done():
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			var stored, dst []byte
			for s := range next {
				stored, dst = chunkBuf(stored, m), chunkBuf(dst, m)
				if err := p.fetchSpan(ctx, s.a, s.b, &stored, &dst, fn); err != nil {
					cancel(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return context.Cause(ctx)
}

func (p *streamPrepared) fetchSpan(ctx context.Context, a, b int, stored, dst *[]byte, fn func(Chunk) error) error {
	m := p.info.Manifest
	var start, end int64 = -1, -1
	for i := a; i < b; i++ {
		if c := m.Chunks[i]; c.Codec.Stored() {
			if start < 0 {
				start = c.Offset
			}
			end = c.Offset + int64(c.Length)
		}
	}
	var r io.ReadCloser
	if start >= 0 {
		r = p.t.open(ctx, start, end)
		defer r.Close()
	}
	for i := a; i < b; i++ {
		c := m.Chunks[i]
		if !c.Codec.Stored() {
			if err := fn(NotStored(m, i)); err != nil {
				return err
			}
			continue
		}
		if cap(*stored) < int(c.Length) {
			*stored = make([]byte, c.Length)
		}
		buf := (*stored)[:c.Length]
		if _, err := io.ReadFull(r, buf); err != nil {
			return fmt.Errorf("reading chunk %d: %w", i, err)
		}
		data, err := p.dec.DecodeChunk(m, i, buf, *dst)
		if err != nil {
			return fmt.Errorf("source %s: %w", p.t.name(), err)
		}
		*dst = data
		if err := fn(Chunk{Index: i, Data: data, Sum: c.Sum}); err != nil {
			return err
		}
	}
	return nil
}

// ReadChunk fetches, decodes and checks one chunk with a range request (or,
// without Range support, by reading up to it).
func (p *streamPrepared) ReadChunk(i int) ([]byte, error) {
	var out []byte
	err := p.fetchSpan(context.Background(), i, i+1, new([]byte), new([]byte), func(c Chunk) error {
		if c.Zero {
			out = make([]byte, p.info.Manifest.ChunkLen(i))
		} else {
			out = bytes.Clone(c.Data)
		}
		return nil
	})
	return out, err
}

// runPreparedStream reads the stored chunks of an image in order from one
// stream, positioned just after the manifest, and decodes them on workers.
// Stored chunks for which have reports true (nil: none) are read past (a
// stream cannot skip them) but neither decoded nor delivered.
func runPreparedStream(ctx context.Context, workers int, m *image.Manifest, r io.Reader, dec *image.Decoder, have func(int) bool, fn func(Chunk) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	type job struct {
		i      int
		stored []byte
	}
	pool := make(chan []byte, 2*workers)
	for range cap(pool) {
		pool <- make([]byte, m.ChunkSize)
	}
	jobs := make(chan job)
	go func() {
		defer close(jobs)
		// Skip the padding between the manifest and the first chunk.
		pos := int64(image.HeaderSize) + int64(len(image.MarshalManifest(m)))
		if _, err := io.CopyN(io.Discard, r, m.DataOffset-pos); err != nil {
			cancel(fmt.Errorf("reading image: %w", err))
			return
		}
		for i, c := range m.Chunks {
			var buf []byte
			if c.Codec.Stored() && !wanted(have, i) {
				if _, err := io.CopyN(io.Discard, r, int64(c.Length)); err != nil {
					cancel(fmt.Errorf("reading chunk %d: %w", i, err))
					return
				}
				continue
			}
			if c.Codec.Stored() {
				select {
				case buf = <-pool:
				case <-ctx.Done():
					return
				}
				buf = buf[:c.Length]
				if _, err := io.ReadFull(r, buf); err != nil {
					cancel(fmt.Errorf("reading chunk %d: %w", i, err))
					return
				}
			}
			select {
			case jobs <- job{i, buf}:
			case <-ctx.Done():
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			var dst []byte
			for j := range jobs {
				if ctx.Err() != nil {
					if j.stored != nil {
						pool <- j.stored[:cap(j.stored)]
					}
					continue
				}
				c := Chunk{Index: j.i}
				var err error
				if j.stored == nil {
					c = NotStored(m, j.i)
				} else {
					dst = chunkBuf(dst, m)
					dst, err = dec.DecodeChunk(m, j.i, j.stored, dst)
					pool <- j.stored[:cap(j.stored)]
					c.Data, c.Sum = dst, m.Chunks[j.i].Sum
				}
				if err == nil {
					err = fn(c)
				}
				if err != nil {
					cancel(err)
				}
			}
		})
	}
	wg.Wait()
	return context.Cause(ctx)
}

// streamRaw is a raw (possibly compressed) disk image behind a transport,
// read as one sequential stream and hashed on the way, so the download as
// a whole is checked against a published SHA-256 when there is one.
type streamRaw struct {
	t        transport
	info     Info
	first    io.ReadCloser
	decomp   func(io.ReadCloser) (io.ReadCloser, error)
	want     []byte // expected SHA-256 of the file as served; nil if none
	wantFrom string
	note     string
	// local is the disk in a spool, mapped by its filesystems: a
	// compressed image is read once to measure it anyway, and from then on
	// the chunks come from there (see spool).
	local Source
	// used maps a plain disk on a server that takes ranges (see
	// rangemap.go): only its used chunks are fetched, or, when the file
	// must match a checksum, written. nil: every chunk is what it is.
	used *blockmap.Map
}

// openStreamRaw opens a raw image of format ft; want is the SHA-256 the file
// must have (from wantFrom), nil if nothing was published. A raw image
// whose size only reading tells is read once now, up to maxSize (0: no
// limit), since nothing may be written before the size is checked.
//
// With spoolDir set, a compressed image is decompressed into a spool there
// during that reading, and mapped (a *SpoolError from the spool is logged,
// and the image is then measured and streamed as without it).
//
// A plain image on a server that takes ranges and says its size is mapped
// with range requests instead (see rangemap.go), unless allBlocks; one
// without ranges is spooled like a compressed one.
func openStreamRaw(ctx context.Context, t transport, first io.ReadCloser, ft format, want []byte, wantFrom string, cs int, maxSize int64, spoolDir string, allBlocks bool) (Source, error) {
	r := &streamRaw{t: t, first: first, decomp: ft.decomp, want: want, wantFrom: wantFrom}
	r.info = Info{Kind: ft.kind() + " over " + t.kind(), ChunkSize: cs, Size: t.size()}
	byRanges := ft.decomp == nil && t.ranges() && t.size() > 0
	if byRanges && !allBlocks && (maxSize <= 0 || t.size() <= maxSize) {
		// A disk too big for the target is refused by the caller, on the
		// size alone: no need to map it first.
		used, err := mapOverRanges(ctx, t)
		if err != nil {
			r.Close()
			return nil, r.wrap(fmt.Errorf("mapping its filesystems: %w", err))
		}
		r.used = used
	}
	if !byRanges && !allBlocks && spoolDir != "" {
		err := r.spool(ctx, spoolDir, maxSize)
		var se *SpoolError
		switch {
		case err == nil:
			return r, nil
		case !errors.As(err, &se):
			r.Close()
			return nil, err
		}
		t.logf("%v: the disk is read whole, free space included", se)
	}
	if ft.decomp != nil || t.size() < 0 {
		n, err := r.measure(ctx, maxSize)
		if err != nil {
			return nil, err
		}
		r.info.Size = n
	}
	if r.info.Size <= 0 {
		r.Close()
		return nil, fmt.Errorf("source %s holds no data", t.name())
	}
	return r, nil
}

// served is the file as the server sends it, hashed on the way through.
type served struct {
	io.Reader
	h hash.Hash
}

// drain reads what the decompressor left (a trailer, padding), so the hash
// covers the whole file.
func (s *served) drain() error {
	_, err := io.Copy(io.Discard, s)
	return err
}

// stream opens the whole file as served and the disk inside it.
func (r *streamRaw) stream(ctx context.Context) (io.ReadCloser, *served, error) {
	body := r.first
	r.first = nil
	if body == nil {
		body = r.t.open(ctx, 0, r.t.size())
	}
	sv := &served{h: sha256.New()}
	sv.Reader = io.TeeReader(body, sv.h)
	var rc io.ReadCloser = readCloser{sv, body}
	if r.decomp != nil {
		z, err := r.decomp(io.NopCloser(sv))
		if err != nil {
			body.Close()
			return nil, nil, r.wrap(err)
		}
		rc = readCloser{z, closerFunc(func() error { z.Close(); return body.Close() })}
	}
	return rc, sv, nil
}

// wrap names the source in err, unless err is typed and does so already.
func (r *streamRaw) wrap(err error) error {
	var stall *StallError
	if errors.As(err, &stall) {
		return stall
	}
	return fmt.Errorf("source %s: %w", r.t.name(), err)
}

func (r *streamRaw) measure(ctx context.Context, limit int64) (int64, error) {
	r.t.logf("The size of %s is not known in advance: reading it once to measure it", r.t.name())
	var sv *served
	n, err := measure(func() (io.ReadCloser, error) {
		rc, s, err := r.stream(ctx)
		sv = s
		return rc, err
	}, r.t.name(), limit)
	if err == nil {
		err = sv.drain()
	}
	if err != nil {
		var big *TooBigError
		if errors.As(err, &big) {
			return 0, err
		}
		return 0, r.wrap(err)
	}
	if err := r.checkServed(sv); err != nil {
		return 0, err
	}
	return n, nil
}

// spool downloads the image once into a spool in dir, checking it against
// its published checksum on the way, and opens the disk there as r.local.
func (r *streamRaw) spool(ctx context.Context, dir string, limit int64) error {
	r.t.logf("Downloading %s once into a temporary file in %s, to measure it and map its filesystems", r.t.name(), dir)
	rc, sv, err := r.stream(ctx)
	if err != nil {
		return err
	}
	defer rc.Close()
	f, n, err := spool(ctx, dir, rc, r.t.name(), limit, nil)
	if err == nil {
		if err = sv.drain(); err != nil {
			f.Close()
		}
	}
	if err != nil {
		var big *TooBigError
		var se *SpoolError
		if errors.As(err, &big) || errors.As(err, &se) {
			return err
		}
		return r.wrap(err)
	}
	if err := r.checkServed(sv); err != nil {
		f.Close()
		return err
	}
	if n == 0 {
		f.Close()
		return fmt.Errorf("source %s holds no data", r.t.name())
	}
	local, err := spooled(r.info, r.t.name(), f, n)
	if err != nil {
		return err
	}
	r.local, r.info = local, local.Info()
	return nil
}

func (r *streamRaw) checkServed(sv *served) error {
	if r.want == nil {
		r.note = "no published checksum (IMG.sha256) or given one to check the download against"
		return nil
	}
	if got := sv.h.Sum(nil); !bytes.Equal(got, r.want) {
		return fmt.Errorf("source %s: the download's SHA-256 is %x, but %s says %x", r.t.name(), got, r.wantFrom, r.want)
	}
	r.note = "download matches the SHA-256 from " + r.wantFrom
	return nil
}

func (r *streamRaw) Info() Info { return r.info }

func (r *streamRaw) Close() error {
	if r.local != nil {
		r.local.Close()
	}
	if r.first != nil {
		err := r.first.Close()
		r.first = nil
		return err
	}
	return nil
}

func (r *streamRaw) Run(ctx context.Context, workers int, fn func(Chunk) error) error {
	if r.local != nil { // checked against its checksum when it was spooled
		return r.local.Run(ctx, workers, fn)
	}
	if r.used != nil && r.want == nil { // nothing to check: fetch only the used chunks
		return runRanges(ctx, r.t, r.info, r.used, workers, fn)
	}
	if r.used != nil { // every byte is hashed, only the used ones written
		fn = maskChunks(r.used, r.info.ChunkSize, fn)
	}
	rc, sv, err := r.stream(ctx)
	if err != nil {
		return err
	}
	defer rc.Close()
	if err := RunStream(ctx, workers, rc, r.info.Size, r.info.ChunkSize, fn); err != nil {
		return err
	}
	if _, err := io.Copy(io.Discard, rc); err != nil { // a compressed stream's trailer
		return r.wrap(err)
	}
	if err := sv.drain(); err != nil {
		return r.wrap(err)
	}
	// Every byte the server sent went through the hash, so the image as a
	// whole is checked before the engine writes the deferred first chunk.
	return r.checkServed(sv)
}

// Note says how the download itself was checked.
func (r *streamRaw) Note() string { return r.note }

// Unchecked says why nothing published could check the download: then a
// verification shows only that the disk matches what was downloaded.
func (r *streamRaw) Unchecked() string {
	if r.want != nil {
		return ""
	}
	return "no checksum published (IMG.sha256) or given"
}
