// Command asr-init is the asr imaging appliance's /init: see package appliance.
package main

import "github.com/asrlinux/asr/appliance"

// Version is set at build time with -ldflags "-X main.Version=...".
var Version = "0.1.0-dev"

func main() { appliance.Main(Version) }
