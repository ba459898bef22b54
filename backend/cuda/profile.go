package cuda

import (
	"fmt"
	"io"
	"sort"
)

// profiler times every launch with events (GRETA_CUDA_PROFILE=1): each
// launch's time is from the event recorded after the launch before it to
// the one after it, so gaps between kernels count with the kernel that
// follows them. Graph replay is off while profiling.
type profiler struct {
	pool    []cuEvent
	used    int
	pending []profEntry
	totals  map[string]*profTotal
	steps   int
}

type profEntry struct {
	key string
	ev  cuEvent
}

type profTotal struct {
	ms float64
	n  int
}

func (b *Backend) profEvent() cuEvent {
	p := &b.prof
	if p.used == len(p.pool) {
		e, err := b.d.EventCreate()
		if err != nil {
			b.fatal("profile", err)
		}
		p.pool = append(p.pool, e)
	}
	e := p.pool[p.used]
	p.used++
	if err := b.d.EventRecord(e, b.stream); err != nil {
		b.fatal("profile", err)
	}
	return e
}

// profBegin starts timing a run of launches.
func (b *Backend) profBegin() {
	b.prof.used = 0
	b.prof.pending = append(b.prof.pending[:0], profEntry{"", b.profEvent()})
}

// profMark records the end of one launch.
func (b *Backend) profMark(key string) {
	b.prof.pending = append(b.prof.pending, profEntry{key, b.profEvent()})
}

// profEnd waits for the run and adds its launches to the totals.
func (b *Backend) profEnd() {
	p := &b.prof
	if len(p.pending) < 2 {
		return
	}
	last := p.pending[len(p.pending)-1].ev
	if err := b.d.EventSynchronize(last); err != nil {
		b.fatal("profile", err)
	}
	if p.totals == nil {
		p.totals = map[string]*profTotal{}
	}
	for i := 1; i < len(p.pending); i++ {
		ms, _ := b.d.EventElapsed(p.pending[i-1].ev, p.pending[i].ev)
		t := p.totals[p.pending[i].key]
		if t == nil {
			t = &profTotal{}
			p.totals[p.pending[i].key] = t
		}
		t.ms += float64(ms)
		t.n++
	}
	p.steps++
	p.pending = p.pending[:0]
}

func (p *profiler) print(w io.Writer) {
	if len(p.totals) == 0 {
		return
	}
	keys := make([]string, 0, len(p.totals))
	var total float64
	for k, t := range p.totals {
		keys = append(keys, k)
		total += t.ms
	}
	sort.Slice(keys, func(i, j int) bool { return p.totals[keys[i]].ms > p.totals[keys[j]].ms })
	fmt.Fprintf(w, "cuda profile: %d runs, %.3f ms of launches\n", p.steps, total)
	fmt.Fprintf(w, "%8s %8s %9s %6s  %s\n", "total ms", "calls", "us/call", "share", "kernel")
	for _, k := range keys {
		t := p.totals[k]
		fmt.Fprintf(w, "%8.3f %8d %9.2f %5.1f%%  %s\n", t.ms, t.n, 1000*t.ms/float64(t.n), 100*t.ms/total, k)
	}
}
