package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"aead.dev/minisign"

	"github.com/asrlinux/asr/internal/image"
	"github.com/asrlinux/asr/internal/source"
	"github.com/asrlinux/asr/internal/sourceurl"
	"github.com/asrlinux/asr/internal/trust"
)

func runSign(ctx context.Context, e env, args []string) error {
	fs := newFlags("sign")
	src := fs.String("source", "", "the prepared `IMAGE` file to sign (changed in place: only its signature trailer)")
	key := fs.String("key", "", "the minisign secret `KEY` file to sign with (from minisign -G)")
	pwFile := fs.String("password-file", "", "the secret key's password is `FILE`'s first line (else $"+trust.PasswordEnv+", else a prompt)")
	remove := fs.String("remove", "", "remove the signature made by this `KEYID` (hex, as asr info shows it)")
	export := fs.String("minisig", "", "write a signature as the minisign file `OUT` (ending in .minisig), and the signed 64 bytes beside it, for minisign -V")
	keyID := fs.String("key-id", "", "with --minisig: the signature of this `KEYID` to write, when the image has several")
	add := fs.String("add-minisig", "", "add the .minisig `FILE` that minisign -S made over the image's first 64 bytes")
	if err := parse(e, fs, manSign, args); err != nil {
		return err
	}
	actions := 0
	for _, s := range []string{*key, *remove, *export, *add} {
		if s != "" {
			actions++
		}
	}
	switch {
	case *src == "":
		return usageError("sign: --source is required (the prepared image file to sign)")
	case actions != 1:
		return usageError("sign: give one of --key KEY (sign), --remove KEYID, --minisig OUT or --add-minisig FILE")
	case *keyID != "" && *export == "":
		return usageError("sign: --key-id goes with --minisig")
	case *pwFile != "" && *key == "":
		return usageError("sign: --password-file goes with --key")
	case *export != "" && !strings.HasSuffix(*export, ".minisig"):
		return usageError("sign: --minisig %s must end in .minisig (the signed bytes go to the same name without it)", *export)
	}
	mode := os.O_RDWR
	if *export != "" {
		mode = os.O_RDONLY
	}
	f, st, im, err := openImageFile(*src, mode, "signs")
	if err != nil {
		return err
	}
	defer f.Close()
	defer im.Close()
	sigs, err := image.ReadSignatures(f, st.Size(), im.Manifest)
	if err != nil {
		if *key == "" || !errors.Is(err, image.ErrSignatures) {
			return fmt.Errorf("source %s: %w", *src, err)
		}
		// Signing rewrites the trailer: it repairs one that an interrupted
		// asr sign left behind.
		fmt.Fprintf(e.stderr, "asr: warning: %s: %v; signing replaces the damaged trailer\n", *src, err)
		sigs = nil
	}

	switch {
	case *export != "":
		return exportMinisig(e, *src, im, sigs, *export, *keyID)
	case *remove != "":
		id, err := trust.ParseID(*remove)
		if err != nil {
			return usageError("sign: --remove: %v", err)
		}
		left, n := trust.Remove(sigs, id)
		if n == 0 {
			return fmt.Errorf("%s has no signature by key ID %s (it has %s)", *src, trust.FormatID(id), signerList(sigs))
		}
		if err := image.WriteSignatures(f, im.Manifest, left); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "Removed the signature by key ID %s from %s; it has %s\n", trust.FormatID(id), *src, signerList(left))
		return nil
	case *add != "":
		b, err := readLimited(*add, image.MaxSignatureLen)
		if err != nil {
			return fmt.Errorf("--add-minisig: %w", err)
		}
		all, err := trust.Add(sigs, b)
		if err != nil {
			return fmt.Errorf("--add-minisig %s: %w", *add, err)
		}
		if err := image.WriteSignatures(f, im.Manifest, all); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "Added the signature by key ID %s to %s (not checked here: asr info --trusted-key PUB checks it); it has %s\n",
			trust.FormatID(trust.SignerIDs([][]byte{b})[0]), *src, signerList(all))
		return nil
	}
	sk, err := loadSecretKey(e, *key, *pwFile)
	if err != nil {
		return err
	}
	all, err := signHeader(sk, im.Header, im.Digest, sigs)
	if err != nil {
		return fmt.Errorf("%s: %w", *src, err)
	}
	if err := image.WriteSignatures(f, im.Manifest, all); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "Signed %s (digest sha256:%s) with key ID %s; it has %s\n",
		*src, im.Digest, trust.FormatID(sk.ID()), signerList(all))
	return nil
}

// loadSecretKey reads --key, asking for its password (if it has one) from
// --password-file, $ASR_KEY_PASSWORD or the terminal.
func loadSecretKey(e env, path, pwFile string) (minisign.PrivateKey, error) {
	pw := trust.Password{File: pwFile, Env: e.getenv(trust.PasswordEnv)}
	if e.isTerminal() {
		pw.Prompt = trust.TerminalPrompt(os.Stdin, e.stderr)
	}
	return trust.LoadSecretKey(path, pw)
}

