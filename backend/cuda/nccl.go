package cuda

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"unsafe"

	"github.com/ebitengine/purego"
)

// NCCL, the collectives library, loaded at run time from libnccl.so.2 with
// purego, as the driver is: the binary stays static and runs without NCCL
// wherever no collective is asked for. This is the foundation of tensor
// parallelism (docs/SCALE.md): the all-reduce after the row-parallel o and
// down projections. Only the calls that path needs are bound.
//
// NVLink multicast (NVLS) stays off: OpenNCCL sets NCCL_NVLS_ENABLE=0 in the
// process environment before NCCL reads it, unless the caller set it,
// because multicast can take a shared host's GPUs out of service.

type (
	ncclResult uintptr
	ncclComm   uintptr
)

// ncclUniqueID is NCCL_UNIQUE_ID_BYTES (128) opaque bytes.
type ncclUniqueID [128]byte

// NCCL data types and reduction ops (nccl.h).
const (
	ncclFloat16  = 6
	ncclFloat32  = 7
	ncclBfloat16 = 9
	ncclSum      = 0
)

// NCCL holds the symbols of libnccl.
type NCCL struct {
	lib  uintptr
	path string

	getVersion, getUniqueID, commInitRank, commInitAll, commDestroy uintptr
	allReduce, groupStart, groupEnd                                 uintptr
	errorString                                                     func(int32) string
}

// ncclNames are tried in order after an explicit path.
var ncclNames = []string{"libnccl.so.2", "libnccl.so", "/usr/lib/x86_64-linux-gnu/libnccl.so.2", "/usr/local/nvidia/lib64/libnccl.so.2"}

// ncclPythonGlobs find the library that pip's nvidia-nccl wheels install, the
// usual place on machines that hold PyTorch.
var ncclPythonGlobs = []string{
	"/usr/local/lib/python3*/dist-packages/nvidia/nccl/lib/libnccl.so.2",
	"/usr/local/lib/python3*/site-packages/nvidia/nccl/lib/libnccl.so.2",
	"/usr/lib/python3*/dist-packages/nvidia/nccl/lib/libnccl.so.2",
}

// OpenNCCL loads NCCL from path, or from the usual places when path is "".
// Without NCCL it returns one line that says so, never panics.
func OpenNCCL(path string) (*NCCL, error) {
	if runtime.GOOS != "linux" {
		return nil, fmt.Errorf("no NCCL: tensor parallelism runs on Linux only (this is %s)", runtime.GOOS)
	}
	if _, set := os.LookupEnv("NCCL_NVLS_ENABLE"); !set {
		os.Setenv("NCCL_NVLS_ENABLE", "0")
	}
	names := ncclNames
	if path != "" {
		names = []string{path}
	} else {
		for _, g := range ncclPythonGlobs {
			m, _ := filepath.Glob(g)
			names = append(names, m...)
		}
	}
	h, name, err := dlopenFirst(names)
	if err != nil {
		if path != "" {
			return nil, fmt.Errorf("no NCCL: cannot load %s: %v", path, err)
		}
		return nil, errors.New("no NCCL: libnccl.so.2 not found (install NCCL, or name the library's path)")
	}
	n := &NCCL{lib: h, path: name}
	syms := []struct {
		p    *uintptr
		name string
	}{
		{&n.getVersion, "ncclGetVersion"}, {&n.getUniqueID, "ncclGetUniqueId"},
		{&n.commInitRank, "ncclCommInitRank"}, {&n.commInitAll, "ncclCommInitAll"},
		{&n.commDestroy, "ncclCommDestroy"}, {&n.allReduce, "ncclAllReduce"},
		{&n.groupStart, "ncclGroupStart"}, {&n.groupEnd, "ncclGroupEnd"},
	}
	for _, s := range syms {
		p, err := purego.Dlsym(h, s.name)
		if err != nil {
			return nil, fmt.Errorf("no NCCL: %s lacks %s", name, s.name)
		}
		*s.p = p
	}
	if _, err := purego.Dlsym(h, "ncclGetErrorString"); err != nil {
		return nil, fmt.Errorf("no NCCL: %s lacks ncclGetErrorString", name)
	}
	purego.RegisterLibFunc(&n.errorString, h, "ncclGetErrorString")
	return n, nil
}

// Path is the library that was loaded.
func (n *NCCL) Path() string { return n.path }

func (n *NCCL) err(r ncclResult, call string) error {
	if r == 0 {
		return nil
	}
	return fmt.Errorf("%s: %s (NCCL error %d)", call, n.errorString(int32(r)), int(r))
}

func (n *NCCL) call(fn uintptr, args ...uintptr) ncclResult {
	r, _, _ := purego.SyscallN(fn, args...)
	return ncclResult(uint32(r))
}

// Version is NCCL's version code (major·10000 + minor·100 + patch).
func (n *NCCL) Version() (int, error) {
	var v int32
	if err := n.err(n.call(n.getVersion, uintptr(unsafe.Pointer(&v))), "ncclGetVersion"); err != nil {
		return 0, err
	}
	return int(v), nil
}

// CommInitAll makes one communicator per device of devs, in one process
// (one goroutine driving every GPU).
func (n *NCCL) CommInitAll(devs []int) ([]ncclComm, error) {
	if len(devs) == 0 {
		return nil, errors.New("ncclCommInitAll: no devices")
	}
	comms := make([]ncclComm, len(devs))
	list := make([]int32, len(devs))
	for i, d := range devs {
		list[i] = int32(d)
	}
	r := n.call(n.commInitAll, uintptr(unsafe.Pointer(&comms[0])), uintptr(len(devs)), uintptr(unsafe.Pointer(&list[0])))
	if err := n.err(r, "ncclCommInitAll"); err != nil {
		return nil, err
	}
	return comms, nil
}

// CommDestroy frees a communicator.
func (n *NCCL) CommDestroy(c ncclComm) error {
	return n.err(n.call(n.commDestroy, uintptr(c)), "ncclCommDestroy")
}

// AllReduceF32 sums count float32 values of send over the communicator's
// ranks into recv (which may be send), queued on stream s.
func (n *NCCL) AllReduceF32(send, recv devPtr, count int, c ncclComm, s cuStream) error {
	r := n.call(n.allReduce, uintptr(send), uintptr(recv), uintptr(count), ncclFloat32, ncclSum, uintptr(c), uintptr(s))
	return n.err(r, "ncclAllReduce")
}

// GroupStart and GroupEnd bracket the calls of several ranks issued from
// one goroutine, so that NCCL launches them together.
func (n *NCCL) GroupStart() error { return n.err(n.call(n.groupStart), "ncclGroupStart") }
func (n *NCCL) GroupEnd() error   { return n.err(n.call(n.groupEnd), "ncclGroupEnd") }
