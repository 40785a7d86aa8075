package dnssd

import (
	"context"
	"net"
	"testing"
	"time"
)

// Two asr servers on one host (two images on two ports) are two services:
// a browser on another host sees both, each with its own port and image.
func TestBrowseSeesTwoServersOnOneHost(t *testing.T) {
	_, srvHost, peer := lab(t, "n6b")
	ip := []net.IP{net.ParseIP("198.18.0.1").To4()}
	for _, s := range []struct {
		port  int
		image string
		extra []string
	}{{7800, "lab.asr", nil}, {7810, "kiosk.asr", []string{"signer=3A5F0B2C9D1E4F60,77E1C2D3A4B5C6D7"}}} {
		var ad *Advertisement
		if err := srvHost.Do(func() (err error) {
			ad, err = Advertise(s.port, ip, s.image, "d1g3st", nil, s.extra...)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer ad.Stop()
	}
	var found []Service
	for range 3 {
		if err := peer.Do(func() (err error) {
			found, err = Browse(context.Background(), 2*time.Second, nil)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if len(found) == 2 {
			break
		}
	}
	got := map[int]string{}
	for _, s := range found {
		got[s.Port] = s.Image + " " + s.Addr.String() + " " + s.Signer
	}
	if len(found) != 2 || got[7800] != "lab.asr 198.18.0.1 " || got[7810] != "kiosk.asr 198.18.0.1 3A5F0B2C9D1E4F60,77E1C2D3A4B5C6D7" {
		t.Errorf("Browse found %+v; want lab.asr on 7800 (unsigned) and kiosk.asr on 7810 (signer TXT) at 198.18.0.1", found)
	}
}
