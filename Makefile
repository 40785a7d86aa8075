# asr: Apple Software Restore for Linux.
#   make demo   build, make a sample disk, scan it, restore it to a loop device, verify,
#               then boot 3 VMs that restore it over multicast and check their disks
#   make lab    the demo's lab left running (asr server, DHCP, a VM) until Ctrl-C
#   make test   unit tests, loop-device end-to-end tests (as root), brief fuzzing
#   make bench  restore benchmarks against dd, bmaptool and curl (needs root, ~5 min)
#   make lint   gofmt, go vet, staticcheck
#   make initramfs  the appliance: out/asr-initramfs.cpio.gz and out/vmlinuz (KVER=: which kernel's modules)

GO       ?= go
BIN      := bin
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.Version=$(VERSION)
export CGO_ENABLED := 0
STATICCHECK ?= $(shell command -v staticcheck || echo $(HOME)/go/bin/staticcheck)
FUZZTIME ?= 10s
# The fuzzer minimizes each new input it finds; uncapped, that can outlast a
# short -fuzztime, which Go then reports as a failure ("context deadline
# exceeded") though no input failed.
# KVER is the kernel whose modules go into the initramfs; empty: the newest installed.
KVER     ?=

SHELL    := /bin/bash

.PHONY: all build test unit fuzz bench lint demo lab lab-tool deps clean initramfs

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/asr ./cmd/asr

# initramfs builds the appliance: out/asr-initramfs.cpio.gz (/init is asr-init,
# with the disk and NIC drivers of kernel KVER) and out/vmlinuz, that kernel.
# Boot the pair: qemu-system-x86_64 -kernel out/vmlinuz -initrd
# out/asr-initramfs.cpio.gz -append "console=ttyS0 asr.source=http://..."
initramfs: deps
	$(GO) run ./cmd/asr-mkinitramfs -o out/asr-initramfs.cpio.gz -kernel out/vmlinuz \
		-version $(VERSION) $(if $(KVER),-kver $(KVER))

# deps installs what the tests, the demo and the benchmarks use on Debian.
deps:
	./testdata/deps.sh

test: deps lint unit fuzz

# ASR_E2E=1 makes the loop-device tests fail instead of skipping when they
# cannot run (not root, no loop devices): CI must really run them.
unit:
	ASR_E2E=1 $(GO) test -count=1 -timeout 20m ./...

fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParseHeader$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 1s ./internal/image/
	$(GO) test -run '^$$' -fuzz '^FuzzReadManifest$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 1s ./internal/image/
	$(GO) test -run '^$$' -fuzz '^FuzzPartition$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 1s ./internal/partition/
	$(GO) test -run '^$$' -fuzz '^FuzzBuild$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 1s -parallel 1 ./internal/blockmap/
	$(GO) test -run '^$$' -fuzz '^FuzzBuildPatched$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 1s -parallel 1 ./internal/blockmap/

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

bench: deps build
	./testdata/bench.sh
	./testdata/bench-http.sh
	./testdata/bench-multicast.sh

demo: deps build lab-tool
	./testdata/demo.sh

lab-tool:
	$(GO) build -trimpath -o $(BIN)/asr-lab ./cmd/asr-lab

# lab leaves a lab (asr server, DHCP, one VM) running until Ctrl-C.
lab: deps build lab-tool
	@test -s out/demo/sample.asr || ./testdata/demo.sh
	$(BIN)/asr-lab up --image out/demo/sample.asr

clean:
	rm -rf $(BIN) out
