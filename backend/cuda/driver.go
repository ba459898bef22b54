package cuda

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"unsafe"

	"github.com/ebitengine/purego"
)

// The CUDA driver API, loaded at run time from libcuda.so.1 with purego, so
// that greta stays one static binary built with CGO_ENABLED=0. Every call
// goes through purego.SyscallN with the pointer conversions written in the
// call expression itself, where SyscallN's go:uintptrescapes keeps the
// pointed-to memory alive and on the heap.

type (
	cuResult    uintptr
	cuDevice    int32
	cuContext   uintptr
	cuModule    uintptr
	cuFunction  uintptr
	cuStream    uintptr
	cuEvent     uintptr
	cuGraph     uintptr
	cuGraphExec uintptr
	devPtr      uint64
)

const (
	cuSuccess       cuResult = 0
	cuErrOutOfMem   cuResult = 2
	cuErrNotInit    cuResult = 3
	cuErrNoDevice   cuResult = 100
	cuErrIllegalMem cuResult = 700
)

// Device attributes (CUdevice_attribute).
const (
	attrMaxSharedPerBlockOptin = 97
	attrComputeMajor           = 75
	attrComputeMinor           = 76
	attrSMCount                = 16
	attrL2Size                 = 38
	attrMemBusWidth            = 37
	attrMemClockKHz            = 36
)

const funcAttrMaxDynamicShared = 8 // CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES

// driver holds the symbols of libcuda.
type driver struct {
	lib uintptr

	init, driverGetVersion, deviceGetCount, deviceGet, deviceGetName        uintptr
	deviceGetAttribute, deviceTotalMem, primaryCtxRetain, primaryCtxRelease uintptr
	ctxSetCurrent, ctxSynchronize                                           uintptr
	memAlloc, memFree, memAllocHost, memFreeHost, memGetInfo                uintptr
	memcpyHtoD, memcpyDtoH, memcpyHtoDAsync, memcpyDtoHAsync                uintptr
	memcpyDtoDAsync, memsetD32Async                                         uintptr
	moduleLoadData, moduleGetFunction, moduleUnload, funcSetAttribute       uintptr
	launchKernel, launchKernelEx                                            uintptr
	streamCreate, streamSynchronize, streamDestroy                          uintptr
	eventCreate, eventRecord, eventSynchronize, eventElapsedTime            uintptr
	eventDestroy                                                            uintptr
	streamBeginCapture, streamEndCapture, graphInstantiate, graphLaunch     uintptr
	graphExecDestroy, graphDestroy                                          uintptr
	getErrorName, getErrorString                                            uintptr
	occupancy, funcGetAttribute                                             uintptr
}

// libcudaNames are tried in order; the first is what the driver package
// installs on every Linux system with an NVIDIA driver.
var libcudaNames = []string{"libcuda.so.1", "libcuda.so", "/usr/lib/x86_64-linux-gnu/libcuda.so.1", "/usr/lib64/libcuda.so.1", "/usr/local/nvidia/lib64/libcuda.so.1"}

func dlopenFirst(names []string) (uintptr, string, error) {
	var errs []string
	for _, n := range names {
		h, err := purego.Dlopen(n, purego.RTLD_NOW|purego.RTLD_GLOBAL)
		if err == nil {
			return h, n, nil
		}
		errs = append(errs, err.Error())
	}
	return 0, "", errors.New(strings.Join(errs, "; "))
}

