package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/asrlinux/asr/internal/config"
	"github.com/asrlinux/asr/internal/dashboard"
	"github.com/asrlinux/asr/internal/multicast"
	"github.com/asrlinux/asr/internal/trust"
)

// httpAddress is where the dashboard goes: --http, else the configuration's
// HTTP Address; invalid when neither says.
func httpAddress(flagValue string, cfg *config.Server) (netip.AddrPort, error) {
	if flagValue == "" {
		return cfg.HTTPAddress, nil
	}
	ap, err := config.ParseHTTPAddress(flagValue)
	if err != nil {
		return ap, usageError("server: --http %v", err)
	}
	return ap, nil
}

// listenDashboard binds the dashboard's address before the stream starts,
// so that an address in use or not on this machine stops the server at
// once rather than after the clients came.
func listenDashboard(ap netip.AddrPort) (net.Listener, error) {
	ln, err := net.Listen("tcp", ap.String())
	if err != nil {
		return nil, fmt.Errorf("dashboard on %s: %w (--http or HTTP Address: an address of this machine and a free port)", ap, err)
	}
	return ln, nil
}

// startDashboard serves srv's dashboard on ln until ctx ends; a failure
// of the dashboard is logged, and the stream goes on.
func startDashboard(ctx context.Context, ln net.Listener, srv *multicast.Server, src string, cfg *config.Server, logf func(string, ...any)) error {
	im := dashboard.Image{Name: filepath.Base(src), Size: srv.Size(), Digest: "sha256:" + srv.Digest().String(),
		Stream: srv.Stream().String(), Group: fmt.Sprintf("%s port %d", cfg.Group, cfg.Port+1), Rate: cfg.StreamRate()}
	if st, err := os.Stat(src); err == nil {
		im.Stored = st.Size()
	}
	im.Chunks, _ = srv.Chunks()
	for _, id := range trust.SignerIDs(srv.Signatures()) {
		im.Signers = append(im.Signers, "key ID "+trust.FormatID(id))
	}
	d, err := dashboard.New(dashboard.Options{Server: srv, Image: im, Version: Version})
	if err != nil {
		return err
	}
	go d.Run(ctx)
	go func() {
		if err := d.Serve(ctx, ln); err != nil {
			logf("asr: %v", err)
		}
	}()
	logf("Dashboard on http://%s/ (metrics at /metrics; read-only, no authentication: keep it on the imaging network)", ln.Addr())
	return nil
}
