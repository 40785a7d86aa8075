package sourceurl

import (
	"context"
	"errors"
	"net/url"

	"github.com/asrlinux/asr/internal/multicast"
	"github.com/asrlinux/asr/internal/source"
)

const asrHelp = `asr://HOST[:PORT]   a multicast stream from 'asr server' (port 7800 by default): joins
                    at any point of the loop and finishes when every chunk is in
`

func checkASR(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return errors.New("not a valid URL: give asr://HOST[:PORT]")
	}
	if u.Hostname() == "" {
		return errors.New("no host: give asr://HOST[:PORT], the machine running 'asr server'")
	}
	if u.Path != "" && u.Path != "/" {
		return errors.New("a path (" + u.Path + ") is not used: give asr://HOST[:PORT]; the server chooses the image")
	}
	return checkPort(u.Port())
}

func openASR(ctx context.Context, s string, o Options) (source.Source, error) {
	return multicast.Open(ctx, s, multicast.ClientOptions{
		Timeout: o.Timeout, Interface: o.Interface, Name: o.Name, MAC: o.MAC, Disk: o.Disk, Log: o.Log,
	})
}