func loadDriver() (*driver, error) {
	if runtime.GOOS != "linux" {
		return nil, fmt.Errorf("no CUDA driver: the CUDA backend runs on Linux only (this is %s)", runtime.GOOS)
	}
	h, _, err := dlopenFirst(libcudaNames)
	if err != nil {
		return nil, errors.New("no CUDA driver: libcuda.so.1 not found (is the NVIDIA driver installed?)")
	}
	d := &driver{lib: h}
	var missing []string
	sym := func(dst *uintptr, names ...string) {
		for _, n := range names {
			if p, err := purego.Dlsym(h, n); err == nil && p != 0 {
				*dst = p
				return
			}
		}
		missing = append(missing, names[0])
	}
	sym(&d.init, "cuInit")
	sym(&d.driverGetVersion, "cuDriverGetVersion")
	sym(&d.deviceGetCount, "cuDeviceGetCount")
	sym(&d.deviceGet, "cuDeviceGet")
	sym(&d.deviceGetName, "cuDeviceGetName")
	sym(&d.deviceGetAttribute, "cuDeviceGetAttribute")
	sym(&d.deviceTotalMem, "cuDeviceTotalMem_v2")
	sym(&d.primaryCtxRetain, "cuDevicePrimaryCtxRetain")
	sym(&d.primaryCtxRelease, "cuDevicePrimaryCtxRelease_v2", "cuDevicePrimaryCtxRelease")
	sym(&d.ctxSetCurrent, "cuCtxSetCurrent")
	sym(&d.ctxSynchronize, "cuCtxSynchronize")
	sym(&d.memAlloc, "cuMemAlloc_v2")
	sym(&d.memFree, "cuMemFree_v2")
	sym(&d.memAllocHost, "cuMemAllocHost_v2")
	sym(&d.memFreeHost, "cuMemFreeHost")
	sym(&d.memGetInfo, "cuMemGetInfo_v2")
	sym(&d.memcpyHtoD, "cuMemcpyHtoD_v2")
	sym(&d.memcpyDtoH, "cuMemcpyDtoH_v2")
	sym(&d.memcpyHtoDAsync, "cuMemcpyHtoDAsync_v2")
	sym(&d.memcpyDtoHAsync, "cuMemcpyDtoHAsync_v2")
	sym(&d.memcpyDtoDAsync, "cuMemcpyDtoDAsync_v2")
	sym(&d.memsetD32Async, "cuMemsetD32Async")
	sym(&d.moduleLoadData, "cuModuleLoadData")
	sym(&d.moduleGetFunction, "cuModuleGetFunction")
	sym(&d.moduleUnload, "cuModuleUnload")
	sym(&d.funcSetAttribute, "cuFuncSetAttribute")
	sym(&d.launchKernel, "cuLaunchKernel")
	sym(&d.streamCreate, "cuStreamCreate")
	sym(&d.streamSynchronize, "cuStreamSynchronize")
	sym(&d.streamDestroy, "cuStreamDestroy_v2", "cuStreamDestroy")
	sym(&d.eventCreate, "cuEventCreate")
	sym(&d.eventRecord, "cuEventRecord")
	sym(&d.eventSynchronize, "cuEventSynchronize")
	sym(&d.eventElapsedTime, "cuEventElapsedTime_v2", "cuEventElapsedTime")
	sym(&d.eventDestroy, "cuEventDestroy_v2", "cuEventDestroy")
	sym(&d.streamBeginCapture, "cuStreamBeginCapture_v2", "cuStreamBeginCapture")
	sym(&d.streamEndCapture, "cuStreamEndCapture")
	sym(&d.graphInstantiate, "cuGraphInstantiateWithFlags")
	sym(&d.graphLaunch, "cuGraphLaunch")
	sym(&d.graphExecDestroy, "cuGraphExecDestroy")
	sym(&d.graphDestroy, "cuGraphDestroy")
	sym(&d.getErrorName, "cuGetErrorName")
	sym(&d.getErrorString, "cuGetErrorString")
	sym(&d.occupancy, "cuOccupancyMaxActiveBlocksPerMultiprocessor")
	sym(&d.funcGetAttribute, "cuFuncGetAttribute")
	if len(missing) > 0 {
		return nil, fmt.Errorf("no usable CUDA driver: libcuda.so.1 lacks %s (driver too old?)", strings.Join(missing, ", "))
	}
	// Optional (CUDA 11.8+): launches with attributes, for programmatic
	// dependent launch.
	if p, err := purego.Dlsym(h, "cuLaunchKernelEx"); err == nil {
		d.launchKernelEx = p
	}
	return d, nil
}

// cstring reads a NUL-terminated C string owned by a library.
func cstring(p *byte) string {
	if p == nil {
		return ""
	}
	var b []byte
	for i := 0; i < 4096; i++ {
		c := *(*byte)(unsafe.Add(unsafe.Pointer(p), i))
		if c == 0 {
			break
		}
		b = append(b, c)
	}
	return string(b)
}

// cuError is a failed driver call.
type cuError struct {
	code cuResult
	name string
	desc string
	call string
}

func (e *cuError) Error() string {
	return fmt.Sprintf("%s: %s (%s, %d)", e.call, e.desc, e.name, int(e.code))
}

func (d *driver) err(r cuResult, call string) error {
	if r == cuSuccess {
		return nil
	}
	var pn, ps *byte
	purego.SyscallN(d.getErrorName, uintptr(r), uintptr(unsafe.Pointer(&pn)))
	purego.SyscallN(d.getErrorString, uintptr(r), uintptr(unsafe.Pointer(&ps)))
	name, desc := cstring(pn), cstring(ps)
	if name == "" {
		name = "CUDA_ERROR_UNKNOWN"
	}
	if desc == "" {
		desc = "unknown error"
	}
	return &cuError{code: r, name: name, desc: desc, call: call}
}

