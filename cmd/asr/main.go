// Command asr restores prepared disk images onto disks, locally, from a web
// server or from a multicast stream. See `asr help`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/asrlinux/asr/internal/redact"
	"golang.org/x/sys/unix"
)

// Version is set at build time with -ldflags "-X main.Version=...".
var Version = "0.1.0-dev"

// exitError carries an exit status through run.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageError(format string, a ...any) error {
	return &exitError{2, fmt.Errorf(format, a...)}
}

// env is what a verb may use of the outside world; tests build their own.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	isTerminal     func() bool
}

// signalError is the cause of the context a signal cancelled: the run's
// errors name it, and the exit status is the shell's 128+N for it.
type signalError struct{ sig syscall.Signal }

func (e *signalError) Error() string { return "by " + unix.SignalName(e.sig) }

// notifyContext is signal.NotifyContext with the signal as the cause. Later
// signals are caught and ignored: the first one's cleanup (blanking a disk's
// first chunk) must not be cut short by an impatient second Ctrl-C.
func notifyContext(parent context.Context, sigs ...os.Signal) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(parent)
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, sigs...)
	go func() {
		select {
		case s := <-ch:
			if n, ok := s.(syscall.Signal); ok {
				cancel(&signalError{n})
			}
		case <-ctx.Done():
		}
	}()
	return ctx, func() { cancel(nil) }
}

func main() {
	ctx, stop := notifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	e := env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv, isTerminal: stdinIsTerminal}
	err := run(ctx, e, os.Args[1:])
	code := signalStatus(ctx, exitStatus(os.Stderr, err))
	stop()
	os.Exit(code)
}

// signalStatus is code, or the shell's status for a process a signal
// ended (128+N) when a signal cancelled ctx and the run failed.
func signalStatus(ctx context.Context, code int) int {
	var sig *signalError
	if code != 0 && errors.As(context.Cause(ctx), &sig) {
		return 128 + int(sig.sig)
	}
	return code
}

// exitStatus prints err (already redacted by run) as asr's last line and
// returns the exit status: 0, 1 when the operation failed, 2 when the
// command line is wrong.
func exitStatus(stderr io.Writer, err error) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintf(stderr, "asr: %v%s\n", err, hint(err))
	return statusOf(err)
}

// statusOf is the exit status for a failure: 2 when the command line is
// wrong, else 1.
func statusOf(err error) int {
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return 1
}

// run runs one verb. Everything it prints, and the error it returns, is
// redacted: a source URL's password or a presigned URL's signature never
// reaches the terminal or a log, whichever package quoted the URL.
func run(ctx context.Context, e env, args []string) error {
	e.stdout, e.stderr = redact.Writer(e.stdout), redact.Writer(e.stderr)
	return redact.Error(runVerb(ctx, e, args))
}

func runVerb(ctx context.Context, e env, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(e.stderr, usageMain)
		return &exitError{2, errors.New("no verb given: see 'asr help'")}
	}
	verb, rest := args[0], args[1:]
	switch verb {
	case "restore", "restoreexact":
		return runRestore(ctx, e, rest)
	case "imagescan":
		return runImagescan(ctx, e, rest)
	case "info":
		return runInfo(ctx, e, rest)
	case "sign":
		return runSign(ctx, e, rest)
	case "push":
		return runPush(ctx, e, rest)
	case "version", "-version", "--version":
		fmt.Fprintf(e.stdout, "asr %s\n", Version)
		return nil
	case "help", "-h", "-help", "--help":
		return runHelp(e, rest)
	case "server":
		return runServer(ctx, e, rest)
	case "browse":
		return runBrowse(ctx, e, rest)
	}
	return usageError("unknown verb %q: see 'asr help'", verb)
}

// newFlags makes a flag set whose errors go through run, not os.Exit.
func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parse parses args, turning flag errors into one-line usage errors and -h
// into the verb's manual.
func parse(e env, fs *flag.FlagSet, manual string, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(e.stdout, expand(manual, fs))
			return flag.ErrHelp
		}
		return usageError("%s: %v (see 'asr help %s')", fs.Name(), err, fs.Name())
	}
	if fs.NArg() > 0 {
		return usageError("%s: unexpected argument %q (options take the form --name value; see 'asr help %s')", fs.Name(), fs.Arg(0), fs.Name())
	}
	return nil
}

func stdinIsTerminal() bool {
	_, err := ioctlGetTermios(0)
	return err == nil
}
