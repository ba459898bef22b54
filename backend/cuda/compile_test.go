package cuda

import (
	"os"
	"regexp"
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

// TestKernelsWaitForPredecessor checks the rule of programmatic dependent
// launch (kernels/common.cuh): every kernel is launched so that it may
// start before the previous one has finished, so each must reach
// pdl_wait (or pdl_start) before it touches an activation. A kernel that
// forgets it would read stale data only now and then; this reads the
// sources, so it runs everywhere.
func TestKernelsWaitForPredecessor(t *testing.T) {
	src := kernelSource()
	// The bodies that wait themselves.
	waiting := []string{"pdl_start()", "pdl_wait()"}
	for _, body := range []string{"mvs_body", "attn_dec_body", "mvn_body", "fa_pre_body", "fa_dec_body", "gemm_body", "xstage_body", "hgemm_tile"} {
		def := regexp.MustCompile(`void ` + body + `\(`).FindStringIndex(src)
		if def == nil {
			t.Fatalf("%s is not in the kernel sources", body)
		}
		if text := braced(src, def[1]); !strings.Contains(text, "pdl_wait()") && !strings.Contains(text, "pdl_start()") {
			t.Errorf("%s does not call pdl_wait", body)
		}
		waiting = append(waiting, body+"<")
	}
	re := regexp.MustCompile(`__global__ void[^{;]*?(\w+(?:##\w+)*)\(const \w+ \w+\) \{`)
	n := 0
	for _, m := range re.FindAllStringSubmatchIndex(src, -1) {
		name := src[m[2]:m[3]]
		text := braced(src, m[1]-1)
		ok := false
		for _, w := range waiting {
			if strings.Contains(text, w) {
				ok = true
			}
		}
		if !ok {
			t.Errorf("kernel %s never waits for the previous kernel (pdl_wait or pdl_start)", name)
		}
		n++
	}
	t.Logf("%d kernel definitions checked", n)
	if n < 15 {
		t.Errorf("found only %d kernel definitions: the pattern no longer matches the sources", n)
	}
}

// braced returns src from the first '{' at or after i to its matching '}'.
func braced(src string, i int) string {
	start := strings.IndexByte(src[i:], '{')
	if start < 0 {
		return ""
	}
	depth := 0
	for j := i + start; j < len(src); j++ {
		switch src[j] {
		case '{':
			depth++
		case '}':
			depth--
			if depth == 0 {
				return src[i+start : j+1]
			}
		}
	}
	return src[i+start:]
}