// signHeader adds (or replaces) the signature of sk over an image's header,
// after checking it with sk's public key.
func signHeader(sk minisign.PrivateKey, header []byte, d image.Digest, sigs [][]byte) ([][]byte, error) {
	sig := trust.Sign(sk, header, d, time.Now())
	if !minisign.Verify(sk.Public().(minisign.PublicKey), header, sig) {
		return nil, errors.New("the new signature does not verify with its own key (a damaged secret key?)")
	}
	return trust.Add(sigs, sig)
}

func exportMinisig(e env, src string, im *image.Image, sigs [][]byte, out, keyID string) error {
	if len(sigs) == 0 {
		return fmt.Errorf("%s is not signed: nothing to write", src)
	}
	sig := sigs[0]
	if keyID != "" {
		id, err := trust.ParseID(keyID)
		if err != nil {
			return usageError("sign: --key-id: %v", err)
		}
		sig = nil
		for _, s := range sigs {
			if ids := trust.SignerIDs([][]byte{s}); len(ids) == 1 && ids[0] == id {
				sig = s
			}
		}
		if sig == nil {
			return fmt.Errorf("%s has no signature by key ID %s (it has %s)", src, trust.FormatID(id), signerList(sigs))
		}
	} else if len(sigs) > 1 {
		return usageError("sign: %s has %s: say which to write with --key-id", src, signerList(sigs))
	}
	msg := strings.TrimSuffix(out, ".minisig")
	if err := os.WriteFile(msg, im.Header, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(out, sig, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "Wrote the signed bytes (the image's 64-byte header) to %s and the signature to %s; check them with:\n  minisign -V -p KEY.pub -m %s -x %s\n",
		msg, out, msg, out)
	return nil
}

func signerList(sigs [][]byte) string {
	ids := trust.SignerIDs(sigs)
	if len(ids) == 0 {
		return "no signatures"
	}
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = trust.FormatID(id)
	}
	if len(s) == 1 {
		return "1 signature, by key ID " + s[0]
	}
	return fmt.Sprintf("%d signatures, by key IDs %s", len(s), strings.Join(s, ", "))
}

func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes: not a minisign signature", path, limit)
	}
	return b, nil
}

// listFlag is a flag that may be given several times.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

// trustFlags say which keys a machine trusts: --trusted-key (repeatable)
// and --trusted-keys-dir (default /etc/asr/trusted-keys, when it exists).
type trustFlags struct {
	files listFlag
	dir   *string
	fs    *flag.FlagSet
}

func addTrustFlags(fs *flag.FlagSet) *trustFlags {
	t := &trustFlags{fs: fs}
	fs.Var(&t.files, "trusted-key", "trust the minisign public key in file `PUB` (repeatable); with any trusted key, only images signed by one are restored")
	t.dir = fs.String("trusted-keys-dir", trust.DefaultDir, "trust every minisign public key (*.pub) in `DIR` (the default may be missing; a DIR given must exist)")
	return t
}

// load reads the trusted keys. The default directory may be missing; a
// directory given on the command line must exist.
func (t *trustFlags) load() ([]trust.Key, error) {
	given := false
	t.fs.Visit(func(f *flag.Flag) { given = given || f.Name == "trusted-keys-dir" })
	if given {
		if st, err := os.Stat(*t.dir); err != nil || !st.IsDir() {
			return nil, usageError("--trusted-keys-dir %s is not a directory", *t.dir)
		}
	}
	return trust.Load(t.files, *t.dir)
}

// openTrusted opens a source and, when any key is trusted, refuses it
// unless a trusted key signed it: before the restore engine writes or
// erases anything (sourceurl.CheckTrust, which the appliance uses too). A
// local raw image or disk (a clone) carries no signature and is let
// through, with a line saying it was not checked.
func openTrusted(ctx context.Context, s, disk string, maxSize int64, f sourceFlags, keys []trust.Key, log func(string, ...any)) (source.Source, error) {
	src, err := openSource(ctx, s, disk, maxSize, f, log)
	if err != nil {
		return nil, err
	}
	return sourceurl.CheckTrust(src, sourceurl.Policy{Keys: keys, LocalClones: true, Log: log})
}

// openImageFile opens the prepared image file at path for asr sign and
// asr push (verb says which, for the message) and reads its header and
// manifest: both refuse anything else before they touch it or send it.
func openImageFile(path string, mode int, verb string) (*os.File, os.FileInfo, *image.Image, error) {
	f, err := os.OpenFile(path, mode, 0)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("source %s: %w", path, err)
	}
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = fmt.Errorf("source %s is not a file: asr %s prepared image files (asr imagescan makes them)", path, verb)
	} else if err != nil {
		err = fmt.Errorf("source %s: %w", path, err)
	}
	if err != nil {
		f.Close()
		return nil, nil, nil, err
	}
	im, err := image.Open(f, st.Size())
	if err != nil {
		f.Close()
		return nil, nil, nil, fmt.Errorf("source %s: %w (asr %s prepared images: make one with asr imagescan)", path, err, verb)
	}
	return f, st, im, nil
}
