package blockmap

import (
	"os"
	"testing"

	"github.com/asrlinux/asr/internal/testenv"
)

func TestMain(m *testing.M) {
	testenv.PrivateMounts() // the filesystem tests mount loop devices
	os.Exit(m.Run())
}
