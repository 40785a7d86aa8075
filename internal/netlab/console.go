package netlab

import (
	"bytes"
	"fmt"
	"regexp"
	"sync"
	"time"
)

// Console collects what a virtual machine (or a server process) prints: tests
// wait for lines on it with Expect, and Log keeps everything for failure
// messages. It is an io.Writer; carriage returns are dropped.
type Console struct {
	mu      sync.Mutex
	buf     []byte
	pos     int           // where the next Expect starts looking
	changed chan struct{} // closed and replaced at each write
	closed  bool          // the writer is gone: nothing more comes
}

// NewConsole returns an empty console.
func NewConsole() *Console {
	return &Console{changed: make(chan struct{})}
}

// Write appends p.
func (c *Console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf = append(c.buf, bytes.ReplaceAll(p, []byte("\r"), nil)...)
	close(c.changed)
	c.changed = make(chan struct{})
	return len(p), nil
}

// Close says that nothing more will be written: Expect stops waiting.
func (c *Console) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		c.closed = true
		close(c.changed)
		c.changed = make(chan struct{})
	}
	return nil
}

// Log is everything written so far.
func (c *Console) Log() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return string(c.buf)
}

// Expect waits at most timeout for pattern (a regular expression) to match
// complete lines written since the previous match, and returns the match and
// its submatches. Only complete lines count, so "([0-9.]+) s" never matches
// half of a number still being printed. It fails when the timeout passes or
// the writer closes first.
func (c *Console) Expect(pattern string, timeout time.Duration) ([]string, error) {
	re, err := regexp.Compile(pattern)
	if err != nil {
		return nil, err
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		end := bytes.LastIndexByte(c.buf, '\n') + 1
		if c.closed {
			end = len(c.buf)
		}
		var m []int
		if end > c.pos {
			m = re.FindSubmatchIndex(c.buf[c.pos:end])
		}
		if m != nil {
			out := make([]string, len(m)/2)
			for i := range out {
				if m[2*i] >= 0 {
					out[i] = string(c.buf[c.pos+m[2*i] : c.pos+m[2*i+1]])
				}
			}
			c.pos += m[1]
			c.mu.Unlock()
			return out, nil
		}
		closed, changed := c.closed, c.changed
		c.mu.Unlock()
		if closed {
			return nil, fmt.Errorf("console: %q never came: the output ended", pattern)
		}
		select {
		case <-changed:
		case <-deadline.C:
			return nil, fmt.Errorf("console: %q did not come within %v", pattern, timeout)
		}
	}
}
