package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	flag "github.com/spf13/pflag"

	eng "greta/engine"
	"greta/generate"
	"greta/ml"
	"greta/sample"
)

func init() {
	register("bench", "measure prompt processing (pp) and generation (tg) speed, llama-bench style", cmdBench)
}

type benchStat struct {
	N   int     `json:"n"`
	TPS float64 `json:"tps"`
	SD  float64 `json:"sd"`
}

// benchResult is one test of the matrix, as llama-bench reports it.
type benchResult struct {
	Test    string `json:"test"` // "pp512", "tg128"
	NPrompt int    `json:"n_prompt"`
	NGen    int    `json:"n_gen"`
	Depth   int    `json:"depth"`
	Threads int    `json:"threads"`
	// Parallel is the number of sequences run together (--parallel), 0
	// for the single-sequence tests; Total marks the pp+tg entry.
	Parallel int     `json:"parallel,omitempty"`
	Total    bool    `json:"total,omitempty"`
	TPS      float64 `json:"tps"`
	SD       float64 `json:"sd"`
}

// maxBenchReps bounds -r: far past any useful repetition count.
const maxBenchReps = 1 << 16

func cmdBench(args []string) (err error) {
	fs := newFlags("bench", "--model M [-p 512[,..]] [-n 128[,..]] [-d 0[,..]] [-t 0[,..]] [-r 3] [--device D] [--json]")
	ef := addEngineFlagsNoThreads(fs, false)
	ps := fs.IntSliceP("n-prompt", "p", []int{512}, "prompt tokens for pp (a list: -p 128,512; 0: skip)")
	ns := fs.IntSliceP("n-gen", "n", []int{128}, "generated tokens for tg (a list; 0: skip)")
	ds := fs.IntSliceP("n-depth", "d", []int{0}, "tokens already in the context when each test starts (llama-bench's -d, a list); random tokens, not timed")
	ts := fs.IntSliceP("threads", "t", []int{0}, "CPU threads (a list: -t 1,2; 0: all cores)")
	levels := fs.IntSlice("parallel", nil, "sequences run together, llama-batched-bench style (a list: --parallel 1,4,16,64): each prefills -p tokens, then generates -n; reports pp, tg and total tokens/s summed over them")
	pf := addPoolFlags(fs, false, "")
	reps := fs.IntP("repetitions", "r", 3, "runs of each test")
	asJSON := fs.Bool("json", false, "print one JSON object")
	cpuProfile := fs.String("cpuprofile", "", "write a Go CPU profile of the timed runs")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("unexpected arguments %q", cut(strings.Join(fs.Args(), " "), 60))
	}
	if *reps < 1 || *reps > maxBenchReps {
		return usageError("-r %d: want a run count in [1, %d]", *reps, maxBenchReps)
	}
	for _, l := range []struct {
		flag string
		v    []int
	}{{"-p", *ps}, {"-n", *ns}, {"-d", *ds}} {
		for _, x := range l.v {
			if x < 0 || x > generate.MaxContext {
				return usageError("%s %d: want a token count in [0, %d]", l.flag, x, generate.MaxContext)
			}
		}
	}
	for _, t := range *ts {
		if err := (generate.Sizes{Batch: 1, Threads: t}).Validate(); err != nil {
			return err
		}
	}
	batched := len(*levels) > 1 || len(*levels) == 1 && (*levels)[0] != 1
	maxLevel := 1
	for _, n := range *levels {
		if n < 1 || n > maxParallel {
			return usageError("--parallel %d: want a sequence count in [1, %d]", n, maxParallel)
		}
		maxLevel = max(maxLevel, n)
	}
	if batched {
		for _, d := range *ds {
			if d != 0 {
				return usageError("-d with --parallel: the batched test has no depth (as llama-batched-bench); run -d without --parallel")
			}
		}
	} else if *pf.noPrefix {
		for _, d := range *ds {
			if d > 0 && slices.ContainsFunc(*ps, func(p int) bool { return p > 0 }) {
				return usageError("--no-prefix-cache with -d and -p: pp behind a depth reuses the depth's cached pages to time only the -p tokens")
			}
		}
	}
	// The tokens one sequence needs: pp's depth + p; tg's depth + 1 prompt
	// token + n + 1 generated (the first comes from the prompt's pass).
	need, pool := 1, 0
	for _, d := range *ds {
		for _, p := range *ps {
			for _, n := range *ns {
				if batched {
					one := max(p, 1) + n + min(n, 1)
					need = max(need, one)
					pool = max(pool, maxLevel*roundPage(one))
					continue
				}
				need = max(need, d+p, d+n+2)
				pool = max(pool, roundPage(max(d+p, d+n+2))+ml.PageSize)
			}
		}
	}
	if *ef.ctx == 0 {
		*ef.ctx = min(need, generate.MaxContext)
	}
	if err := ef.check(fs); err != nil {
		return err
	}
	if err := pf.check(fs, *ef.batch); err != nil {
		return err
	}
	if need > *ef.ctx {
		return fmt.Errorf("%w: the tests need %d tokens of one sequence (-d + -p, or -d + -n + 2), which does not fit --ctx %d", generate.ErrContext, need, *ef.ctx)
	}
	if *cpuProfile != "" {
		pf, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		pprof.StartCPUProfile(pf)
		defer func() { pprof.StopCPUProfile(); pf.Close() }()
	}

	var results []benchResult
	var dev, backend, poolInfo string
	var size, params int64
	for ti, threads := range *ts {
		*ef.threads = threads
		e, err := ef.load()
		if err != nil {
			return err
		}
		if ti == 0 {
			dev, backend = e.backend.Device(), e.backend.Name()
			for i := range e.file.Tensors {
				size += e.file.Tensors[i].Size()
				params += e.file.Tensors[i].NumElements()
			}
		}
		res, info, err := benchLoaded(fs, ef, pf, e, maxLevel, pool, batched, *levels, *ps, *ns, *ds, *reps)
		e.Close()
		if err != nil {
			return err
		}
		poolInfo = info
		results = append(results, res...)
		if backend != "cpu" {
			break // threads mean nothing to the GPU or the oracle
		}
	}

	model := filepath.Base(*ef.model)
	if batched {
		return printBatched(model, size, params, dev, backend, poolInfo, *reps, *levels, results, *asJSON)
	}
	if *asJSON {
		j := map[string]any{
			"model": model, "size_bytes": size, "params": params, "device": dev, "backend": backend,
			"reps": *reps, "results": results,
		}
		// With one value per list, the fields of earlier versions.
		if len(*ts) == 1 && len(*ds) == 1 && len(*ps) == 1 && len(*ns) == 1 {
			j["depth"] = (*ds)[0]
			j["pp"], j["tg"] = (*benchStat)(nil), (*benchStat)(nil)
			for _, r := range results {
				j["threads"] = r.Threads
				if r.NPrompt > 0 {
					j["pp"] = &benchStat{N: r.NPrompt, TPS: r.TPS, SD: r.SD}
				} else {
					j["tg"] = &benchStat{N: r.NGen, TPS: r.TPS, SD: r.SD}
				}
			}
		}
		return json.NewEncoder(stdout).Encode(j)
	}
	fmt.Fprintf(stdout, "| model | size | params | backend | threads | test | t/s |\n|---|---:|---:|---|---:|---|---:|\n")
	for _, r := range results {
		test := r.Test
		if r.Depth > 0 {
			test += fmt.Sprintf(" @ d%d", r.Depth)
		}
		th := strconv.Itoa(r.Threads)
		if backend != "cpu" {
			th = "-"
		}
		fmt.Fprintf(stdout, "| %s | %s | %s | %s | %s | %s | %.2f ± %.2f |\n", model, humanBytes(size), humanCount(params), backend, th, test, r.TPS, r.SD)
	}
	fmt.Fprintf(os.Stderr, "device: %s\n%s\n", dev, poolInfo)
	return nil
}

