package restore

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/asrlinux/asr/internal/progress"
	"github.com/asrlinux/asr/internal/source"
)

// stuckSource delivers the chunks listed in give, then waits without
// looking at its context: a source stalled in a read. A signal must stop
// the restore all the same.
type stuckSource struct {
	info    source.Info
	give    []int
	stuck   chan struct{} // closed once the chunks were given
	release chan struct{} // closed at the end of the test
}

func (s *stuckSource) Info() source.Info { return s.info }
func (s *stuckSource) Close() error      { return nil }
func (s *stuckSource) Run(_ context.Context, _ int, fn func(source.Chunk) error) error {
	data := bytes.Repeat([]byte{0xA5}, s.info.ChunkSize)
	for _, i := range s.give {
		if err := fn(source.Chunk{Index: i, Data: data, Sum: source.RawHash.Sum(data)}); err != nil {
			return err
		}
	}
	close(s.stuck)
	<-s.release
	// Too late: the writers were stopped; this write must not land.
	return fn(source.Chunk{Index: 0, Data: data, Sum: source.RawHash.Sum(data)})
}

func targetFile(t *testing.T, size int) (string, []byte) {
	t.Helper()
	old := bytes.Repeat([]byte("old data "), size/9+1)[:size]
	p := filepath.Join(t.TempDir(), "target.img")
	if err := os.WriteFile(p, old, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, old
}

// A signal while the source is being opened (stalled, not looking at its
// context) ends the run at once, with the target as it was.
func TestSignalBeforeEraseWritesNothing(t *testing.T) {
	const cs = 64 << 10
	p, old := targetFile(t, 8*cs)
	ctx, cancel := context.WithCancelCause(context.Background())
	block := make(chan struct{})
	defer close(block)
	_, err := Run(ctx, Request{
		Source: "stalled", Target: p, Erase: true, NoPrompt: true,
		OpenSource: func(string, int64) (source.Source, error) {
			cancel(errors.New("by SIGINT"))
			<-block
			return nil, errors.New("unreachable")
		},
		Out: progress.New(io.Discard, false),
	})
	if !errors.Is(err, ErrInterrupted) || errors.Is(err, ErrIncomplete) {
		t.Fatalf("Run = %v, want ErrInterrupted alone", err)
	}
	if got, _ := os.ReadFile(p); !bytes.Equal(got, old) {
		t.Error("the target changed after a signal before the erase")
	}
}

// A signal while writing stops the writers, even those of a source that
// does not notice it, and leaves the first chunk blank.
func TestSignalWhileWritingBlanksFirstChunk(t *testing.T) {
	const cs = 64 << 10
	p, _ := targetFile(t, 8*cs)
	src := &stuckSource{info: source.Info{Kind: "test", Size: 8 * cs, ChunkSize: cs}, give: []int{1, 2, 3},
		stuck: make(chan struct{}), release: make(chan struct{})}
	ctx, cancel := context.WithCancelCause(context.Background())
	go func() { <-src.stuck; cancel(errors.New("by SIGTERM")) }()
	_, err := Run(ctx, Request{
		Source: "test", Target: p, Erase: true, NoPrompt: true,
		OpenSource: func(string, int64) (source.Source, error) { return src, nil },
		Out:        progress.New(io.Discard, false),
	})
	close(src.release)
	if !errors.Is(err, ErrInterrupted) || !errors.Is(err, ErrIncomplete) {
		t.Fatalf("Run = %v, want ErrInterrupted and ErrIncomplete", err)
	}
	got, _ := os.ReadFile(p)
	if !bytes.Equal(got[:cs], make([]byte, cs)) {
		t.Error("the first chunk is not blank after a signal while writing")
	}
	if got[cs] != 0xA5 {
		t.Error("chunk 1, delivered before the signal, was not written: the test proves nothing")
	}
}

// A new file that cannot be created fails plainly: nothing was written, so
// there is nothing to blank or remove.
func TestCreateFailureIsPlain(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "new.img")
	src := &stuckSource{info: source.Info{Kind: "test", Size: 1 << 62, ChunkSize: 64 << 10}}
	_, err := Run(context.Background(), Request{
		Source: "test", File: p, NoPrompt: true,
		OpenSource: func(string, int64) (source.Source, error) { return src, nil },
		Out:        progress.New(io.Discard, false),
	})
	if err == nil || errors.Is(err, ErrIncomplete) {
		t.Fatalf("Run with a file too large to create = %v, want a plain error", err)
	}
	t.Logf("Run = %v", err)
	if _, serr := os.Stat(p); !os.IsNotExist(serr) {
		t.Errorf("%s left behind after failing to create it (stat: %v): %v", p, serr, err)
	}
}
