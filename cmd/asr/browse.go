package main

import (
	"context"
	"fmt"
	"net"
	"text/tabwriter"
	"time"

	"github.com/asrlinux/asr/internal/dnssd"
	"github.com/asrlinux/asr/internal/safetext"
)

func runBrowse(ctx context.Context, e env, args []string) error {
	fs := newFlags("browse")
	wait := fs.Int("timeout", 3, "wait this many `SECONDS` for answers")
	iface := fs.String("interface", "", "ask on interface `IF` only (default: every interface)")
	if err := parse(e, fs, manBrowse, args); err != nil {
		return err
	}
	if *wait <= 0 {
		return usageError("browse: --timeout must be a positive number of seconds")
	}
	var ifi *net.Interface
	if *iface != "" {
		var err error
		if ifi, err = net.InterfaceByName(*iface); err != nil {
			return fmt.Errorf("--interface %s: %w", *iface, err)
		}
	}
	found, err := dnssd.Browse(ctx, time.Duration(*wait)*time.Second, ifi)
	if err != nil {
		return err
	}
	if len(found) == 0 {
		return fmt.Errorf("no asr servers answered within %d s (is one running with DNS Service Discovery on, on this network?)", *wait)
	}
	w := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tSOURCE\tIMAGE\tDIGEST\tSIGNED BY")
	for _, s := range found {
		digest := s.Digest
		if len(digest) > 16 {
			digest = digest[:16] + "…"
		}
		signer := "unsigned"
		if s.Signer != "" {
			signer = "key ID " + safetext.Short(s.Signer, 80)
		}
		fmt.Fprintf(w, "%s\tasr://%s\t%s\t%s\t%s\n", s.Instance, net.JoinHostPort(s.Addr.String(), fmt.Sprint(s.Port)), s.Image, digest, signer)
	}
	return w.Flush()
}
