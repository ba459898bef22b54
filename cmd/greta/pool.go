package main

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"

	flag "github.com/spf13/pflag"

	eng "greta/engine"
	"greta/ml"
	"greta/sample"
)

// poolFlags size the engine a command runs its requests through: how many
// sequences at once, the KV pool, the prefill budget of a step, prefix
// reuse. bench takes --parallel as a list and adds it itself.
type poolFlags struct {
	parallel      *int
	kvBudget      *string
	prefillBudget *int
	noPrefix      *bool
}

// maxParallel is the engine's own limit on sequences at once.
const maxParallel = 1 << 16

func addPoolFlags(fs *flag.FlagSet, withParallel bool, parallelHelp string) *poolFlags {
	p := &poolFlags{}
	if withParallel {
		p.parallel = fs.Int("parallel", 0, parallelHelp)
	}
	p.kvBudget = fs.String("kv-budget", "", "KV cache pool: a size (512MiB, 2GiB, 1e9) or a fraction of the memory free after loading (0.9, 90%: of available RAM on the CPU, of the GPU's free memory where the backend reports it). Default: --parallel sequences of --ctx tokens, at most 1 GiB unless one context needs more")
	p.prefillBudget = fs.Int("prefill-budget", 2048, "most prompt tokens one engine step computes over all sequences (chunked prefill; default: --batch's value when only --batch is given)")
	p.noPrefix = fs.Bool("no-prefix-cache", false, "do not reuse the KV pages of an earlier prompt's identical prefix")
	return p
}

// budget returns the prefill budget: --prefill-budget, or --batch when only
// that was given (it meant the same before the engine).
func (p *poolFlags) budget(fs *flag.FlagSet, batch int) int {
	if !fs.Changed("prefill-budget") && fs.Changed("batch") {
		return batch
	}
	return *p.prefillBudget
}

// check validates the pool flags that need no model.
func (p *poolFlags) check(fs *flag.FlagSet, batch int) error {
	if p.parallel != nil && (*p.parallel < 0 || *p.parallel > maxParallel) {
		return &sample.RangeError{Field: "parallel", Value: fmt.Sprint(*p.parallel), Want: fmt.Sprintf("a sequence count in [1, %d] (0: the default)", maxParallel)}
	}
	if b := p.budget(fs, batch); b < 1 || b > 1<<20 {
		return &sample.RangeError{Field: "prefill_budget", Value: fmt.Sprint(b), Want: fmt.Sprintf("a token count in [1, %d]", 1<<20)}
	}
	if _, _, err := parseKVBudget(*p.kvBudget); err != nil {
		return usageError("--kv-budget: %v", err)
	}
	return nil
}

// parseKVBudget reads --kv-budget: "" (the default), a byte count with an
// optional suffix (K, M, G, T or KiB..TiB: powers of 1024; KB..TB: of
// 1000; B), or a fraction of free memory: a plain number in (0, 1] or a
// percentage.
func parseKVBudget(s string) (bytes int64, frac float64, err error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, 0, nil
	}
	if p, ok := strings.CutSuffix(s, "%"); ok {
		v, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil || !(v > 0 && v <= 100) {
			return 0, 0, fmt.Errorf("%q: want a percentage in (0, 100]", s)
		}
		return 0, v / 100, nil
	}
	if v, err := strconv.ParseFloat(s, 64); err == nil && v > 0 && v <= 1 {
		return 0, v, nil
	}
	b, err := parseSize(s)
	if err != nil {
		return 0, 0, err
	}
	if b == 0 {
		return 0, 0, fmt.Errorf("%q: want a size such as 512MiB or 2GiB, or a fraction of free memory such as 0.9", s)
	}
	return b, 0, nil
}