func (d *driver) call(fn uintptr, args ...uintptr) cuResult {
	r, _, _ := purego.SyscallN(fn, args...)
	return cuResult(uint32(r))
}

func (d *driver) Init() error { return d.err(d.call(d.init, 0), "cuInit") }

func (d *driver) DriverVersion() (int, error) {
	var v int32
	r, _, _ := purego.SyscallN(d.driverGetVersion, uintptr(unsafe.Pointer(&v)))
	return int(v), d.err(cuResult(uint32(r)), "cuDriverGetVersion")
}

func (d *driver) DeviceCount() (int, error) {
	var n int32
	r, _, _ := purego.SyscallN(d.deviceGetCount, uintptr(unsafe.Pointer(&n)))
	return int(n), d.err(cuResult(uint32(r)), "cuDeviceGetCount")
}

func (d *driver) Device(ordinal int) (cuDevice, error) {
	var dev int32
	r, _, _ := purego.SyscallN(d.deviceGet, uintptr(unsafe.Pointer(&dev)), uintptr(ordinal))
	return cuDevice(dev), d.err(cuResult(uint32(r)), "cuDeviceGet")
}

func (d *driver) DeviceName(dev cuDevice) string {
	buf := make([]byte, 256)
	purego.SyscallN(d.deviceGetName, uintptr(unsafe.Pointer(&buf[0])), 256, uintptr(dev))
	if i := strings.IndexByte(string(buf), 0); i >= 0 {
		buf = buf[:i]
	}
	return string(buf)
}

func (d *driver) Attr(dev cuDevice, attr int) int {
	var v int32
	purego.SyscallN(d.deviceGetAttribute, uintptr(unsafe.Pointer(&v)), uintptr(attr), uintptr(dev))
	return int(v)
}

func (d *driver) TotalMem(dev cuDevice) uint64 {
	var v uint64
	purego.SyscallN(d.deviceTotalMem, uintptr(unsafe.Pointer(&v)), uintptr(dev))
	return v
}

func (d *driver) PrimaryCtxRetain(dev cuDevice) (cuContext, error) {
	var c uintptr
	r, _, _ := purego.SyscallN(d.primaryCtxRetain, uintptr(unsafe.Pointer(&c)), uintptr(dev))
	return cuContext(c), d.err(cuResult(uint32(r)), "cuDevicePrimaryCtxRetain")
}

func (d *driver) PrimaryCtxRelease(dev cuDevice) {
	d.call(d.primaryCtxRelease, uintptr(dev))
}

func (d *driver) CtxSetCurrent(c cuContext) error {
	return d.err(d.call(d.ctxSetCurrent, uintptr(c)), "cuCtxSetCurrent")
}

func (d *driver) MemAlloc(n uint64) (devPtr, error) {
	var p uint64
	r, _, _ := purego.SyscallN(d.memAlloc, uintptr(unsafe.Pointer(&p)), uintptr(n))
	return devPtr(p), d.err(cuResult(uint32(r)), "cuMemAlloc")
}

func (d *driver) MemFree(p devPtr) { d.call(d.memFree, uintptr(p)) }

func (d *driver) MemAllocHost(n uint64) (unsafe.Pointer, error) {
	var p unsafe.Pointer // C memory from the driver: never moved or collected
	r, _, _ := purego.SyscallN(d.memAllocHost, uintptr(unsafe.Pointer(&p)), uintptr(n))
	return p, d.err(cuResult(uint32(r)), "cuMemAllocHost")
}

func (d *driver) MemFreeHost(p unsafe.Pointer) { d.call(d.memFreeHost, uintptr(p)) }

func (d *driver) MemInfo() (free, total uint64) {
	purego.SyscallN(d.memGetInfo, uintptr(unsafe.Pointer(&free)), uintptr(unsafe.Pointer(&total)))
	return
}

// MemcpyHtoD copies len(src) bytes synchronously.
func (d *driver) MemcpyHtoD(dst devPtr, src []byte) error {
	if len(src) == 0 {
		return nil
	}
	r, _, _ := purego.SyscallN(d.memcpyHtoD, uintptr(dst), uintptr(unsafe.Pointer(&src[0])), uintptr(len(src)))
	return d.err(cuResult(uint32(r)), "cuMemcpyHtoD")
}

