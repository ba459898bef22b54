package cuda

import (
	"strings"
	"testing"
)

// TestKernelsCompile compiles the kernel program for sm_90 with whatever
// NVRTC is installed; it needs no GPU, so it also runs on build machines
// that have NVRTC, and skips where there is none.
func TestKernelsCompile(t *testing.T) {
	n, err := loadNVRTC()
	if err != nil {
		t.Skip(err)
	}
	img, log, err := n.Compile(kernelSource(), "greta.cu", n.options(9, 0, true), true)
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(log) != "" {
		t.Logf("NVRTC %d.%d (%s) log:\n%s", n.major, n.minor, n.name, log)
	}
	t.Logf("NVRTC %d.%d: %d-byte cubin", n.major, n.minor, len(img))
	for _, k := range kernelNames() {
		if !strings.Contains(string(img), k) {
			t.Errorf("kernel %s is not in the cubin", k)
		}
	}
}
