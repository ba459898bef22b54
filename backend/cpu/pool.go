// Package cpu runs GRETA's kernels on the CPU: a persistent worker pool and
// quantized matrix multiplication for every weight format of package quant.
//
// Each SIMD kernel (files *_simd.go, and the assembly in *_amd64.s for
// CPUs with AVX-512 VNNI, built with GOEXPERIMENT=simd on amd64) has a
// pure-Go twin (always built) that is its documentation and test oracle;
// Pool.Generic forces the twins. docs/QUANT.md describes the kernels.
package cpu

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// Task is work that Pool.Run splits across threads. Do processes the items
// [lo, hi) on worker w, 0 ≤ w < Pool.Threads(); calls with the same w never
// overlap, so w can index per-worker scratch. Pass a pointer type: storing a
// pointer in the interface does not allocate.
type Task interface {
	Do(w, lo, hi int)
}

// Pool is a fixed set of worker goroutines that run parallel loops without
// allocating. Worker 0 is the goroutine that calls Run; the others spin for
// a while after each job (so back-to-back ops of a decode step start at once)
// and then park on a channel.
//
// A Pool is not safe for concurrent use: one Run or MatMul at a time.
type Pool struct {
	// Generic forces the pure-Go kernels of MatMul even where SIMD ones
	// were built; tests use it to check both.
	Generic bool
	// Act chooses how MatMul treats the activations of quantized weights
	// (see Activations). The zero value is ActAuto.
	Act Activations
	// noVNNI drops the assembly kernels (tests and benchmarks compare).
	noVNNI bool

	threads int
	workers []*worker
	wg      sync.WaitGroup

	// The current job, published by gen.
	task    Task
	n       int64
	chunk   int64
	guided  int64 // > 0: guided chunks (remaining/(guided·threads), at least chunk)
	next    atomic.Int64
	pending atomic.Int32
	gen     atomic.Uint32
	closed  atomic.Bool

	mm    matmulState // MatMul's task and scratch, reused by every call
	roles roleScratch // MatMulRoles' gathered rows
}

type worker struct {
	parked atomic.Bool
	wake   chan struct{}
}

// spinLimit is how many polls a worker makes (about 50-100 µs) before it
// parks.
const spinLimit = 1 << 14

// NewPool starts a pool of threads workers (runtime.NumCPU() if threads ≤ 0),
// the caller's goroutine counting as one.
func NewPool(threads int) *Pool {
	if threads <= 0 {
		threads = runtime.NumCPU()
	}
	p := &Pool{threads: threads}
	for i := 1; i < threads; i++ {
		w := &worker{wake: make(chan struct{}, 1)}
		p.workers = append(p.workers, w)
		p.wg.Add(1)
		go p.loop(i, w)
	}
	p.mm.init(p)
	return p
}

// Threads is the number of workers, the caller included.
func (p *Pool) Threads() int { return p.threads }

// Close stops the workers. The pool must not be used afterwards.
func (p *Pool) Close() {
	if p.closed.Swap(true) {
		return
	}
	p.gen.Add(1)
	for _, w := range p.workers {
		if w.parked.CompareAndSwap(true, false) {
			w.wake <- struct{}{}
		}
	}
	p.wg.Wait()
}

// Run calls t.Do over [0, n) split into chunks shared dynamically among the
// workers, and returns when all are done. It does not allocate.
func (p *Pool) Run(n int, t Task) {
	// About four chunks per thread balances a noisy machine without making
	// chunks so small that the shared counter becomes contended.
	p.runChunks(n, 4, t)
}

// runChunks is Run with about per chunks per thread.
func (p *Pool) runChunks(n, per int, t Task) {
	if n <= 0 {
		return
	}
	if p.threads == 1 || n == 1 {
		t.Do(0, 0, n)
		return
	}
	chunk := max(1, (n+per*p.threads-1)/(per*p.threads))
	p.task, p.n, p.chunk = t, int64(n), int64(chunk)
	p.guided = 0
	p.start()
}

// start publishes the job set up in p and runs worker 0's share.
func (p *Pool) start() {
	p.next.Store(0)
	p.pending.Store(int32(len(p.workers)))
	p.gen.Add(1) // publishes the job
	for _, w := range p.workers {
		if w.parked.CompareAndSwap(true, false) {
			w.wake <- struct{}{}
		}
	}
	p.work(0)
	for i := 0; p.pending.Load() != 0; i++ {
		if i&63 == 63 {
			runtime.Gosched()
		}
	}
	p.task = nil
}

// runGuided is Run with guided self-scheduling: each grab takes
// remaining/(div·threads) items, at least min: long runs first (one
// prefetch stream each), short ones at the end so that the threads finish
// together.
func (p *Pool) runGuided(n, div, min int, t Task) {
	if n <= 0 {
		return
	}
	if p.threads == 1 || n == 1 {
		t.Do(0, 0, n)
		return
	}
	p.task, p.n, p.chunk, p.guided = t, int64(n), int64(max(1, min)), int64(div*p.threads)
	p.start()
}

func (p *Pool) work(id int) {
	if p.guided > 0 {
		for {
			lo := p.next.Load()
			if lo >= p.n {
				return
			}
			hi := min(p.n, lo+max(p.chunk, (p.n-lo)/p.guided))
			if !p.next.CompareAndSwap(lo, hi) {
				continue
			}
			p.task.Do(id, int(lo), int(hi))
		}
	}
	for {
		lo := p.next.Add(p.chunk) - p.chunk
		if lo >= p.n {
			return
		}
		p.task.Do(id, int(lo), int(min(lo+p.chunk, p.n)))
	}
}

func (p *Pool) loop(id int, w *worker) {
	defer p.wg.Done()
	// Generation 0 is the pool's state at NewPool; reading p.gen here
	// instead could miss a job published before this goroutine first ran.
	seen := uint32(0)
	for {
		for spins := 0; p.gen.Load() == seen; spins++ {
			if spins&63 == 63 {
				runtime.Gosched()
			}
			if spins < spinLimit {
				continue
			}
			// Park. Run publishes gen before it looks at parked, and we set
			// parked before we look at gen, so one of us sees the other:
			// either we see the new job, or Run sees us parked and sends.
			w.parked.Store(true)
			if p.gen.Load() == seen || !w.parked.CompareAndSwap(true, false) {
				<-w.wake
			}
			spins = 0
		}
		seen = p.gen.Load()
		if p.closed.Load() {
			return
		}
		p.work(id)
		p.pending.Add(-1)
	}
}
