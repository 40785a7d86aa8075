package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/asrlinux/asr/internal/config"
	"github.com/asrlinux/asr/internal/dnssd"
	"github.com/asrlinux/asr/internal/multicast"
	"github.com/asrlinux/asr/internal/trust"
)

// servedTable is the client table under a line that says who signed the
// image being served.
func servedTable(signedBy string, srv *multicast.Server, now time.Time) []byte {
	return append([]byte("Image "+signedBy+"\n"), clientTable(srv.Clients(), srv.Forgotten(), srv.Size(), now)...)
}

func runServer(ctx context.Context, e env, args []string) (err error) {
	fs := newFlags("server")
	lf := addLogFormat(fs)
	src := fs.String("source", "", "the prepared `IMAGE` to stream (required)")
	cfgPath := fs.String("config", "", "the configuration `PLIST` (required; see CONFIGURATION)")
	iface := fs.String("interface", "", "send the stream out of interface `IF` (default: as routing says)")
	parity := fs.Int("parity", multicast.DefaultParity, "Reed-Solomon parity per chunk, `PCT` percent of its packets (0 turns it off)")
	httpFlag := fs.String("http", "", "serve the dashboard, /metrics and /api/ on `ADDR` (IP:port; default: the config's HTTP Address, else none)")
	if err := parse(e, fs, manServer, args); err != nil {
		return err
	}
	jlog, err := lf.logger("server", e.stdout)
	if err != nil {
		return err
	}
	if jlog != nil {
		defer func() {
			if err != nil {
				logFailed(ctx, jlog, "", err)
			}
		}()
	}
	switch {
	case *src == "":
		return usageError("server: --source is required (a prepared image)")
	case *cfgPath == "":
		return usageError("server: --config is required (a property list with at least Multicast Address and Data Rate)")
	case *parity < 0 || *parity > 100:
		return usageError("server: --parity must be a percentage from 0 to 100")
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	httpAddr, err := httpAddress(*httpFlag, cfg)
	if err != nil {
		return err
	}
	logf := func(format string, a ...any) { fmt.Fprintf(e.stdout, format+"\n", a...) }
	// On a terminal, a live table of the clients sits below the log.
	var live *board
	var event func(multicast.ServerEvent)
	switch {
	case jlog != nil:
		logf = func(format string, a ...any) { logRecord(jlog, slog.LevelInfo, "log", fmt.Sprintf(format, a...)) }
	case stdoutIsTerminal(e.stdout):
		live = &board{w: e.stdout}
		logf = live.logf
	}
	for _, w := range cfg.Warnings {
		if jlog != nil {
			logRecord(jlog, slog.LevelWarn, "warning", fmt.Sprintf("config %s: %s", *cfgPath, w))
			continue
		}
		logf("asr: warning: config %s: %s", *cfgPath, w)
	}
	p := *parity
	if p == 0 {
		p = -1 // the package's zero means its default
	}
	var srv *multicast.Server
	if jlog != nil {
		event = func(ev multicast.ServerEvent) { logServerEvent(jlog, ev, srv.Size()) }
	}
	srv, err = multicast.NewServer(multicast.ServerOptions{
		Image: *src, Config: cfg, Interface: *iface, Parity: p, Log: logf, Event: event,
	})
	if err != nil {
		return err
	}
	serving := fmt.Sprintf("Serving %s (digest sha256:%s) on group %s port %d, control port %d, %d bytes/s, TTL %d",
		*src, srv.Digest(), cfg.Group, cfg.Port+1, cfg.Port, cfg.StreamRate(), cfg.TTL)
	if jlog == nil {
		logf("%s", serving)
	}
	signedBy := "unsigned"
	var txt []string
	if ids := trust.SignerIDs(srv.Signatures()); len(ids) > 0 {
		signedBy = "signed by " + trust.IDList(ids)
		s := make([]string, len(ids))
		for i, id := range ids {
			s[i] = trust.FormatID(id)
		}
		txt = append(txt, "signer="+strings.Join(s, ","))
	}
	if jlog != nil {
		jlog.LogAttrs(ctx, slog.LevelInfo, serving, slog.String("event", "started"), slog.String("image", *src),
			slog.Int64("size", srv.Size()), slog.String("digest", "sha256:"+srv.Digest().String()), slog.String("signed", signedBy),
			slog.String("group", cfg.Group.String()), slog.Int("port", cfg.Port+1), slog.Int("control_port", cfg.Port),
			slog.Int64("rate", cfg.StreamRate()), slog.Int("ttl", cfg.TTL), slog.String("version", Version))
	}
	logf("Image %s: clients that trust keys check this before erasing anything", signedBy)
	if cfg.DNSSD {
		var ifi *net.Interface
		if *iface != "" {
			if ifi, err = net.InterfaceByName(*iface); err != nil {
				return fmt.Errorf("--interface %s: %w", *iface, err)
			}
		}
		ad, err := dnssd.Advertise(cfg.Port, nil, filepath.Base(*src), srv.Digest().String(), ifi, txt...)
		if err != nil {
			return fmt.Errorf("%w (or set DNS Service Discovery to false in %s)", err, *cfgPath)
		}
		defer ad.Stop()
		logf("Advertising %s over DNS-SD (%s)", filepath.Base(*src), dnssd.ServiceType)
	}
	if httpAddr.IsValid() {
		ln, err := listenDashboard(httpAddr)
		if err != nil {
			return err
		}
		dctx, stop := context.WithCancel(ctx)
		defer stop()
		if err := startDashboard(dctx, ln, srv, *src, cfg, logf); err != nil {
			ln.Close()
			return err
		}
	}
	start := time.Now()
	// SIGUSR1 prints the client table into the log, as dd prints its
	// progress: the view of a server whose output goes to a file or a pipe.
	table := func(title string) {
		if jlog != nil {
			logClients(jlog, title, srv, time.Now())
			return
		}
		logf("%s", title)
		for _, l := range strings.Split(strings.TrimRight(string(servedTable(signedBy, srv, time.Now())), "\n"), "\n") {
			logf("  %s", l)
		}
	}
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	uctx, ustop := context.WithCancel(ctx)
	defer ustop()
	go func() {
		for {
			select {
			case <-uctx.Done():
				return
			case <-usr1:
				table("Clients (SIGUSR1):")
			}
		}
	}()
	if live != nil {
		sctx, stop := context.WithCancel(ctx)
		defer stop()
		go func() {
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-sctx.Done():
					return
				case now := <-t.C:
					live.draw(servedTable(signedBy, srv, now))
				}
			}
		}()
	}
	if err := srv.Serve(ctx); err != nil {
		return flagHint(err)
	}
	table("Clients at stop:")
	if jlog != nil {
		jlog.LogAttrs(ctx, slog.LevelInfo, fmt.Sprintf("Server stopped after %s", time.Since(start).Round(time.Second)),
			slog.String("event", "stopped"), slog.Float64("uptime_s", time.Since(start).Seconds()))
		return nil
	}
	logf("Server stopped after %s", time.Since(start).Round(time.Second))
	return nil
}

// flagHint names the flag behind an error of the multicast package, which
// names none (the appliance has kernel parameters instead).
func flagHint(err error) error {
	var (
		stall *multicast.StallError
		ifErr *multicast.InterfaceError
		route *multicast.RouteError
	)
	switch {
	case errors.As(err, &stall):
		return fmt.Errorf("%w (--timeout)", err)
	case errors.As(err, &ifErr), errors.As(err, &route):
		return fmt.Errorf("%w (--interface)", err)
	}
	return err
}
