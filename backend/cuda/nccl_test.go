package cuda

import (
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
	"unsafe"
)

// TestNCCLAllReduce sums float32 buffers over 1 GPU (the N=1 path) and, where
// the machine has more, over 2 and all of them, one goroutine driving every
// GPU, and checks every element against the sum made here. It skips with a
// message where no driver, GPU or NCCL is present.
func TestNCCLAllReduce(t *testing.T) {
	d, err := loadDriver()
	if err != nil {
		t.Skipf("no GPU: %v", err)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := d.Init(); err != nil {
		t.Skipf("no GPU: %v", err)
	}
	count, err := d.DeviceCount()
	if err != nil || count == 0 {
		t.Skipf("no GPU: %v", err)
	}
	n, err := OpenNCCL("")
	if err != nil {
		t.Skipf("%v", err)
	}
	v, err := n.Version()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("NCCL %d from %s, %d GPUs", v, n.Path(), count)
	sizes := []int{1}
	if count >= 2 {
		sizes = append(sizes, 2)
	}
	if count > 2 {
		sizes = append(sizes, count)
	}
	const elems = 1<<20 + 3
	for _, ranks := range sizes {
		devs := make([]int, ranks)
		ctxs := make([]cuContext, ranks)
		streams := make([]cuStream, ranks)
		bufs := make([]devPtr, ranks)
		want := make([]float32, elems)
		for r := range devs {
			devs[r] = r
			dev, err := d.Device(r)
			if err != nil {
				t.Fatal(err)
			}
			if ctxs[r], err = d.PrimaryCtxRetain(dev); err != nil {
				t.Fatal(err)
			}
			defer d.PrimaryCtxRelease(dev)
			if err := d.CtxSetCurrent(ctxs[r]); err != nil {
				t.Fatal(err)
			}
			if streams[r], err = d.StreamCreate(1); err != nil {
				t.Fatal(err)
			}
			if bufs[r], err = d.MemAlloc(4 * elems); err != nil {
				t.Fatal(err)
			}
			host := make([]float32, elems)
			for i := range host {
				// Small integers: every order of summation gives the same float32.
				host[i] = float32(rand.IntN(2001) - 1000)
				want[i] += host[i]
			}
			if err := d.MemcpyHtoD(bufs[r], unsafe.Slice((*byte)(unsafe.Pointer(&host[0])), 4*elems)); err != nil {
				t.Fatal(err)
			}
		}
		comms, err := n.CommInitAll(devs)
		if err != nil {
			if strings.Contains(err.Error(), "unhandled cuda error") {
				t.Skipf("NCCL cannot drive these GPUs: %v", err)
			}
			t.Fatal(err)
		}
		if err := n.GroupStart(); err != nil {
			t.Fatal(err)
		}
		for r := range devs {
			d.CtxSetCurrent(ctxs[r])
			if err := n.AllReduceF32(bufs[r], bufs[r], elems, comms[r], streams[r]); err != nil {
				t.Fatal(err)
			}
		}
		if err := n.GroupEnd(); err != nil {
			t.Fatal(err)
		}
		for r := range devs {
			d.CtxSetCurrent(ctxs[r])
			if err := d.StreamSynchronize(streams[r]); err != nil {
				t.Fatal(err)
			}
			got := make([]float32, elems)
			if err := d.MemcpyDtoH(unsafe.Pointer(&got[0]), bufs[r], 4*elems); err != nil {
				t.Fatal(err)
			}
			for i := range got {
				if got[i] != want[i] {
					t.Fatalf("%d ranks, rank %d, element %d: %v, want %v", ranks, r, i, got[i], want[i])
				}
			}
			n.CommDestroy(comms[r])
			d.MemFree(bufs[r])
			d.StreamDestroy(streams[r])
		}
		t.Logf("all-reduce over %d GPU(s): %d floats, every element right", ranks, elems)
	}
}

// TestOpenNCCLMissing: a path that is not there is one line, not a panic.
func TestOpenNCCLMissing(t *testing.T) {
	_, err := OpenNCCL("/nonexistent/libnccl.so.2")
	if err == nil || !strings.HasPrefix(err.Error(), "no NCCL: ") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("got %v", err)
	}
}