// MemcpyDtoH copies n bytes into dst (Go memory) synchronously.
func (d *driver) MemcpyDtoH(dst unsafe.Pointer, src devPtr, n uint64) error {
	if n == 0 {
		return nil
	}
	r, _, _ := purego.SyscallN(d.memcpyDtoH, uintptr(dst), uintptr(src), uintptr(n))
	return d.err(cuResult(uint32(r)), "cuMemcpyDtoH")
}

// MemcpyHtoDAsync copies from pinned host memory.
func (d *driver) MemcpyHtoDAsync(dst devPtr, src unsafe.Pointer, n uint64, s cuStream) error {
	r, _, _ := purego.SyscallN(d.memcpyHtoDAsync, uintptr(dst), uintptr(src), uintptr(n), uintptr(s))
	return d.err(cuResult(uint32(r)), "cuMemcpyHtoDAsync")
}

func (d *driver) MemcpyDtoHAsync(dst unsafe.Pointer, src devPtr, n uint64, s cuStream) error {
	r, _, _ := purego.SyscallN(d.memcpyDtoHAsync, uintptr(dst), uintptr(src), uintptr(n), uintptr(s))
	return d.err(cuResult(uint32(r)), "cuMemcpyDtoHAsync")
}

func (d *driver) MemcpyDtoDAsync(dst, src devPtr, n uint64, s cuStream) error {
	return d.err(d.call(d.memcpyDtoDAsync, uintptr(dst), uintptr(src), uintptr(n), uintptr(s)), "cuMemcpyDtoDAsync")
}

func (d *driver) MemsetD32Async(dst devPtr, v uint32, n uint64, s cuStream) error {
	return d.err(d.call(d.memsetD32Async, uintptr(dst), uintptr(v), uintptr(n), uintptr(s)), "cuMemsetD32Async")
}

func (d *driver) ModuleLoadData(image []byte) (cuModule, error) {
	var m uintptr
	r, _, _ := purego.SyscallN(d.moduleLoadData, uintptr(unsafe.Pointer(&m)), uintptr(unsafe.Pointer(&image[0])))
	return cuModule(m), d.err(cuResult(uint32(r)), "cuModuleLoadData")
}

func (d *driver) ModuleGetFunction(m cuModule, name string) (cuFunction, error) {
	var f uintptr
	cname := append([]byte(name), 0)
	r, _, _ := purego.SyscallN(d.moduleGetFunction, uintptr(unsafe.Pointer(&f)), uintptr(m), uintptr(unsafe.Pointer(&cname[0])))
	return cuFunction(f), d.err(cuResult(uint32(r)), "cuModuleGetFunction("+name+")")
}

func (d *driver) ModuleUnload(m cuModule) { d.call(d.moduleUnload, uintptr(m)) }

// Occupancy is how many blocks of f fit on one SM at once.
func (d *driver) Occupancy(f cuFunction, blockSize, smem int) int {
	var n int32
	r, _, _ := purego.SyscallN(d.occupancy, uintptr(unsafe.Pointer(&n)), uintptr(f), uintptr(blockSize), uintptr(smem))
	if cuResult(uint32(r)) != cuSuccess {
		return 0
	}
	return int(n)
}

const funcAttrNumRegs = 4 // CU_FUNC_ATTRIBUTE_NUM_REGS

func (d *driver) FuncAttr(f cuFunction, attr int) int {
	var v int32
	purego.SyscallN(d.funcGetAttribute, uintptr(unsafe.Pointer(&v)), uintptr(attr), uintptr(f))
	return int(v)
}

func (d *driver) FuncSetAttribute(f cuFunction, attr, v int) error {
	return d.err(d.call(d.funcSetAttribute, uintptr(f), uintptr(attr), uintptr(v)), "cuFuncSetAttribute")
}

// LaunchKernel launches f; params points to an array of pointers to the
// argument values, in memory the caller keeps alive through the call.
func (d *driver) LaunchKernel(f cuFunction, grid, block [3]uint32, shared uint32, s cuStream, params unsafe.Pointer) cuResult {
	r, _, _ := purego.SyscallN(d.launchKernel, uintptr(f),
		uintptr(grid[0]), uintptr(grid[1]), uintptr(grid[2]),
		uintptr(block[0]), uintptr(block[1]), uintptr(block[2]),
		uintptr(shared), uintptr(s), uintptr(params), 0)
	return cuResult(uint32(r))
}

// launchConfig is CUlaunchConfig with room for one attribute
// (CUlaunchAttribute: a 4-byte id, 4 bytes of padding, a 64-byte union).
type launchConfig struct {
	grid, block [3]uint32
	smem        uint32
	_           uint32
	stream      cuStream
	attrs       uintptr // &attr
	nattrs      uint32
	_           uint32

	attrID  uint32
	_       uint32
	attrVal [64]byte
}

