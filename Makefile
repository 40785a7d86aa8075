# asr: Apple Software Restore for Linux.
#   make demo   build, make a sample disk, scan it, restore it to a loop device, verify,
#               then boot 3 VMs that restore it over multicast and check their disks
#   make lab    the demo's lab left running (asr server, DHCP, a VM) until Ctrl-C
#   make test   unit tests, loop-device end-to-end tests (as root), brief fuzzing
#   make test-vm  the slow VM tier: the appliance on each kind of hardware (the TestMatrix* tests of ./qemu)
#   make bench  restore benchmarks against dd, bmaptool, curl, udpcast, partclone, cp -a and rsync (root, 1-2 hours: every case warm and cold, 5 interleaved runs)
#   make lint   gofmt, go vet, staticcheck
#   make initramfs  the appliance: out/asr-initramfs.cpio.gz and out/vmlinuz (KVER=: which kernel's modules;
#                   TRUSTED_KEYS="a.pub ...": restore only images those minisign keys signed)
#   make usb-image IMAGES="a.asr ..."  the USB toolkit stick: out/asr-usb.img (BIOS and UEFI)

GO       ?= go
BIN      := bin
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.Version=$(VERSION)
export CGO_ENABLED := 0
STATICCHECK ?= $(shell command -v staticcheck || echo $(HOME)/go/bin/staticcheck)
# Fuzzing budgets are counts of executions, not durations: with a duration,
# Go 1.26's fuzz coordinator can report "context deadline exceeded" as a
# failure at the deadline though no input failed (go.dev/issue/75804, fixed
# in Go 1.27). Each count is about 5-10 s on this 2-core machine. FUZZSCALE
# multiplies them all for a longer run: make fuzz FUZZSCALE=20.
FUZZSCALE ?= 1
# KVER is the kernel whose modules go into the initramfs; empty: the newest installed.
KVER     ?=
# TRUSTED_KEYS are minisign public key files (minisign -G) baked into the
# appliance at /etc/asr/trusted-keys: with any, it restores only images one of
# them signed, from every source, and refuses the rest with the disk untouched.
# Each file is checked when the initramfs is built. Empty: no signature check.
TRUSTED_KEYS ?=

SHELL    := /bin/bash

.PHONY: all build test test-vm unit fuzz bench bench-fsmap lint demo lab lab-tool deps clean initramfs usb-image usb-image-args

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/asr ./cmd/asr

# initramfs builds the appliance: out/asr-initramfs.cpio.gz (/init is asr-init,
# with the disk and NIC drivers of kernel KVER) and out/vmlinuz, that kernel.
# Boot the pair: qemu-system-x86_64 -kernel out/vmlinuz -initrd
# out/asr-initramfs.cpio.gz -append "console=ttyS0 asr.source=http://..."
# TRUSTED_KEYS="a.pub b.pub" bakes those keys in (see above).
initramfs: deps
	$(GO) run ./cmd/asr-mkinitramfs -o out/asr-initramfs.cpio.gz -kernel out/vmlinuz \
		-version $(VERSION) $(if $(KVER),-kver $(KVER)) $(foreach k,$(TRUSTED_KEYS),-trusted-key $(k))

# usb-image writes the USB toolkit stick, out/asr-usb.img: the appliance
# (BIOS and UEFI boot) and a data partition labelled ASRDATA holding IMAGES.
# USB_ARGS adds kernel arguments (asr.image=NAME when there are several).
# TRUSTED_KEYS works as for initramfs: the stick's appliance then restores
# only the images on it that one of those keys signed.
usb-image: usb-image-args initramfs
	./initramfs/mkusb.sh -o out/asr-usb.img -k out/vmlinuz -i out/asr-initramfs.cpio.gz -a "$(USB_ARGS)" $(IMAGES)

usb-image-args:
	@test -n "$(IMAGES)" || { echo 'make usb-image IMAGES="lab.asr ..." [USB_ARGS="asr.image=lab"]: which prepared images go on the stick?' >&2; exit 2; }

# deps installs what the tests, the demo and the benchmarks use on Debian.
deps:
	./scripts/deps.sh

test: deps lint unit fuzz

