package sourceurl

import (
	"fmt"

	"github.com/asrlinux/asr/internal/safetext"
	"github.com/asrlinux/asr/internal/source"
	"github.com/asrlinux/asr/internal/trust"
)

// Policy is what a machine trusts: `asr restore` and the appliance apply
// it to every source they open, through CheckTrust, so that both refuse
// the same images with the same words.
type Policy struct {
	// Keys are the trusted keys. With none, nothing is checked.
	Keys []trust.Key
	// LocalClones lets a local source that is not a prepared image (a
	// raw image file or a block device: a clone) through unchecked, with
	// a line saying so: the person at the machine chose that file. The
	// appliance, which takes what it finds, refuses them instead.
	LocalClones bool
	// Log hears the signer on success, one line.
	Log func(format string, a ...any)
}

// CheckTrust applies p to an opened source, before the restore engine
// writes or erases anything. When any key is trusted, it refuses src
// unless a trusted key signed it: the error says which key IDs signed it
// and why none counted (or that it was unsigned), src is closed, and a
// source that reports back (a multicast server's table) is told why. On
// success it logs the signer and returns src.
func CheckTrust(src source.Source, p Policy) (source.Source, error) {
	log := p.Log
	if log == nil {
		log = func(string, ...any) {}
	}
	info := src.Info()
	if len(p.Keys) == 0 {
		if len(info.Signatures) > 0 {
			log("Signed by %s (not checked: no key is trusted here)", trust.IDList(trust.SignerIDs(info.Signatures)))
		}
		return src, nil
	}
	if p.LocalClones && info.Manifest == nil && info.Path != "" {
		log("Source %s is a %s: not signature-checked (only prepared images carry signatures)", safetext.Line(info.Path), info.Kind)
		return src, nil
	}
	signer, err := trust.CheckImage(p.Keys, info.Header, info.Signatures, info.SignaturesErr)
	if err != nil {
		// No URL in the message: it may hold a password (the sources
		// redact their own messages; this one names none).
		err = fmt.Errorf("image refused, nothing was written: %w", err)
		if fin, ok := src.(source.Finisher); ok {
			fin.Finished(err) // a multicast server's table shows why
		}
		src.Close()
		return nil, err
	}
	log("Signed by %s", signer)
	return src, nil
}
