// Package initramfs builds the asr appliance's initramfs with u-root's
// builder (mkuimage's uimage, binary mode): a gzip-compressed newc cpio
// holding /init (the static asr-init), the kernel modules for common storage
// and network hardware with every module they depend on, the modules.dep,
// modules.alias and modules.builtin that describe exactly those, and the
// device nodes the kernel needs before /init mounts devtmpfs.
//
// It does not build kernels: it takes an installed one's modules (FindKernel),
// and the appliance boots that kernel's image. The same inputs give the same
// bytes: files go in sorted, with zero times and owners, and the binaries are
// built with -trimpath and no build ID.
package initramfs

import (
	"compress/gzip"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"github.com/u-root/gobusybox/src/pkg/golang"
	"github.com/u-root/mkuimage/cpio"
	"github.com/u-root/mkuimage/uimage"
	"github.com/u-root/mkuimage/uimage/builder"
	uinitramfs "github.com/u-root/mkuimage/uimage/initramfs"
	"github.com/u-root/uio/llog"
)

// InitPackage is the Go command that becomes /init.
const InitPackage = "github.com/asrlinux/asr/cmd/asr-init"

// Options say what goes into the initramfs.
type Options struct {
	Output  string   // the .cpio.gz to write; replaced only once complete
	Kernel  Kernel   // whose modules to include (FindKernel)
	Modules []string // module names; nil means DefaultModules
	// FirmwareDir is where the modules' firmware files are looked for,
	// directories separated by ':'; "" means DefaultFirmwareDir. Files
	// not there are left out (Result.MissingFirmware): only the hardware
	// needing them stays dark.
	FirmwareDir string
	Version     string // stamped into /init as main.Version
	// Init is the Go package built as /init; "" means InitPackage.
	Init string
	// Commands are more Go packages to build into /bin; nil means
	// DefaultCommands, the shell for asr.after=shell and asr.debug.
	Commands []string
	// Dir is where go build runs: inside the module that has the packages
	// ("" is the current directory).
	Dir    string
	GOARCH string // "" is the architecture of this program
	// CACerts is a PEM bundle put at /etc/ssl/certs/ca-certificates.crt,
	// where Go looks for the system's roots: without it no https:// source
	// verifies. "" means DefaultCACerts when that exists; "-" means none.
	CACerts string
	// TrustedKeys are minisign public key files (from `minisign -G`) put
	// in etc/asr/trusted-keys, where the appliance looks at boot: with any
	// key there it restores only images one of them signed. Each is
	// checked here, so a wrong file fails the build, not the restore.
	TrustedKeys []string
	// NoGrowTools leaves out what asr.grow needs (GrowTools, their
	// shared libraries, GrowModules): 5.6 MiB of the compressed
	// initramfs (13.8 against 19.4 MiB with Debian 12's kernel; 2.1 MiB of
	// it the xfs and btrfs drivers). The appliance then refuses asr.grow
	// before writing.
	NoGrowTools bool
	// Log hears each step, one line each; nil is silent.
	Log func(format string, a ...any)
}

// DefaultCommands is u-root's shell, for asr.after=shell and asr.debug: a
// failed restore can be looked into on the machine itself (1.8 MiB).
var DefaultCommands = []string{"github.com/u-root/u-root/cmds/core/gosh"}

// DefaultCACerts is Debian's bundle of trusted CAs (package ca-certificates).
const DefaultCACerts = "/etc/ssl/certs/ca-certificates.crt"

// Result describes the initramfs written.
type Result struct {
	Path    string
	Size    int64
	Kernel  Kernel
	Modules []string // module files included, by name
	Builtin []string // wanted modules the kernel has built in
	// Firmware are the firmware files carried, under lib/firmware.
	Firmware []string
	// MissingFirmware are "module: file" pairs of firmware the modules
	// name and the build machine does not have (scripts/deps.sh fetches
	// Debian's firmware-realtek, firmware-bnx2x and firmware-misc-nonfree
	// from non-free-firmware into FirmwareCacheDir to carry them).
	MissingFirmware []string
	// TrustedKeys are the key IDs baked in (trust.FormatID), in order.
	TrustedKeys []string
	// Tools are the programs carried for asr.grow, and ToolLibraries
	// the shared libraries they load (absolute paths).
	Tools, ToolLibraries []string
	// MissingTools are GrowTools the build machine lacks: the appliance
	// cannot grow the filesystems they grow.
	MissingTools []string
}

