package cuda

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"unsafe"

	"github.com/ebitengine/purego"
)

// NVRTC, the run-time CUDA compiler, turns the embedded kernel sources into
// a cubin for the device's compute capability. The result is cached on disk,
// keyed by the source, the options, the architecture, the NVRTC version and
// the driver version, so only the first run on a machine pays for it.

var nvrtcNames = []string{
	"libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so",
	"/usr/local/cuda/lib64/libnvrtc.so.13", "/usr/local/cuda/lib64/libnvrtc.so.12", "/usr/local/cuda/lib64/libnvrtc.so",
	"libnvrtc.so.11.2", // Debian's packaging of 11.x: enough to syntax-check the kernels without a GPU
}

type nvrtc struct {
	lib                                                uintptr
	version, create, compile, logSize, getLog, destroy uintptr
	cubinSize, getCubin, ptxSize, getPTX, errorString  uintptr
	major, minor                                       int
	name                                               string
}

func loadNVRTC() (*nvrtc, error) {
	if runtime.GOOS != "linux" {
		return nil, errors.New("NVRTC: Linux only")
	}
	names := nvrtcNames
	if p := os.Getenv("GRETA_NVRTC"); p != "" {
		names = append([]string{p}, names...)
	}
	h, name, err := dlopenFirst(names)
	if err != nil {
		return nil, errors.New("no CUDA runtime compiler: libnvrtc.so.13 not found (install the CUDA toolkit's NVRTC, or put its folder on LD_LIBRARY_PATH)")
	}
	n := &nvrtc{lib: h, name: name}
	var missing []string
	sym := func(dst *uintptr, s string) {
		if p, err := purego.Dlsym(h, s); err == nil && p != 0 {
			*dst = p
		} else {
			missing = append(missing, s)
		}
	}
	sym(&n.version, "nvrtcVersion")
	sym(&n.create, "nvrtcCreateProgram")
	sym(&n.compile, "nvrtcCompileProgram")
	sym(&n.logSize, "nvrtcGetProgramLogSize")
	sym(&n.getLog, "nvrtcGetProgramLog")
	sym(&n.destroy, "nvrtcDestroyProgram")
	sym(&n.cubinSize, "nvrtcGetCUBINSize")
	sym(&n.getCubin, "nvrtcGetCUBIN")
	sym(&n.ptxSize, "nvrtcGetPTXSize")
	sym(&n.getPTX, "nvrtcGetPTX")
	sym(&n.errorString, "nvrtcGetErrorString")
	if len(missing) > 0 {
		return nil, fmt.Errorf("%s lacks %s", name, strings.Join(missing, ", "))
	}
	var major, minor int32
	purego.SyscallN(n.version, uintptr(unsafe.Pointer(&major)), uintptr(unsafe.Pointer(&minor)))
	n.major, n.minor = int(major), int(minor)
	return n, nil
}

func (n *nvrtc) errString(r uintptr) string {
	p, _, _ := purego.SyscallN(n.errorString, r)
	var s *byte
	*(*uintptr)(unsafe.Pointer(&s)) = p // static C string inside libnvrtc
	return cstring(s)
}

// cstrings holds NUL-terminated copies of Go strings and an array of
// pointers to them, alive as long as the value is.
type cstrings struct {
	bufs [][]byte
	ptrs []uintptr
}

func newCStrings(ss []string) *cstrings {
	c := &cstrings{}
	for _, s := range ss {
		b := append([]byte(s), 0)
		c.bufs = append(c.bufs, b)
		c.ptrs = append(c.ptrs, uintptr(unsafe.Pointer(&b[0])))
	}
	return c
}

