package main

import (
	"os"
	"testing"

	"github.com/asrlinux/asr/internal/testenv"
)

func TestMain(m *testing.M) {
	testenv.PrivateMounts()
	code := m.Run()
	testenv.Cleanup()
	os.Exit(code)
}
