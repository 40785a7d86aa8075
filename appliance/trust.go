package appliance

import (
	"fmt"
	"path/filepath"

	"github.com/asrlinux/asr/internal/source"
	"github.com/asrlinux/asr/internal/sourceurl"
	"github.com/asrlinux/asr/internal/trust"
)

// LoadTrustedKeys reads the keys `make initramfs TRUSTED_KEYS=` baked in
// at /etc/asr/trusted-keys (under rootDir, "/" on the appliance) and says
// on the console what they mean. A key file that does not parse stops the
// boot: the build checks them, so that is a damaged initramfs, and going on
// without it would restore what its admin meant to refuse.
func LoadTrustedKeys(rootDir string, logf func(string, ...any)) ([]trust.Key, error) {
	dir := filepath.Join(rootDir, trust.DefaultDir)
	keys, err := trust.LoadDir(dir)
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		logf("trust: no keys in %s: images are restored without a signature check", trust.DefaultDir)
		return nil, nil
	}
	logf("trust: only images signed by %s are restored (%s)", trust.IDList(keyIDs(keys)), trust.DefaultDir)
	return keys, nil
}

// checkTrusted refuses src, before the disk is touched, unless a trusted
// key signed it (sourceurl.CheckTrust, as `asr restore` does). Unlike the
// CLI, the appliance lets no raw image or clone through when keys are
// trusted: it takes what it finds, and those carry no signature.
func checkTrusted(src source.Source, keys []trust.Key, logf func(string, ...any)) (source.Source, error) {
	s, err := sourceurl.CheckTrust(src, sourceurl.Policy{Keys: keys, Log: logf})
	if err != nil && len(keys) > 0 {
		return nil, fmt.Errorf("%w; the disk was not touched", err)
	}
	return s, err
}