// Compile compiles src with the options given. With cubin it returns the
// cubin (options must name a real sm_XX architecture), otherwise the PTX.
// The error carries NVRTC's log.
func (n *nvrtc) Compile(src, name string, opts []string, cubin bool) (image []byte, log string, err error) {
	csrc := append([]byte(src), 0)
	cname := append([]byte(name), 0)
	var prog uintptr
	r, _, _ := purego.SyscallN(n.create, uintptr(unsafe.Pointer(&prog)), uintptr(unsafe.Pointer(&csrc[0])), uintptr(unsafe.Pointer(&cname[0])), 0, 0, 0)
	if r != 0 {
		return nil, "", fmt.Errorf("nvrtcCreateProgram: %s", n.errString(r))
	}
	defer purego.SyscallN(n.destroy, uintptr(unsafe.Pointer(&prog)))
	co := newCStrings(opts)
	var optp uintptr
	if len(co.ptrs) > 0 {
		optp = uintptr(unsafe.Pointer(&co.ptrs[0]))
	}
	rc, _, _ := purego.SyscallN(n.compile, prog, uintptr(len(opts)), optp)
	runtime.KeepAlive(co)
	var ls uint64
	purego.SyscallN(n.logSize, prog, uintptr(unsafe.Pointer(&ls)))
	if ls > 1 {
		lb := make([]byte, ls)
		purego.SyscallN(n.getLog, prog, uintptr(unsafe.Pointer(&lb[0])))
		log = strings.TrimRight(string(lb), "\x00\n ")
	}
	if rc != 0 {
		return nil, log, fmt.Errorf("NVRTC %d.%d could not compile the kernels (%s):\n%s", n.major, n.minor, n.errString(rc), log)
	}
	sizeFn, getFn := n.ptxSize, n.getPTX
	if cubin {
		sizeFn, getFn = n.cubinSize, n.getCubin
	}
	var sz uint64
	if r, _, _ := purego.SyscallN(sizeFn, prog, uintptr(unsafe.Pointer(&sz))); r != 0 || sz == 0 {
		return nil, log, fmt.Errorf("NVRTC: no output (%s)", n.errString(r))
	}
	image = make([]byte, sz)
	if r, _, _ := purego.SyscallN(getFn, prog, uintptr(unsafe.Pointer(&image[0]))); r != 0 {
		return nil, log, fmt.Errorf("NVRTC: reading the output: %s", n.errString(r))
	}
	return image, log, nil
}

// nvrtcOptions are the compile options for compute capability major.minor.
// Line info (for compute-sanitizer's reports) crashes NVRTC 11.8 on
// templates, so it is asked for from NVRTC 12 on.
func (n *nvrtc) options(major, minor int, cubin bool) []string {
	arch := fmt.Sprintf("--gpu-architecture=sm_%d%d", major, minor)
	if !cubin {
		arch = fmt.Sprintf("--gpu-architecture=compute_%d%d", major, minor)
	}
	// No -O3 (NVRTC rejects it; it optimizes fully by default), no fast
	// math: exp and the float sums must stay accurate to meet the oracle.
	o := []string{arch, "--std=c++17", "-default-device"}
	if n.major >= 12 {
		o = append(o, "--generate-line-info")
	}
	return o
}

// cacheDir is where compiled kernels are kept.
func cacheDir() string {
	if d := os.Getenv("GRETA_CUDA_CACHE"); d != "" {
		return d
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "greta-cuda-cache")
	}
	return filepath.Join(d, "greta", "cuda")
}

// buildModule returns a loadable image of src for the device, from the disk
// cache or NVRTC. fromCache says which.
func buildModule(n *nvrtc, src string, major, minor, driverVersion int) (image []byte, fromCache bool, err error) {
	h := sha256.New()
	fmt.Fprintf(h, "greta-cuda\x00%s\x00sm_%d%d\x00driver %d\x00nvrtc %d.%d\x00%s", src, major, minor, driverVersion, n.major, n.minor, strings.Join(n.options(major, minor, true), " "))
	key := hex.EncodeToString(h.Sum(nil))[:32]
	path := filepath.Join(cacheDir(), key+".cubin")
	if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
		return b, true, nil
	}
	image, _, err = n.Compile(src, "greta.cu", n.options(major, minor, true), true)
	if err != nil && strings.Contains(err.Error(), "gpu-architecture") {
		// An NVRTC older than the device: PTX for the driver to compile.
		image, _, err = n.Compile(src, "greta.cu", n.options(major, minor, false), false)
		if err == nil {
			image = append(image, 0)
		}
	}
	if err != nil {
		return nil, false, err
	}
	if os.MkdirAll(filepath.Dir(path), 0o755) == nil {
		tmp := fmt.Sprintf("%s.%d.tmp", path, os.Getpid())
		if os.WriteFile(tmp, image, 0o644) == nil {
			os.Rename(tmp, path)
		}
	}
	return image, false, nil
}