func roundPage(n int) int { return (n + ml.PageSize - 1) / ml.PageSize * ml.PageSize }

// benchLoaded starts the engine on a loaded model and runs the tests; it
// returns the results and the engine's load line.
func benchLoaded(fs *flag.FlagSet, ef *engineFlags, pf *poolFlags, e *engine, maxLevel, pool int, batched bool, levels, ps, ns, ds []int, reps int) ([]benchResult, string, error) {
	o, err := pf.engineOptions(fs, ef, e, poolSpec{parallel: maxLevel, context: e.ctx, minTokens: pool})
	if err != nil {
		return nil, "", err
	}
	en, err := startEngine(e, o)
	if err != nil {
		return nil, "", err
	}
	info := poolLine(e, en)
	if !batched {
		res, err := benchEngine(e, en, ps, ns, ds, reps)
		return res, info, err
	}
	var out []benchResult
	for _, n := range levels {
		res, err := benchParallel(e, en, n, ps, ns, reps)
		if err != nil {
			return nil, info, err
		}
		out = append(out, res...)
	}
	return out, info, nil
}

// printBatched writes --parallel's results: a table with a parallel
// column, or with --json one line per level: the single-test object plus
// "parallel" and a "total" entry beside "pp" and "tg".
func printBatched(model string, size, params int64, dev, backend, poolInfo string, reps int, levels []int, results []benchResult, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(stdout)
		for _, n := range levels {
			var rs []benchResult
			for _, r := range results {
				if r.Parallel == n {
					rs = append(rs, r)
				}
			}
			j := map[string]any{
				"model": model, "size_bytes": size, "params": params, "device": dev, "backend": backend,
				"reps": reps, "parallel": n, "depth": 0, "results": rs,
			}
			// One test per level: pp, tg and total as fields.
			if len(rs) <= 3 {
				j["pp"], j["tg"], j["total"] = (*benchStat)(nil), (*benchStat)(nil), (*benchStat)(nil)
				for _, r := range rs {
					j["threads"] = r.Threads
					switch {
					case r.Total:
						j["total"] = &benchStat{N: r.NPrompt + r.NGen, TPS: r.TPS, SD: r.SD}
					case r.NPrompt > 0:
						j["pp"] = &benchStat{N: r.NPrompt, TPS: r.TPS, SD: r.SD}
					default:
						j["tg"] = &benchStat{N: r.NGen, TPS: r.TPS, SD: r.SD}
					}
				}
			}
			if err := enc.Encode(j); err != nil {
				return err
			}
		}
		return nil
	}
	fmt.Fprintf(stdout, "| model | size | params | backend | threads | parallel | test | t/s |\n|---|---:|---:|---|---:|---:|---|---:|\n")
	for _, r := range results {
		th := strconv.Itoa(r.Threads)
		if backend != "cpu" {
			th = "-"
		}
		fmt.Fprintf(stdout, "| %s | %s | %s | %s | %s | %d | %s | %.2f ± %.2f |\n", model, humanBytes(size), humanCount(params), backend, th, r.Parallel, r.Test, r.TPS, r.SD)
	}
	fmt.Fprintf(os.Stderr, "device: %s\n%s\n", dev, poolInfo)
	return nil
}