# ASR_E2E=1 makes the tests that need the machine (root, loop devices,
# network namespaces, tools) fail instead of skipping when they cannot run:
# CI must really run them. ASR_VM=1 opts in to the tests that boot VMs
# (internal/testenv says how the gate works). The timeout is per package:
# the VM tests of ./qemu took 863 s here (21 VMs under TCG), so 20m left
# too little room on a slower machine.
#
# The tests named TestMatrix* (./qemu: the appliance on each row of the
# hardware matrix, UEFI and Secure Boot, a real system booted after its
# restore) are the slow tier: make test-vm runs them, and CI runs both
# targets (.ci/run), so make test stays under 30 minutes.
unit:
	ASR_E2E=1 ASR_VM=1 $(GO) test -count=1 -timeout 28m -skip '^TestMatrix' ./...

test-vm: deps
	ASR_E2E=1 ASR_VM=1 $(GO) test -count=1 -timeout 60m -run '^TestMatrix' -v ./qemu/

# fuzz-one TARGET PACKAGE EXECUTIONS
fuzz-one = $(GO) test -run '^$$' -fuzz '^$(1)$$' -fuzztime $$(( $(3) * $(FUZZSCALE) ))x -fuzzminimizetime 200x -parallel 1 $(2)

fuzz:
	$(call fuzz-one,FuzzParseHeader,./internal/image/,150000)
	$(call fuzz-one,FuzzReadManifest,./internal/image/,5000)
	$(call fuzz-one,FuzzParseTrailer,./internal/image/,80000)
	$(call fuzz-one,FuzzPartition,./internal/partition/,80000)
	$(call fuzz-one,FuzzBuild,./internal/blockmap/,30000)
	$(call fuzz-one,FuzzBuildPatched,./internal/blockmap/,80000)
	$(call fuzz-one,FuzzLVMText,./internal/blockmap/,40000)
	$(call fuzz-one,FuzzLVMLabel,./internal/blockmap/,40000)
	$(call fuzz-one,FuzzTreeFS,./internal/blockmap/,20000)
	$(call fuzz-one,FuzzNTFS,./internal/blockmap/,5000)
	$(call fuzz-one,FuzzExFAT,./internal/blockmap/,8000)
	$(call fuzz-one,FuzzHFSPlus,./internal/blockmap/,8000)
	$(call fuzz-one,FuzzLine,./internal/safetext/,60000)
	$(call fuzz-one,FuzzParse,./internal/config/,40000)
	$(call fuzz-one,FuzzParseCmdline,./appliance/,30000)
	$(call fuzz-one,FuzzSourceOption,./appliance/,20000)
	$(call fuzz-one,FuzzRender,./appliance/,10000)
	$(call fuzz-one,FuzzParseTXT,./internal/dnssd/,60000)
	$(call fuzz-one,FuzzSidecar,./internal/source/,40000)
	$(call fuzz-one,FuzzXZGuard,./internal/source/,40000)
	$(call fuzz-one,FuzzControlFrame,./internal/multicast/,50000)
	$(call fuzz-one,FuzzPacketHeader,./internal/multicast/,40000)
	$(call fuzz-one,FuzzText,./internal/redact/,40000)
	$(call fuzz-one,FuzzASRLayer,./internal/oci/,30000)
	$(call fuzz-one,FuzzParseReference,./internal/oci/,40000)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

bench: deps build
	./bench/local.sh
	./bench/http.sh
	./bench/delta.sh
	./bench/multicast.sh
	./bench/fsmap.sh
	./bench/filecopy.sh

# bench-fsmap alone: asr against partclone | zstd on ext4, FAT32, NTFS, XFS,
# btrfs, exFAT, HFS+, F2FS and LVM disks of 1 GiB, warm and cold (~40 min).
bench-fsmap: deps build
	./bench/fsmap.sh

demo: deps build lab-tool
	./scripts/demo.sh

lab-tool:
	$(GO) build -trimpath -o $(BIN)/asr-lab ./cmd/asr-lab

# lab leaves a lab (asr server, DHCP, one VM) running until Ctrl-C.
lab: deps build lab-tool
	@test -s out/demo/sample.asr || ./scripts/demo.sh
	$(BIN)/asr-lab up --image out/demo/sample.asr

clean:
	rm -rf $(BIN) out
