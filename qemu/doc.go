// Package qemu is the VM harness and its end-to-end tests: virtual
// machines (Start, StartT) with raw disks and NICs on the taps of a
// netlab.Lab, whose servers (DHCP, nginx, asr server) package netlab runs.
// The tests that boot VMs run only with ASR_VM=1 (testenv.RequireVM); the
// accelerator comes from ASR_QEMU_ACCEL (default tcg). It needs root.
package qemu