// humanCount writes a parameter count as llama-bench does: 1.10 B, 260.00 K.
func humanCount(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.2f B", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.2f M", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.2f K", float64(n)/1e3)
	}
	return strconv.FormatInt(n, 10)
}

// benchTokens returns n random token ids.
type benchTokens struct {
	rng   *rand.Rand
	vocab int
}

func (b *benchTokens) next(n int) []int32 {
	t := make([]int32, n)
	for i := range t {
		t[i] = int32(b.rng.IntN(b.vocab))
	}
	return t
}

// repeat runs f once to warm up, then reps times, and returns the mean
// and standard deviation of each of the values f measures.
func repeat(reps int, f func() ([]float64, error)) ([]float64, []float64, error) {
	if _, err := f(); err != nil { // warm-up
		return nil, nil, err
	}
	var runs [][]float64
	for i := 0; i < reps; i++ {
		x, err := f()
		if err != nil {
			return nil, nil, err
		}
		runs = append(runs, x)
	}
	means, sds := make([]float64, len(runs[0])), make([]float64, len(runs[0]))
	for k := range means {
		xs := make([]float64, len(runs))
		for i := range runs {
			xs[i] = runs[i][k]
		}
		means[k], sds[k] = meanSD(xs)
	}
	return means, sds, nil
}

// benchEngine runs every depth × (pp, tg) test of one sequence through
// the engine. pp prefills p random tokens behind depth others (whose
// pages a first request leaves in the prefix cache, so only the p are
// timed, with the logits of the last); tg generates n tokens one decode
// step at a time behind depth + 1 prompt tokens.
func benchEngine(e *engine, en *eng.Engine, ps, ns, ds []int, reps int) ([]benchResult, error) {
	tk := &benchTokens{rand.New(rand.NewPCG(1, 2)), e.model.Config.VocabSize}
	ctx := context.Background()
	pp := func(depth, p int) ([]float64, error) {
		prompt := tk.next(depth + p)
		if depth > 0 {
			if _, err := en.Generate(ctx, eng.Request{Prompt: prompt[:depth]}, nil); err != nil {
				return nil, err
			}
		}
		res, err := en.Generate(ctx, eng.Request{Prompt: prompt}, nil)
		if err != nil {
			return nil, err
		}
		if depth > 0 && res.PrefixHit < depth/ml.PageSize*ml.PageSize {
			return nil, fmt.Errorf("pp at depth %d: the depth's pages were not reused (%d tokens)", depth, res.PrefixHit)
		}
		return []float64{float64(len(prompt)-res.PrefixHit) / res.PromptTime.Seconds()}, nil
	}
	tg := func(depth, n int) ([]float64, error) {
		req := eng.Request{Prompt: tk.next(depth + 1), MaxTokens: n + 1, IgnoreEOS: true, Sampling: sample.Params{Greedy: true}}
		res, err := en.Generate(ctx, req, nil)
		if err != nil {
			return nil, err
		}
		return []float64{float64(n) / res.GenTime.Seconds()}, nil
	}
	var out []benchResult
	for _, d := range ds {
		for _, p := range ps {
			if p == 0 {
				continue
			}
			mean, sd, err := repeat(reps, func() ([]float64, error) { return pp(d, p) })
			if err != nil {
				return nil, err
			}
			out = append(out, benchResult{Test: fmt.Sprintf("pp%d", p), NPrompt: p, Depth: d, Threads: e.threads(), TPS: mean[0], SD: sd[0]})
		}
		for _, n := range ns {
			if n == 0 {
				continue
			}
			mean, sd, err := repeat(reps, func() ([]float64, error) { return tg(d, n) })
			if err != nil {
				return nil, err
			}
			out = append(out, benchResult{Test: fmt.Sprintf("tg%d", n), NGen: n, Depth: d, Threads: e.threads(), TPS: mean[0], SD: sd[0]})
		}
	}
	return out, nil
}

