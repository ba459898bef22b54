// Package cuda is the NVIDIA GPU backend (--device cuda).
//
// greta stays one static binary: the CUDA driver (libcuda.so.1) and the
// run-time compiler (libnvrtc.so.13) are loaded when the backend opens, with
// purego, and the kernels (kernels/*.cu, embedded) are compiled for the
// device by NVRTC and cached on disk. cuBLAS is loaded only when
// GRETA_CUDA_CUBLAS=1 asks for its (fast, not batch-invariant) GEMMs.
//
// Ops are not launched when they are called: they are queued, and the queue
// is run when a result is needed (Argmax, Read) or it grows long. A queue
// that repeats the previous one exactly (a decode step: the same ops on the
// same buffers, with only the position and the token changing) is captured
// as a CUDA graph and replayed on later steps. Everything that changes
// between such steps (the batch description, token ids) lives in a small device buffer
// written before each run, never in a kernel's arguments, so one graph
// serves every decode step. docs/CUDA.md has the design.
package cuda

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"unsafe"

	"greta/ml"
)

// Backend runs the model on one NVIDIA GPU.
type Backend struct {
	d      *driver
	nv     *nvrtc
	dev    cuDevice
	ctx    cuContext
	stream cuStream
	mod    cuModule
	fn     map[string]cuFunction

	name             string
	major, minor     int
	sms              int
	maxSmem          int
	totalMem         uint64
	driverVersion    int
	compiled, cached bool

	// Switches (environment, read at New; tests set them directly).
	Check     bool   // GRETA_CUDA_CHECK=1: synchronize and check after every launch
	Graphs    bool   // GRETA_CUDA_GRAPH=0 turns graph replay off
	Fuse      bool   // GRETA_CUDA_FUSE=0 turns the q/k/v and rope fusions off
	Gemm      bool   // GRETA_CUDA_GEMM=0 turns the tensor-core GEMM of many generated rows off (mvn/gun for every batch, the same bits)
	GemmMin   int    // GRETA_CUDA_GEMM_MIN: the fewest activation rows that take the GEMM (default 16; twice that for GateUp)
	HGemm     bool   // GRETA_CUDA_HGEMM=0: prompt rows take the decode kernels' numerics too, not hgemm (hgemm.go)
	gemmSplit int    // tests: force the GEMM's split over classes (0: by the shape)
	hgemmKern string // GRETA_CUDA_HGEMM_KERN, and tests: force the hgemm kernel, "hgemm" (the reference), "hgemm_n64" or a variant's name ("": hgemmPick)
	UseBLAS   bool   // GRETA_CUDA_CUBLAS=1: batches of more than 8 rows through f16 cuBLAS GEMMs (fast, not batch-invariant)
	MVB, GUB  string // decode matvec variants (GRETA_CUDA_MVB, GRETA_CUDA_GUB), e.g. "r1u4w8b1"
	Profile   bool   // GRETA_CUDA_PROFILE=1: time every launch, print a table at Close

	// The batch of the current ops (Begin) and its description for the
	// device (kernels/common.cuh), which the first run after Begin uploads
	// at the start of the dyn buffer, in the same copy as dyn.
	batch      *ml.Batch
	batRows    int
	hruns      [][2]int // the current batch's runs of prompt rows (hgemm.go)
	pastHead   bool     // a Gather since Begin: rows no longer the batch's
	batSeqs    int
	batMaxPage int
	batUsers   int // queued ops that read the batch description
	batBuild   []int32
	batToff    []int32
	batCap     int  // int32s of the dyn buffer that hold the batch
	batDirty   bool // batBuild is not on the device yet

	FA      bool // attention over the f16 cache on the tensor cores (kernels/flash.cu); GRETA_CUDA_FA=0 keeps the scalar kernels
	FASplit int  // chunks an fa_dec block takes (GRETA_CUDA_FA_SPLIT; 0: from the shape)
	// FADecMode selects fa_dec's variants, a mask of faDecMerge4,
	// faDecPrefetch and faDecFill (GRETA_CUDA_FA_DEC; default faDecAll, 0
	// the kernel before them). None changes a bit of the result.
	FADecMode int
	faTilesOf *ml.Batch
	faTilesG  int
	faTiles   []int32
	faSingle  bool
	faMaxPos  int

	KVF32     bool // KV caches made from now on hold float32 (GRETA_CUDA_KV=f32, greta --cache-type f32), not f16
	PDL       bool // programmatic dependent launch (sm_90 and cuLaunchKernelEx); GRETA_CUDA_PDL=0 turns it off
	blas      *cublas
	blasErr   error
	blasTried bool

	// The queue (see queue.go).
	ops      []op
	dyn      []int32        // per-run values: token ids, gathered rows
	dynDev   devPtr         // [batCap] the batch, then [dynCap] dyn
	dynHost  unsafe.Pointer // pinned staging for both
	dynCap   int
	dynEvent cuEvent
	dynBusy  bool

	// Graph replay.
	sig, lastSig []byte
	graphSig     []byte
	graphExec    cuGraphExec
	graph        cuGraph
	capturing    bool
	gen          uint64 // bumped whenever a buffer a graph may use is reallocated
	Stats        Stats

	// Scratch buffers of the GEMM and attention paths, grown on demand.
	scratch map[string]*buffer

	// Results copied back to the host.
	resDev  devPtr
	resHost unsafe.Pointer
	resCap  int
	topkIdx []int32   // TopK's ranking of a row's candidates
	topkVal []float32 // and their values
	topkBuf []int32   // TopK's row descriptions and gather lists (dyn)

	// Launch arguments: one struct per launch, copied by the driver at
	// launch time. Heap memory owned here, alive through every call.
	argBuf [64]uint64
	argPtr [1]uintptr
	lcfg   launchConfig // cuLaunchKernelEx's configuration, reused

	lastLaunch string // what ran last, for error messages
	profKey    string // the next launch's name in the profile
	layerHint  string // the layer the last weight op belonged to

	occ  map[string]int // blocks per SM, by kernel
	prof profiler

	ropes  map[*ml.Rope]*ropeDev
	fam    famState // the family ops' scratch (family.go)
	allocs map[devPtr]uint64
	closed bool
}