// Build writes the initramfs o describes:
//  1. picks the modules and their dependencies from the kernel's modules.dep;
//  2. puts them (decompressed), their indexes and /dev/console into a base
//     archive;
//  3. builds /init and the other commands as static binaries (CGO off);
//  4. lets u-root's uimage assemble it all, written through gzip.
func Build(o Options) (*Result, error) {
	logf := o.Log
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if o.Output == "" {
		return nil, fmt.Errorf("initramfs: no output path")
	}
	if o.Kernel.ModulesDir == "" {
		return nil, fmt.Errorf("initramfs: no kernel given (see FindKernel)")
	}
	if strings.ContainsAny(o.Version, " \t'\"") {
		return nil, fmt.Errorf("initramfs: version %q: spaces and quotes do not survive -ldflags", o.Version)
	}
	names := o.Modules
	if names == nil {
		names = DefaultModules
	}
	arch := o.GOARCH
	if arch == "" {
		arch = runtime.GOARCH
	}
	tools := &ToolSet{}
	switch {
	case o.NoGrowTools:
	case arch != runtime.GOARCH:
		// The build machine's programs would not run there.
		tools.Missing = GrowTools
		logf("asr.grow tools: not carried: they are this machine's (%s), not %s's", runtime.GOARCH, arch)
	default:
		names = append(slices.Clip(names), GrowModules...)
		var err error
		if tools, err = Tools("/", GrowTools); err != nil {
			return nil, fmt.Errorf("initramfs: %w", err)
		}
		logf("asr.grow tools: %d programs, %d libraries, %.1f MiB before compression; not on this machine: %v",
			len(tools.Programs), len(tools.Libraries), float64(tools.Size())/(1<<20), tools.Missing)
	}
	set, err := Modules(o.Kernel.ModulesDir, names)
	if err != nil {
		return nil, err
	}
	logf("kernel %s: %d module files for %d drivers (%d built in)", o.Kernel.Version, len(set.Modules), len(names), len(set.Builtin))
	fwDir := o.FirmwareDir
	if fwDir == "" {
		fwDir = DefaultFirmwareDir
	}
	missingFW, err := set.AddFirmware(fwDir)
	if err != nil {
		return nil, fmt.Errorf("initramfs: %w", err)
	}
	logf("firmware: %d files from %s; %d named by the modules are not installed there", len(set.Firmware), fwDir, len(missingFW))
	keys, err := trustedKeys(o.TrustedKeys)
	if err != nil {
		return nil, err
	}
	base, err := baseArchive(o.Kernel.Version, set, keys)
	if err != nil {
		return nil, err
	}
	if err := tools.addTo(base); err != nil {
		return nil, fmt.Errorf("initramfs: %w", err)
	}

	tmp, err := os.MkdirTemp("", "asr-initramfs-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)

	initPkg := o.Init
	if initPkg == "" {
		initPkg = InitPackage
	}
	env := golang.Default(golang.DisableCGO(), golang.WithGOOS("linux"), golang.WithGOARCH(arch),
		golang.WithWorkingDir(o.Dir),
		// The go found on PATH, not one under build.Default.GOROOT, which
		// is empty in a binary built with -trimpath.
		golang.WithCompiler("go"))
	bin := binaryBuilder{ldflags: "-s -w -buildid= -X main.Version=" + o.Version, logf: logf}

	var files []string
	switch certs := o.CACerts; certs {
	case "-":
	case "":
		if _, err := os.Stat(DefaultCACerts); err == nil {
			files = append(files, DefaultCACerts+":etc/ssl/certs/ca-certificates.crt")
		} else {
			logf("no %s: https:// sources will not verify (install ca-certificates)", DefaultCACerts)
		}
	default:
		if _, err := os.Stat(certs); err != nil {
			return nil, fmt.Errorf("initramfs: CA bundle: %w", err)
		}
		files = append(files, certs+":etc/ssl/certs/ca-certificates.crt")
	}

	commands := o.Commands
	if commands == nil {
		commands = DefaultCommands
	}

	part := o.Output + ".part"
	defer os.Remove(part)
	logger := llog.New(slog.LevelWarn, func(format string, a ...any) { logf(format, a...) })
	err = uimage.Create(logger,
		uimage.WithReplaceEnv(env),
		uimage.WithTempDir(tmp),
		uimage.WithCommands(nil, bin, append([]string{initPkg}, commands...)...),
		uimage.WithInit(path.Base(initPkg)),
		uimage.WithBaseArchive(base),
		uimage.WithFiles(files...),
		// Our binaries are static and the modules are not programs; the
		// grow tools' libraries are found by Tools.
		uimage.WithSkipLDD(),
		uimage.WithOutput(gzipCPIO{path: part}),
	)
	if err != nil {
		return nil, fmt.Errorf("initramfs: %w", err)
	}
	if err := os.Rename(part, o.Output); err != nil {
		return nil, fmt.Errorf("initramfs: %w", err)
	}
	st, err := os.Stat(o.Output)
	if err != nil {
		return nil, err
	}
	res := &Result{Path: o.Output, Size: st.Size(), Kernel: o.Kernel, Modules: set.Names(), Builtin: set.Builtin, MissingFirmware: missingFW}
	for _, f := range set.Firmware {
		res.Firmware = append(res.Firmware, f.Name)
	}
	for _, k := range keys {
		res.TrustedKeys = append(res.TrustedKeys, k.id)
	}
	res.Tools, res.ToolLibraries, res.MissingTools = tools.Programs, tools.Libraries, tools.Missing
	return res, nil
}

// baseArchive holds what is not a Go program: the device nodes the kernel
// opens before /init runs (without /dev/console, init has no stdout), the
// mount points, and the kernel modules with their indexes.
func baseArchive(kver string, set *ModuleSet, keys []keyFile) (*cpio.Archive, error) {
	modDir := path.Join("lib", "modules", kver)
	recs := []cpio.Record{
		cpio.Directory("dev", 0o755),
		cpio.CharDev("dev/console", 0o600, 5, 1),
		cpio.CharDev("dev/null", 0o666, 1, 3),
		cpio.Directory("etc", 0o755),
		// e2fsck and resize2fs look here to tell whether a filesystem is
		// mounted, as on any Linux system.
		cpio.Symlink("etc/mtab", "/proc/self/mounts"),
		cpio.Directory("proc", 0o555),
		cpio.Directory("run", 0o755),
		cpio.Directory("sys", 0o555),
		cpio.Directory("tmp", 0o1777),
		cpio.Directory("lib", 0o755),
		cpio.Directory("lib/modules", 0o755),
		cpio.Directory(modDir, 0o755),
		cpio.StaticRecord(set.Dep, cpio.Info{Name: path.Join(modDir, "modules.dep"), Mode: cpio.S_IFREG | 0o644}),
		cpio.StaticRecord(set.Alias, cpio.Info{Name: path.Join(modDir, "modules.alias"), Mode: cpio.S_IFREG | 0o644}),
		cpio.StaticRecord(set.BuiltIn, cpio.Info{Name: path.Join(modDir, "modules.builtin"), Mode: cpio.S_IFREG | 0o644}),
	}
	if len(keys) > 0 {
		recs = append(recs, cpio.Directory("etc/asr", 0o755), cpio.Directory(TrustedKeysDir, 0o755))
	}
	for _, k := range keys {
		recs = append(recs, cpio.StaticRecord(k.text, cpio.Info{Name: path.Join(TrustedKeysDir, k.id+".pub"), Mode: cpio.S_IFREG | 0o644}))
	}
	for _, f := range set.Firmware {
		recs = append(recs, cpio.StaticRecord(f.Data, cpio.Info{Name: path.Join("lib", "firmware", f.Name), Mode: cpio.S_IFREG | 0o644}))
	}
	for _, m := range set.Modules {
		// uimage adds the missing parent directories and sorts all
		// names, so each directory comes before what it holds.
		b, err := m.Read()
		if err != nil {
			return nil, fmt.Errorf("initramfs: %w", err)
		}
		recs = append(recs, cpio.StaticRecord(b, cpio.Info{Name: path.Join(modDir, m.Path), Mode: cpio.S_IFREG | 0o644}))
	}
	a, err := cpio.ArchiveFromRecords(recs)
	if err != nil {
		return nil, fmt.Errorf("initramfs: %w", err)
	}
	return a, nil
}

// binaryBuilder is u-root's binary mode, one static binary per command in
// /bin, without the `go build -a` of builder.Binary: forcing every package
// to rebuild takes minutes here and buys nothing now that Go's build cache is
// keyed by content. -trimpath and an empty build ID keep the binaries
// reproducible; inlining stays on, since the restore's hot loops need it.
type binaryBuilder struct {
	ldflags string
	logf    func(string, ...any)
}

var _ builder.Builder = binaryBuilder{}

// DefaultBinaryDir implements builder.Builder.
func (binaryBuilder) DefaultBinaryDir() string { return "bin" }

// Build implements builder.Builder.
func (b binaryBuilder) Build(_ *llog.Logger, af *uinitramfs.Files, o builder.Opts) error {
	if o.Env == nil {
		return builder.ErrEnvMissing
	}
	dir := filepath.Join(o.TempDir, o.BinaryDir)
	for _, p := range o.Packages {
		out := filepath.Join(dir, filepath.Base(p))
		b.logf("go build %s", p)
		cmd := o.Env.GoCmd("build", "-trimpath", "-ldflags", b.ldflags, "-o", out, p)
		if msg, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%w: go build %s: %v: %s", builder.ErrBinaryFailed, p, err, strings.TrimSpace(string(msg)))
		}
	}
	return af.AddFile(dir, o.BinaryDir)
}

// gzipCPIO writes the archive as newc cpio through gzip, which every kernel
// unpacks (CONFIG_RD_GZIP).
type gzipCPIO struct{ path string }

func (g gzipCPIO) OpenWriter() (uinitramfs.Writer, error) {
	f, err := os.Create(g.path)
	if err != nil {
		return nil, err
	}
	zw, err := gzip.NewWriterLevel(f, gzip.BestCompression)
	if err != nil {
		f.Close()
		return nil, err
	}
	return &gzipWriter{RecordWriter: cpio.Newc.Writer(zw), zw: zw, f: f}, nil
}

type gzipWriter struct {
	cpio.RecordWriter
	zw *gzip.Writer
	f  *os.File
}

// Finish writes the trailer and flushes everything to disk.
func (w *gzipWriter) Finish() error {
	err := cpio.WriteTrailer(w.RecordWriter)
	if e := w.zw.Close(); err == nil {
		err = e
	}
	if e := w.f.Sync(); err == nil {
		err = e
	}
	if e := w.f.Close(); err == nil {
		err = e
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", w.f.Name(), err)
	}
	return nil
}