// benchParallel runs llama-batched-bench's test for each -p × -n: N
// sequences submitted together, each prefilling p random tokens and then
// generating n tokens in n decode steps. pp is N·p tokens over the time
// until every sequence has its first token; tg the decode tokens that came
// after that moment over the rest; total N·(p+n) over the whole run. Each
// is summed over the sequences.
func benchParallel(e *engine, en *eng.Engine, n int, ps, ns []int, reps int) ([]benchResult, error) {
	tk := &benchTokens{rand.New(rand.NewPCG(uint64(n), 2)), e.model.Config.VocabSize}
	run := func(p, g int) ([]float64, error) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		type stream struct {
			first time.Time
			toks  []time.Time
			err   error
		}
		streams := make([]stream, n)
		var wg sync.WaitGroup
		start := time.Now()
		for i := range streams {
			req := eng.Request{Prompt: tk.next(max(p, 1)), MaxTokens: g + min(g, 1), IgnoreEOS: true, Sampling: sample.Params{Greedy: true}}
			ch, err := en.Submit(ctx, req)
			if err != nil {
				return nil, err
			}
			wg.Add(1)
			go func(s *stream) {
				defer wg.Done()
				for ev := range ch {
					now := time.Now()
					if ev.Done {
						if ev.Result.Err != nil {
							s.err = ev.Result.Err
						}
						if s.first.IsZero() {
							s.first = now
						}
						return
					}
					if s.first.IsZero() {
						s.first = now
					} else {
						s.toks = append(s.toks, now)
					}
				}
			}(&streams[i])
		}
		wg.Wait()
		end := time.Since(start)
		var ppEnd time.Time
		for _, s := range streams {
			if s.err != nil {
				return nil, s.err
			}
			if s.first.After(ppEnd) {
				ppEnd = s.first
			}
		}
		decoded := 0
		for _, s := range streams {
			for _, t := range s.toks {
				if t.After(ppEnd) {
					decoded++
				}
			}
		}
		tPP, tTG := ppEnd.Sub(start).Seconds(), end.Seconds()-ppEnd.Sub(start).Seconds()
		ppTPS, tgTPS := float64(n*p)/tPP, 0.0
		if g > 0 && tTG > 0 {
			tgTPS = float64(decoded) / tTG
		}
		return []float64{ppTPS, tgTPS, float64(n*(p+g)) / end.Seconds()}, nil
	}
	var out []benchResult
	for _, p := range ps {
		for _, g := range ns {
			if p == 0 && g == 0 {
				continue
			}
			mean, sd, err := repeat(reps, func() ([]float64, error) { return run(p, g) })
			if err != nil {
				return nil, err
			}
			th := e.threads()
			if p > 0 {
				out = append(out, benchResult{Test: fmt.Sprintf("pp%d", p), NPrompt: p, Threads: th, Parallel: n, TPS: mean[0], SD: sd[0]})
			}
			if g > 0 {
				out = append(out, benchResult{Test: fmt.Sprintf("tg%d", g), NGen: g, Threads: th, Parallel: n, TPS: mean[1], SD: sd[1]})
			}
			out = append(out, benchResult{Test: fmt.Sprintf("pp%d+tg%d", p, g), NPrompt: p, NGen: g, Threads: th, Parallel: n, Total: true, TPS: mean[2], SD: sd[2]})
		}
	}
	return out, nil
}

func meanSD(xs []float64) (float64, float64) {
	var s float64
	for _, x := range xs {
		s += x
	}
	mean := s / float64(len(xs))
	if len(xs) < 2 {
		return mean, 0
	}
	var v float64
	for _, x := range xs {
		v += (x - mean) * (x - mean)
	}
	return mean, math.Sqrt(v / float64(len(xs)-1))
}