// parseSize reads a size: a number with an optional suffix (K, M, G, T or
// KiB..TiB: powers of 1024; KB..TB: of 1000; B). The flags that take sizes
// (--kv-budget, serve's --max-body) read them here.
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	num := strings.TrimRightFunc(s, func(r rune) bool { return r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' })
	unit := strings.ToLower(strings.TrimSpace(s[len(num):]))
	v, perr := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if perr != nil || math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		return 0, fmt.Errorf("%q is not a size (e.g. 512MiB, 2GiB or a byte count)", s)
	}
	mult := map[string]float64{"": 1, "b": 1,
		"k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tib": 1 << 40,
		"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12}[unit]
	if mult == 0 {
		return 0, fmt.Errorf("%q: unknown unit %q (expected B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)", s, unit)
	}
	b := v * mult
	if b > 1<<60 {
		return 0, fmt.Errorf("%q: too large", s)
	}
	return int64(b), nil
}

// kvCacheType is the cache type the engine is asked for: --cache-type on
// CUDA; the other backends hold their own type whatever the flag says (as
// before the engine).
func kvCacheType(e *engine, flag string) string {
	if e.backend.Name() != "cuda" {
		return ""
	}
	return flag
}

// kvBytesPerToken is what one position costs in the engine's pool: keys
// and values of every layer, in the cache's value type (as the engine
// sizes it).
func kvBytesPerToken(e *engine, cacheType string) int64 {
	c := e.model.Config
	elem := int64(4)
	switch {
	case e.backend.DType() == "f64":
		elem = 8
	case cacheType == "f16", cacheType == "" && e.backend.Name() == "cuda":
		elem = 2
	}
	return int64(c.NLayers) * int64(c.KVDim()) * 2 * elem
}

// freeMemory returns the memory free for the KV pool on e's device: the
// GPU's free memory (when the backend reports it), or the RAM available on
// the CPU.
func freeMemory(e *engine) (int64, error) {
	if m, ok := e.backend.(interface{ MemInfo() (free, total uint64) }); ok {
		free, _ := m.MemInfo()
		return int64(free), nil
	}
	if e.backend.Name() == "cuda" {
		return 0, fmt.Errorf("the cuda backend does not report its free memory: give --kv-budget as a size, such as 8GiB")
	}
	return memAvailable()
}

// memAvailable reads MemAvailable from /proc/meminfo.
func memAvailable() (int64, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, fmt.Errorf("available memory unknown (%v): give --kv-budget as a size, such as 2GiB", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "MemAvailable:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err == nil {
				return kb << 10, nil
			}
		}
	}
	return 0, fmt.Errorf("no MemAvailable in /proc/meminfo: give --kv-budget as a size, such as 2GiB")
}

// poolSpec is what an engine is started with, beyond the flags.
type poolSpec struct {
	parallel int // sequences at once
	context  int // most tokens of one sequence
	// minTokens, if > 0, is the pool's size by default instead of
	// parallel × context (bench knows exactly what it needs).
	minTokens int
}

// engineOptions turns the pool flags and the loaded model into the
// engine's options.
func (p *poolFlags) engineOptions(fs *flag.FlagSet, ef *engineFlags, e *engine, ps poolSpec) (eng.Options, error) {
	o := eng.Options{Parallel: ps.parallel, Context: ps.context, CacheType: kvCacheType(e, *ef.cache),
		PrefillBudget: p.budget(fs, *ef.batch), NoPrefixCache: *p.noPrefix, QueueSize: max(256, ps.parallel+1)}
	if *p.kvBudget == "" && ps.minTokens > 0 {
		o.Pages = (ps.minTokens + ml.PageSize - 1) / ml.PageSize
		return o, nil
	}
	var err error
	o.Pages, err = kvPages(e, *p.kvBudget, ps.parallel, ps.context, o.CacheType)
	return o, err
}

// kvPages is the KV pool's size in pages for --kv-budget spec (a size, a
// fraction of the free memory, or "" for the default) with parallel
// sequences of ctx tokens. The default gives every sequence its whole
// context, within 90 % of the free memory on a device that reports it
// (the GPU; vLLM's default share), within 1 GiB elsewhere (RAM is the
// whole machine's); one sequence always gets its whole context.
func kvPages(e *engine, spec string, parallel, ctx int, cacheType string) (int, error) {
	pageBytes := kvBytesPerToken(e, cacheType) * ml.PageSize
	bytes, frac, err := parseKVBudget(spec)
	if err != nil {
		return 0, usageError("--kv-budget: %v", err)
	}
	if frac > 0 {
		free, err := freeMemory(e)
		if err != nil {
			return 0, fmt.Errorf("--kv-budget %s: %w", spec, err)
		}
		bytes = int64(frac * float64(free))
	}
	if bytes > 0 {
		pages := int(min(bytes/pageBytes, 1<<30))
		if pages < 1 {
			return 0, fmt.Errorf("--kv-budget %s: %s holds no page of %d tokens (%s for this model)", spec, humanBytes(bytes), ml.PageSize, humanBytes(pageBytes))
		}
		return pages, nil
	}
	one := int64((ctx + ml.PageSize - 1) / ml.PageSize)
	limit := eng.DefaultKVBudget / pageBytes
	if m, ok := e.backend.(interface{ MemInfo() (free, total uint64) }); ok {
		free, _ := m.MemInfo()
		limit = int64(0.9*float64(free)) / pageBytes
	}
	return int(min(int64(parallel)*one, max(one, limit))), nil
}

// startEngine starts the engine on a loaded model.
func startEngine(e *engine, o eng.Options) (*eng.Engine, error) {
	en, err := eng.New(e.model, e.tok, o)
	if err != nil {
		return nil, err
	}
	e.sched = en
	return en, nil
}

// poolLine says how the engine is set up: the line printed at load.
func poolLine(e *engine, en *eng.Engine) string {
	st := en.Stats()
	o := en.Options()
	cacheType := o.CacheType
	return fmt.Sprintf("[%s] KV pool %d tokens (%d pages of %d, %s), context %d, parallel %d, prefill budget %d",
		e.backend.Name(), st.Pages*st.PageSize, st.Pages, st.PageSize, humanBytes(int64(st.Pages*st.PageSize)*kvBytesPerToken(e, cacheType)),
		o.Context, o.Parallel, o.PrefillBudget)
}