const launchAttrProgrammaticSerialization = 6 // CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION

// LaunchKernelPDL launches f allowing it to start before the previous
// kernel in the stream has finished (programmatic dependent launch): the
// kernel must execute griddepcontrol.wait before it reads anything an
// earlier kernel writes, or writes anything an earlier kernel reads. cfg is
// the caller's, kept alive (and not moved) through the call.
func (d *driver) LaunchKernelPDL(cfg *launchConfig, f cuFunction, grid, block [3]uint32, shared uint32, s cuStream, params unsafe.Pointer) cuResult {
	cfg.grid, cfg.block, cfg.smem, cfg.stream = grid, block, shared, s
	cfg.attrs = uintptr(unsafe.Pointer(&cfg.attrID))
	cfg.nattrs = 1
	cfg.attrID = launchAttrProgrammaticSerialization
	cfg.attrVal = [64]byte{0: 1} // programmaticStreamSerializationAllowed = 1
	r, _, _ := purego.SyscallN(d.launchKernelEx, uintptr(unsafe.Pointer(cfg)), uintptr(f), uintptr(params), 0)
	return cuResult(uint32(r))
}

func (d *driver) StreamCreate(flags uint32) (cuStream, error) {
	var s uintptr
	r, _, _ := purego.SyscallN(d.streamCreate, uintptr(unsafe.Pointer(&s)), uintptr(flags))
	return cuStream(s), d.err(cuResult(uint32(r)), "cuStreamCreate")
}

func (d *driver) StreamSynchronize(s cuStream) error {
	return d.err(d.call(d.streamSynchronize, uintptr(s)), "cuStreamSynchronize")
}

func (d *driver) StreamDestroy(s cuStream) { d.call(d.streamDestroy, uintptr(s)) }

func (d *driver) EventCreate() (cuEvent, error) {
	var e uintptr
	r, _, _ := purego.SyscallN(d.eventCreate, uintptr(unsafe.Pointer(&e)), 0)
	return cuEvent(e), d.err(cuResult(uint32(r)), "cuEventCreate")
}

func (d *driver) EventRecord(e cuEvent, s cuStream) error {
	return d.err(d.call(d.eventRecord, uintptr(e), uintptr(s)), "cuEventRecord")
}

func (d *driver) EventSynchronize(e cuEvent) error {
	return d.err(d.call(d.eventSynchronize, uintptr(e)), "cuEventSynchronize")
}

func (d *driver) EventElapsed(start, end cuEvent) (float32, error) {
	var ms float32
	r, _, _ := purego.SyscallN(d.eventElapsedTime, uintptr(unsafe.Pointer(&ms)), uintptr(start), uintptr(end))
	return ms, d.err(cuResult(uint32(r)), "cuEventElapsedTime")
}

func (d *driver) EventDestroy(e cuEvent) { d.call(d.eventDestroy, uintptr(e)) }

// Stream capture modes.
const captureThreadLocal = 1

func (d *driver) BeginCapture(s cuStream) error {
	return d.err(d.call(d.streamBeginCapture, uintptr(s), captureThreadLocal), "cuStreamBeginCapture")
}

func (d *driver) EndCapture(s cuStream) (cuGraph, error) {
	var g uintptr
	r, _, _ := purego.SyscallN(d.streamEndCapture, uintptr(s), uintptr(unsafe.Pointer(&g)))
	return cuGraph(g), d.err(cuResult(uint32(r)), "cuStreamEndCapture")
}

func (d *driver) GraphInstantiate(g cuGraph) (cuGraphExec, error) {
	var e uintptr
	r, _, _ := purego.SyscallN(d.graphInstantiate, uintptr(unsafe.Pointer(&e)), uintptr(g), 0)
	return cuGraphExec(e), d.err(cuResult(uint32(r)), "cuGraphInstantiate")
}

func (d *driver) GraphLaunch(e cuGraphExec, s cuStream) error {
	return d.err(d.call(d.graphLaunch, uintptr(e), uintptr(s)), "cuGraphLaunch")
}

func (d *driver) GraphExecDestroy(e cuGraphExec) { d.call(d.graphExecDestroy, uintptr(e)) }
func (d *driver) GraphDestroy(g cuGraph)         { d.call(d.graphDestroy, uintptr(g)) }

// envFlag reads a 0/1 environment switch.
func envFlag(name string, def bool) bool {
	switch os.Getenv(name) {
	case "1", "true", "on", "yes":
		return true
	case "0", "false", "off", "no":
		return false
	}
	return def
}
