package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/asrlinux/asr/internal/netlab"
)

// dashAddr is where the lab's asr server serves its dashboard, inside the
// server's namespace.
const dashAddr = "198.18.0.1:8080"

// forward makes the dashboard, which lives inside namespace h, reachable
// from this machine's browser at 127.0.0.1:port (0: any free port): each
// connection accepted there is joined to one opened inside h. Nothing
// but 127.0.0.1 is listened on. It returns the local address; stop ends
// it.
func forward(h *netlab.Host, port int) (addr string, stop func() error, err error) {
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return "", nil, fmt.Errorf("dashboard forward: %w", err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		open  = map[net.Conn]bool{}
		ended bool
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			if ended {
				mu.Unlock()
				c.Close()
				return
			}
			open[c] = true
			wg.Add(1)
			mu.Unlock()
			go func() {
				defer wg.Done()
				pipe(h, c)
				mu.Lock()
				delete(open, c)
				mu.Unlock()
			}()
		}
	})
	// Stopping closes the listener and every open connection: a browser's
	// live page would otherwise hold its stream open for minutes.
	return ln.Addr().String(), func() error {
		err := ln.Close()
		mu.Lock()
		ended = true
		for c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
		return err
	}, nil
}

// pipe joins local connection c to the dashboard inside h until either
// side closes.
func pipe(h *netlab.Host, c net.Conn) {
	defer c.Close()
	var r net.Conn
	if err := h.Do(func() (err error) {
		r, err = net.DialTimeout("tcp", dashAddr, 5*time.Second)
		return err
	}); err != nil {
		return
	}
	defer r.Close()
	// Either side closing ends both: closing c (as stop does) unblocks
	// the copy from r too.
	done := make(chan struct{}, 2)
	go func() { io.Copy(r, c); done <- struct{}{} }()
	go func() { io.Copy(c, r); done <- struct{}{} }()
	<-done
	c.Close()
	r.Close()
	<-done
}

// dashboardSummary is the dashboard's own line about the lab ("All 3
// machines done"), read from its JSON API inside h.
func dashboardSummary(h *netlab.Host) (string, error) {
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
		err = h.Do(func() error {
			var d net.Dialer
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	resp, err := hc.Get("http://" + dashAddr + "/api/clients")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var v struct{ Summary struct{ Text string } }
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&v); err != nil {
		return "", fmt.Errorf("dashboard /api/clients: %w", err)
	}
	return v.Summary.Text, nil
}

// screenshot saves the dashboard as headless Chromium shows it, once its
// live updates have arrived, to path (PNG). Chromium runs in h's
// namespace (its packets stay in the lab) and is driven over a pipe.
func screenshot(ctx context.Context, h *netlab.Host, path, tmp string) error {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		return fmt.Errorf("no chromium to take a screenshot (scripts/deps.sh installs it)")
	}
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, chromedp.ExecPath(chromium),
		chromedp.Flag("headless", true), chromedp.Flag("no-sandbox", true), chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true), chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-dev-shm-usage", true), chromedp.UserDataDir(tmp),
		chromedp.ModifyCmdFunc(func(cmd *exec.Cmd) {
			// ip netns exec keeps the pipe's descriptors (3 and 4) open.
			cmd.Args = append([]string{"ip", "netns", "exec", h.NS}, cmd.Args...)
			cmd.Path, _ = exec.LookPath("ip")
		}))
	defer cancelAlloc()
	bctx, cancelB := chromedp.NewContext(actx)
	defer cancelB()
	if err := chromedp.Do(bctx, chromedp.EmulateViewport(1280, 900), chromedp.Navigate("http://"+dashAddr+"/")); err != nil {
		return fmt.Errorf("chromium: %w", err)
	}
	if _, err := chromedp.Run(bctx, chromedp.Poll[bool](`document.getElementById("conn").textContent.startsWith("live ·")`)); err != nil {
		return fmt.Errorf("chromium: the page got no live update: %w", err)
	}
	png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	if err != nil {
		return fmt.Errorf("chromium: %w", err)
	}
	return os.WriteFile(path, png, 0o644)
}
