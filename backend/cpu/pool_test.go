package cpu

import (
	"sync/atomic"
	"testing"
	"time"
)

type countTask struct {
	hits    []atomic.Int32
	workers []atomic.Int32
}

func (c *countTask) Do(w, lo, hi int) {
	c.workers[w].Add(1)
	for i := lo; i < hi; i++ {
		c.hits[i].Add(1)
	}
}

func TestPoolRunCoversEachIndexOnce(t *testing.T) {
	for _, threads := range []int{1, 2, 3, 8} {
		p := NewPool(threads)
		for _, n := range []int{1, 2, 3, 7, 64, 1000} {
			for rep := range 3 {
				c := &countTask{hits: make([]atomic.Int32, n), workers: make([]atomic.Int32, threads)}
				p.Run(n, c)
				for i := range c.hits {
					if h := c.hits[i].Load(); h != 1 {
						t.Fatalf("threads %d n %d rep %d: index %d done %d times", threads, n, rep, i, h)
					}
				}
				// Guided chunks, then equal ones again (the mode must not stick).
				for _, g := range [][2]int{{2, 1}, {2, 2}, {1, 5}} {
					c := &countTask{hits: make([]atomic.Int32, n), workers: make([]atomic.Int32, threads)}
					p.runGuided(n, g[0], g[1], c)
					for i := range c.hits {
						if h := c.hits[i].Load(); h != 1 {
							t.Fatalf("guided %v threads %d n %d rep %d: index %d done %d times", g, threads, n, rep, i, h)
						}
					}
				}
			}
		}
		// After the workers have parked, Run must still wake them.
		time.Sleep(5 * time.Millisecond)
		c := &countTask{hits: make([]atomic.Int32, 100), workers: make([]atomic.Int32, threads)}
		p.Run(100, c)
		for i := range c.hits {
			if c.hits[i].Load() != 1 {
				t.Fatalf("after parking: index %d done %d times", i, c.hits[i].Load())
			}
		}
		p.Close()
		p.Close() // idempotent
	}
}

func TestPoolThreads(t *testing.T) {
	p := NewPool(0)
	defer p.Close()
	if p.Threads() < 1 {
		t.Fatalf("Threads() = %d", p.Threads())
	}
}

type nopTask struct{ n atomic.Int64 }

func (t *nopTask) Do(_, lo, hi int) { t.n.Add(int64(hi - lo)) }

func TestPoolRunNoAllocs(t *testing.T) {
	p := NewPool(2)
	defer p.Close()
	task := &nopTask{}
	if a := testing.AllocsPerRun(100, func() { p.Run(64, task) }); a != 0 {
		t.Errorf("%v allocations per Run", a)
	}
}

// BenchmarkPoolRun measures the dispatch overhead of one Run of tiny work:
// what a dim-64 model pays per op.
func BenchmarkPoolRun(b *testing.B) {
	p := NewPool(0)
	defer p.Close()
	task := &nopTask{}
	for b.Loop() {
		p.Run(64, task)
	}
}