// Stats counts how decode steps ran (tests, bench notes).
type Stats struct {
	Runs, Replays, Captures, Launches int
}

type buffer struct {
	ptr  devPtr
	size uint64
}

type ropeDev struct {
	freqs    devPtr
	n        int
	src      *float64
	posScale float64
	headDim  int
	neox     bool
}

// New opens the first CUDA device. Without a driver or a GPU it returns one
// clear error line.
func New() (ml.Backend, error) {
	b, err := Open(0)
	if err != nil {
		return nil, err
	}
	return b, nil
}

// Open opens CUDA device ordinal.
func Open(ordinal int) (*Backend, error) {
	d, err := loadDriver()
	if err != nil {
		return nil, err
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := d.Init(); err != nil {
		var ce *cuError
		if ok := asCuError(err, &ce); ok && (ce.code == cuErrNoDevice || ce.code == 999) {
			return nil, fmt.Errorf("no CUDA device: %s", ce.desc)
		}
		return nil, fmt.Errorf("CUDA driver: %w", err)
	}
	n, err := d.DeviceCount()
	if err != nil {
		return nil, fmt.Errorf("CUDA driver: %w", err)
	}
	if n == 0 {
		return nil, fmt.Errorf("no CUDA device: the driver sees no GPU")
	}
	if ordinal < 0 || ordinal >= n {
		return nil, fmt.Errorf("CUDA device %d does not exist (%d found)", ordinal, n)
	}
	b := &Backend{d: d, fn: map[string]cuFunction{}, scratch: map[string]*buffer{}, ropes: map[*ml.Rope]*ropeDev{}, allocs: map[devPtr]uint64{}, occ: map[string]int{}}
	b.Check = envFlag("GRETA_CUDA_CHECK", false)
	b.Graphs = envFlag("GRETA_CUDA_GRAPH", true)
	b.Fuse = envFlag("GRETA_CUDA_FUSE", true)
	b.UseBLAS = envFlag("GRETA_CUDA_CUBLAS", false)
	b.Gemm = envFlag("GRETA_CUDA_GEMM", true)
	b.HGemm = envFlag("GRETA_CUDA_HGEMM", true)
	b.GemmMin = 16 // below it mvn is as fast (docs/CUDA.md, The GEMM)
	if v, err := strconv.Atoi(os.Getenv("GRETA_CUDA_GEMM_MIN")); err == nil && v >= 2 {
		b.GemmMin = v
	}
	b.MVB, b.GUB = os.Getenv("GRETA_CUDA_MVB"), os.Getenv("GRETA_CUDA_GUB")
	b.hgemmKern = os.Getenv("GRETA_CUDA_HGEMM_KERN")
	b.Profile = envFlag("GRETA_CUDA_PROFILE", false)
	b.FA = envFlag("GRETA_CUDA_FA", true)
	b.FASplit, _ = strconv.Atoi(os.Getenv("GRETA_CUDA_FA_SPLIT"))
	b.FADecMode = faDecAll
	if v, err := strconv.Atoi(os.Getenv("GRETA_CUDA_FA_DEC")); err == nil {
		b.FADecMode = v
	}
	if b.dev, err = d.Device(ordinal); err != nil {
		return nil, err
	}
	b.name = d.DeviceName(b.dev)
	b.major, b.minor = d.Attr(b.dev, attrComputeMajor), d.Attr(b.dev, attrComputeMinor)
	b.KVF32 = os.Getenv("GRETA_CUDA_KV") == "f32"
	b.PDL = envFlag("GRETA_CUDA_PDL", true) && b.major >= 9 && d.launchKernelEx != 0
	b.sms = d.Attr(b.dev, attrSMCount)
	b.maxSmem = d.Attr(b.dev, attrMaxSharedPerBlockOptin)
	b.totalMem = d.TotalMem(b.dev)
	b.driverVersion, _ = d.DriverVersion()
	if b.major < 7 {
		return nil, fmt.Errorf("CUDA device %q has compute capability %d.%d; greta needs 7.0 or newer", b.name, b.major, b.minor)
	}
	if b.ctx, err = d.PrimaryCtxRetain(b.dev); err != nil {
		return nil, err
	}
	fail := func(err error) (*Backend, error) {
		b.release()
		return nil, err
	}
	if err := d.CtxSetCurrent(b.ctx); err != nil {
		return fail(err)
	}
	if b.stream, err = d.StreamCreate(0); err != nil {
		return fail(err)
	}
	if b.nv, err = loadNVRTC(); err != nil {
		return fail(err)
	}
	image, cached, err := buildModule(b.nv, kernelSource(), b.major, b.minor, b.driverVersion)
	if err != nil {
		return fail(err)
	}
	b.cached, b.compiled = cached, !cached
	if b.mod, err = d.ModuleLoadData(image); err != nil {
		return fail(fmt.Errorf("loading the compiled kernels: %w", err))
	}
	for _, k := range kernelNames() {
		f, err := d.ModuleGetFunction(b.mod, k)
		if err != nil {
			return fail(err)
		}
		b.fn[k] = f
	}
	// Attention's tiles and the staged x of the decode matvecs need more
	// than the default 48 KB of shared memory.
	for name, f := range b.fn {
		lim := 0
		switch {
		case strings.HasPrefix(name, "attn_dec_"):
			lim = min(b.maxSmem, attnDecSmem(maxHeadDim, 8))
		case strings.HasPrefix(name, "fa_pre_"), strings.HasPrefix(name, "fa_dec_"):
			lim = min(b.maxSmem, max(faPreSmem(128), faDecSmem(128)))
		case strings.HasPrefix(name, "mvs_"), strings.HasPrefix(name, "gus_"), strings.HasPrefix(name, "mvn_"), strings.HasPrefix(name, "gun_"),
			strings.HasPrefix(name, "xstage_"):
			lim = b.mvsLimit()
		case strings.HasPrefix(name, "gemm_") && name != "gemm_fin" && name != "gemm_fin_gu":
			lim = min(b.maxSmem, gemmSmem(strings.TrimPrefix(name, "gemm_")))
		case strings.HasPrefix(name, "hgemm"):
			// A variant beyond the device's limit is never picked
			// (hgemmPick); a test forcing it fails at its launch.
			if _, _, _, s, _ := hgemmKernel(name); s <= b.maxSmem {
				lim = s
			}
		case strings.HasPrefix(name, "gemmgu_"):
			lim = min(b.maxSmem, gemmSmem(strings.TrimPrefix(name, "gemmgu_")))
		}
		if lim > 48<<10 {
			if err := d.FuncSetAttribute(f, funcAttrMaxDynamicShared, lim); err != nil {
				return fail(fmt.Errorf("%s: %w", name, err))
			}
		}
	}
	if b.dynEvent, err = d.EventCreate(); err != nil {
		return fail(err)
	}
	b.argPtr[0] = uintptr(unsafe.Pointer(&b.argBuf[0]))
	return b, nil
}

func asCuError(err error, dst **cuError) bool {
	ce, ok := err.(*cuError)
	if ok {
		*dst = ce
	}
	return ok
}

func (b *Backend) Name() string { return "cuda" }
func (b *Backend) Device() string {
	return fmt.Sprintf("%s (sm_%d%d, %d SMs, %.0f GiB)", b.name, b.major, b.minor, b.sms, float64(b.totalMem)/(1<<30))
}
func (b *Backend) DType() string { return "f32" }

// enter binds the CUDA context to this goroutine's OS thread until exit.
func (b *Backend) enter() {
	runtime.LockOSThread()
	if err := b.d.CtxSetCurrent(b.ctx); err != nil {
		runtime.UnlockOSThread()
		panic(fmt.Sprintf("cuda: %v", err))
	}
}

func (b *Backend) exit() { runtime.UnlockOSThread() }

// fatal reports a CUDA failure inside an op, which has no error result.
// After an illegal address or a launch failure the context is unusable.
func (b *Backend) fatal(what string, err error) {
	panic(fmt.Sprintf("cuda: %s: %v", what, err))
}

// alloc takes n bytes of device memory; what names them in the error.
func (b *Backend) alloc(n uint64, what string) (devPtr, error) {
	if n == 0 {
		n = 4
	}
	if b.capturing {
		panic("cuda: allocation during graph capture (" + what + ")")
	}
	p, err := b.d.MemAlloc(n)
	if err != nil {
		var ce *cuError
		if asCuError(err, &ce) && ce.code == cuErrOutOfMem {
			free, total := b.d.MemInfo()
			return 0, &OOMError{What: what, Need: n, Free: free, Total: total}
		}
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	b.allocs[p] = n
	return p, nil
}

func (b *Backend) free(p devPtr) {
	if p != 0 {
		b.d.MemFree(p)
		delete(b.allocs, p)
	}
}

// OOMError is an allocation the GPU could not satisfy.
type OOMError struct {
	What              string
	Need, Free, Total uint64
}

func (e *OOMError) Error() string {
	hint := "use a smaller model or quantization"
	if strings.Contains(e.What, "KV cache") {
		hint = "try a smaller --ctx"
	}
	return fmt.Sprintf("out of GPU memory: %s needs %s, %s of %s is free; %s",
		e.What, gib(e.Need), gib(e.Free), gib(e.Total), hint)
}

func gib(n uint64) string {
	if n >= 1<<30 {
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

// scratchBuf returns a scratch buffer of at least n bytes, growing it (and
// invalidating captured graphs) when needed.
func (b *Backend) scratchBuf(name string, n uint64) devPtr {
	s := b.scratch[name]
	if s != nil && s.size >= n {
		return s.ptr
	}
	if s != nil {
		// Launches queued on the stream may still read the old buffer.
		if err := b.d.StreamSynchronize(b.stream); err != nil {
			b.fatal("scratch "+name, err)
		}
		b.free(s.ptr)
	}
	n = max(n, 1<<16)
	p, err := b.alloc(n, "scratch buffer "+name)
	if err != nil {
		b.fatal("scratch "+name, err)
	}
	b.scratch[name] = &buffer{ptr: p, size: n}
	b.gen++
	return p
}

// scratchZeroed is scratchBuf for a buffer that must start zeroed (the
// attention split counters, which their users return to zero).
func (b *Backend) scratchZeroed(name string, n uint64) devPtr {
	s := b.scratch[name]
	if s != nil && s.size >= n {
		return s.ptr
	}
	p := b.scratchBuf(name, n)
	if err := b.d.MemsetD32Async(p, 0, b.scratch[name].size/4, b.stream); err != nil {
		b.fatal("scratch "+name, err)
	}
	return p
}

// Close frees everything the backend holds on the device.
func (b *Backend) Close() error {
	if b.closed {
		return nil
	}
	b.enter()
	defer b.exit()
	var err error
	if len(b.ops) > 0 {
		err = b.runQueue()
	}
	if e := b.d.StreamSynchronize(b.stream); e != nil && err == nil {
		err = e
	}
	b.closed = true
	if b.Profile {
		b.prof.print(os.Stderr)
	}
	b.release()
	return err
}

func (b *Backend) release() {
	if b.graphExec != 0 {
		b.d.GraphExecDestroy(b.graphExec)
		b.graphExec = 0
	}
	if b.graph != 0 {
		b.d.GraphDestroy(b.graph)
		b.graph = 0
	}
	if b.blas != nil {
		b.blas.destroy()
	}
	for p := range b.allocs {
		b.d.MemFree(p)
	}
	b.allocs = map[devPtr]uint64{}
	if b.dynHost != nil {
		b.d.MemFreeHost(b.dynHost)
		b.dynHost = nil
	}
	if b.resHost != nil {
		b.d.MemFreeHost(b.resHost)
		b.resHost = nil
	}
	if b.dynEvent != 0 {
		b.d.EventDestroy(b.dynEvent)
	}
	if b.mod != 0 {
		b.d.ModuleUnload(b.mod)
	}
	if b.stream != 0 {
		b.d.StreamDestroy(b.stream)
	}
	if b.ctx != 0 {
		b.d.PrimaryCtxRelease(b.dev)
	}
}

// Compiled reports whether New compiled the kernels (false: disk cache).
func (b *Backend) Compiled() bool { return b.compiled }

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// Default decode matvec variants by format, chosen by TestKernelBandwidth
// on an H100 (docs/CUDA.md); MVB and GUB, when set, override them.
var (
	defaultMVS = map[string]string{"q6_k": "r2u2w8b2", "q8_0": "r1u4w8b3", "q4_0": "r1u4w8b3"}
	defaultGUS = map[string]string{}
)

const (
	defaultMVB = "r1u4w8b1"
	defaultGUB = "r1u4w8b1"
)

// mvsVariant is the decode matvec variant for format f, over rows rows of
// cols values.
func (b *Backend) mvsVariant(f string, rows, cols int, gateUp bool) string {
	if gateUp {
		if b.GUB != "" {
			return b.GUB
		}
		if v, ok := defaultGUS[f]; ok {
			return v
		}
		return defaultGUB
	}
	if b.MVB != "" {
		return b.MVB
	}
	if f == "q6_k" && rows >= 1<<15 {
		// The output matrix, 4096×128256, back to back with programmatic
		// launch: 148 µs against 158 (r1u2w8b3) and 160 (r2u2w8b1, now r2u2w8b2).
		return "r1u4w16b1"
	}
	if (f == "q4_k" || f == "q6_k") && cols >= 8192 {
		// Long rows (ffn_down): 16 warps a block. Llama-3-8B's 4096×14336,
		// back to back with programmatic launch: Q4_K 16.3 against 17.3
		// µs, Q6_K 21.3 against 22.5.
		return "r1u4w16b1"
	}
	if v, ok := defaultMVS[f]; ok {
		return v
	}
	return defaultMVB
}

// mvsLimit is the most dynamic shared memory a staged-x matvec may use (the
// kernels' own static shared memory is under 1 KB).
func (b *Backend) mvsLimit() int { return b.maxSmem - 2048 }

// occupancy is how many blocks of kernel name (block threads, smem bytes
// of dynamic shared memory) fit an SM.
func (b *Backend) occupancy(name string, threads, smem int) int {
	key := fmt.Sprintf("%s/%d/%d", name, threads, smem)
	if n, ok := b.occ[key]; ok {
		return n
	}
	n := b.d.Occupancy(b.fn[name], threads, smem)
	b.occ[key] = n
	return n
}

// debugf prints when GRETA_CUDA_DEBUG is set.
func debugf(format string, a ...any) {
	if os.Getenv("GRETA_CUDA_DEBUG") != "" {
		fmt.Fprintf(os.Stderr, "cuda: "+format+"\n", a...)
	}
}

// MemInfo returns the device's free and total memory in bytes (for sizing
// the KV pool from a fraction of what is free).
func (b *Backend) MemInfo() (free, total uint64) {
	b.enter()
	defer b.exit()
	return b.d.MemInfo()
}
