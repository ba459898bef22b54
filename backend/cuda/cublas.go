package cuda

import (
	"errors"
	"os"
	"strconv"
	"unsafe"

	"github.com/ebitengine/purego"
)

// cuBLAS, for the GEMMs of prefill: f16 weights and activations on the
// tensor cores, float32 accumulation and output. Loaded on first use; when
// it is missing, batches run through the matvec kernels instead.

var cublasNames = []string{
	"libcublas.so.13", "libcublas.so.12", "libcublas.so",
	"/usr/local/cuda/lib64/libcublas.so.13", "/usr/local/cuda/lib64/libcublas.so.12", "/usr/local/cuda/lib64/libcublas.so",
}

type cublas struct {
	lib                                  uintptr
	create, setStream, gemmEx, destroyFn uintptr
	handle                               uintptr
	alpha, beta                          *float32
}

// cuBLAS enums.
const (
	cublasOpN         = 0
	cublasOpT         = 1
	cudaR16F          = 2
	cudaR32F          = 0
	cublasCompute32F  = 68
	cublasGemmDefault = -1
	cublasStatusOK    = 0
)

func loadCublas(s cuStream) (*cublas, error) {
	names := cublasNames
	if p := os.Getenv("GRETA_CUBLAS"); p != "" {
		names = append([]string{p}, names...)
	}
	h, _, err := dlopenFirst(names)
	if err != nil {
		return nil, errors.New("libcublas.so.13 not found")
	}
	c := &cublas{lib: h, alpha: new(float32), beta: new(float32)}
	*c.alpha = 1
	for _, f := range []struct {
		dst  *uintptr
		name string
	}{{&c.create, "cublasCreate_v2"}, {&c.setStream, "cublasSetStream_v2"}, {&c.gemmEx, "cublasGemmEx"}, {&c.destroyFn, "cublasDestroy_v2"}} {
		p, err := purego.Dlsym(h, f.name)
		if err != nil || p == 0 {
			return nil, errors.New("libcublas lacks " + f.name)
		}
		*f.dst = p
	}
	var handle uintptr
	if r, _, _ := purego.SyscallN(c.create, uintptr(unsafe.Pointer(&handle))); r != cublasStatusOK {
		return nil, errors.New("cublasCreate failed (status " + itoa(int(r)) + ")")
	}
	c.handle = handle
	if r, _, _ := purego.SyscallN(c.setStream, c.handle, uintptr(s)); r != cublasStatusOK {
		return nil, errors.New("cublasSetStream failed")
	}
	return c, nil
}

// gemm writes y[n][ldy] (column offset already applied) = x[n][k] · w[m][k]ᵀ
// for m weight rows: in cuBLAS's column-major terms C (m×n, ldc ldy) =
// Aᵀ·B with A = w (k×m, lda k) and B = x (k×n, ldb k).
func (c *cublas) gemm(m, n, k int, w, x, y devPtr, ldy int) error {
	r, _, _ := purego.SyscallN(c.gemmEx, c.handle, cublasOpT, cublasOpN,
		uintptr(m), uintptr(n), uintptr(k),
		uintptr(unsafe.Pointer(c.alpha)), uintptr(w), cudaR16F, uintptr(k),
		uintptr(x), cudaR16F, uintptr(k),
		uintptr(unsafe.Pointer(c.beta)), uintptr(y), cudaR32F, uintptr(ldy),
		cublasCompute32F, uintptr(uint32(0xffffffff))) // CUBLAS_GEMM_DEFAULT (-1)
	if r != cublasStatusOK {
		return errors.New("cublasGemmEx failed (status " + itoa(int(r)) + ")")
	}
	return nil
}

func (c *cublas) destroy() {
	if c.handle != 0 {
		purego.SyscallN(c.destroyFn, c.handle)
		c.handle = 0
	}
}

// blasReady loads cuBLAS on first use and reports whether GEMMs can use it.
func (b *Backend) blasReady() bool {
	if !b.UseBLAS {
		return false
	}
	if !b.blasTried {
		b.blasTried = true
		b.blas, b.blasErr = loadCublas(b.stream)
		if b.blasErr != nil {
			debugf("cuBLAS unavailable, prefill uses the matvec kernels: %v", b.blasErr)
		}
	}
	return b.blas != nil
}

func itoa(v int) string { return strconv.Itoa(v) }
