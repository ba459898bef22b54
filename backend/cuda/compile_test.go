package cuda

import (
	"os"
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
	opts := n.options(9, 0, true)
	out := os.Getenv("GRETA_CUDA_PTXAS") // a file for ptxas's resource report
	if out != "" {
		opts = append(opts, "--ptxas-options=-v")
	}
	img, log, err := n.Compile(kernelSource(), "greta.cu", opts, true)
	if err != nil {
		t.Fatal(err)
	}
	if out != "" {
		os.WriteFile(out, []byte(log), 0o644)
		log = ""
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
