package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// resumer reads [off, end) of the file and survives dropped and stalled
// connections: it reconnects where it stopped (with Range, or by skipping
// what it has on a server without Range), with backoff. It gives up with a
// *StallError once a read has waited hc.stall without a byte, across
// reconnections, or after hc.retries reconnections in a row that brought
// nothing. A body that ends before end is a dropped connection, never the
// end of the file. An answer that cannot be the bytes asked for (a 206 from
// the wrong offset, a file that changed length) ends it at once.
type resumer struct {
	hc      *httpClient
	ctx     context.Context
	off     int64
	end     int64 // -1: read to EOF
	body    io.ReadCloser
	tries   int
	lastErr error
}

// fatalError is an answer that reconnecting would not mend.
type fatalError struct{ error }

func (e fatalError) Unwrap() error { return e.error }

func (hc *httpClient) resumer(ctx context.Context, off, end int64) *resumer {
	return &resumer{hc: hc, ctx: ctx, off: off, end: end}
}

func (r *resumer) Read(p []byte) (int, error) {
	if r.end >= 0 {
		if r.off >= r.end {
			return 0, io.EOF
		}
		if rest := r.end - r.off; int64(len(p)) > rest {
			p = p[:rest]
		}
	}
	// The stall clock runs only while the caller waits on the server.
	since := time.Now()
	for {
		if r.body == nil {
			if err := r.reopen(since); err != nil {
				return 0, err
			}
		}
		n, err := r.body.Read(p)
		r.off += int64(n)
		if n > 0 {
			r.tries = 0
		}
		if err == nil || (err == io.EOF && (r.end < 0 || r.off >= r.end)) {
			if n > 0 || err == nil {
				return n, nil
			}
			return 0, io.EOF
		}
		// Anything else (reset, stall, a body cut short) is a dropped
		// connection: close it and resume where it stopped.
		r.Close()
		if r.ctx.Err() != nil {
			return n, r.ctx.Err()
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		r.lastErr = err
		r.hc.log("connection to %s dropped at byte %d (%v); resuming", r.hc.shown, r.off, err)
		if n > 0 {
			return n, nil
		}
	}
}

// reopen connects again at r.off; since is when the caller began waiting.
func (r *resumer) reopen(since time.Time) error {
	stall := r.hc.stall
	for {
		left := stall - time.Since(since)
		if left <= 0 {
			return &StallError{Source: r.hc.shown, What: "the image", Idle: stall, Offset: r.off}
		}
		if r.tries >= r.hc.retries {
			return fmt.Errorf("source %s: gave up after %d attempts in a row without data at byte %d: %w", r.hc.shown, r.tries, r.off, r.lastErr)
		}
		if r.tries > 0 {
			d := min(time.Duration(1<<min(r.tries-1, 4))*time.Second, left)
			select {
			case <-time.After(d):
			case <-r.ctx.Done():
				return r.ctx.Err()
			}
			if left -= d; left <= 0 {
				continue
			}
		}
		r.tries++
		// A connection quiet for half the stall time is reconnected, so
		// one dead connection does not cost the whole allowance.
		idle := min(stall/2, left)
		resp, body, err := r.hc.get(r.ctx, r.off, r.end, idle, idle, "the image")
		if err != nil {
			if r.ctx.Err() != nil {
				return r.ctx.Err()
			}
			r.lastErr = err
			r.hc.log("%v; retrying", err)
			continue
		}
		if err := r.accept(resp, &body); err != nil {
			body.Close()
			var fe fatalError
			if errors.As(err, &fe) {
				return fe.error
			}
			r.lastErr = err
			r.hc.log("%v; retrying", err)
			continue
		}
		r.body = body
		return nil
	}
}

// accept checks an answer to a request at r.off and positions its body
// there; a fatalError is not worth retrying.
func (r *resumer) accept(resp *http.Response, body *io.ReadCloser) error {
	switch {
	case resp.StatusCode == http.StatusPartialContent:
		n, _, err := r.hc.checkPartial(resp, r.off, r.end)
		if err != nil {
			return fatalError{err}
		}
		*body = readCloser{io.LimitReader(*body, n), *body}
	case resp.StatusCode == http.StatusOK:
		if t := r.hc.total; t >= 0 && resp.ContentLength >= 0 && resp.ContentLength != t {
			return fatalError{fmt.Errorf("source %s: the server now says the file is %d bytes, it was %d: it changed on the server during the download", r.hc.shown, resp.ContentLength, t)}
		}
		// The server ignored Range: skip to where we were.
		if _, err := io.CopyN(io.Discard, *body, r.off); err != nil {
			return fmt.Errorf("source %s: reconnect failed while skipping to byte %d: %w", r.hc.shown, r.off, err)
		}
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
		return r.hc.statusError(resp)
	default:
		return fatalError{r.hc.statusError(resp)}
	}
	return nil
}

func (r *resumer) Close() error {
	if r.body == nil {
		return nil
	}
	err := r.body.Close()
	r.body = nil
	return err
}
