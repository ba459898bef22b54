package main

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"greta/generate"
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
	Test    string  `json:"test"` // "pp512", "tg128"
	NPrompt int     `json:"n_prompt"`
	NGen    int     `json:"n_gen"`
	Depth   int     `json:"depth"`
	Threads int     `json:"threads"`
	TPS     float64 `json:"tps"`
	SD      float64 `json:"sd"`
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
	if *ef.ctx == 0 {
		need := 1
		for _, d := range *ds {
			for _, p := range *ps {
				need = max(need, d+p)
			}
			for _, n := range *ns {
				need = max(need, d+n+1)
			}
		}
		*ef.ctx = min(need, generate.MaxContext)
	}
	if err := ef.check(fs); err != nil {
		return err
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
	var dev, backend string
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
		res, err := benchEngine(e, *ef.batch, *ps, *ns, *ds, *reps)
		e.Close()
		if err != nil {
			return err
		}
		results = append(results, res...)
		if backend != "cpu" {
			break // threads mean nothing to the GPU or the oracle
		}
	}

	model := filepath.Base(*ef.model)
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
	fmt.Fprintf(os.Stderr, "device: %s\n", dev)
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

// benchEngine runs every depth × (pp, tg) test on a loaded engine.
func benchEngine(e *engine, batch int, ps, ns, ds []int, reps int) ([]benchResult, error) {
	m := e.model
	for _, d := range ds {
		for _, p := range ps {
			if d+p > e.ctx {
				return nil, fmt.Errorf("%w: -d %d with -p %d does not fit --ctx %d", generate.ErrContext, d, p, e.ctx)
			}
		}
		for _, n := range ns {
			if n > 0 && d+n+1 > e.ctx {
				return nil, fmt.Errorf("%w: -d %d with -n %d does not fit --ctx %d", generate.ErrContext, d, n, e.ctx)
			}
		}
	}
	st, err := m.NewState(e.ctx, batch, false)
	if err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(1, 2))
	randomTokens := func(k int) []int32 {
		t := make([]int32, k)
		for i := range t {
			t[i] = int32(rng.IntN(m.Config.VocabSize))
		}
		return t
	}
	argmax := make([]int32, 1)
	// fill starts a test: the cache emptied, then depth random tokens.
	fill := func(depth int) error {
		st.Pos = 0
		if depth == 0 {
			return nil
		}
		return generate.Prefill(m, st, randomTokens(depth))
	}
	// pp: prefill p random tokens after depth others (the logits of the
	// last one included). tg: n tokens one at a time, each fed back.
	pp := func(depth, p int) (float64, error) {
		toks := randomTokens(p)
		if err := fill(depth); err != nil {
			return 0, err
		}
		start := time.Now()
		if err := generate.Prefill(m, st, toks); err != nil {
			return 0, err
		}
		e.backend.Argmax(st.Logits, argmax)
		return float64(p) / time.Since(start).Seconds(), nil
	}
	tg := func(depth, n int) (float64, error) {
		if err := fill(depth); err != nil {
			return 0, err
		}
		tok := []int32{int32(rng.IntN(m.Config.VocabSize))}
		start := time.Now()
		for i := 0; i < n; i++ {
			if err := m.Forward(st, tok); err != nil {
				return 0, err
			}
			e.backend.Argmax(st.Logits, argmax)
			tok[0] = argmax[0]
		}
		return float64(n) / time.Since(start).Seconds(), nil
	}
	run := func(f func() (float64, error)) (float64, float64, error) {
		if _, err := f(); err != nil { // warm-up
			return 0, 0, err
		}
		var xs []float64
		for i := 0; i < reps; i++ {
			x, err := f()
			if err != nil {
				return 0, 0, err
			}
			xs = append(xs, x)
		}
		mean, sd := meanSD(xs)
		return mean, sd, nil
	}
	var out []benchResult
	for _, d := range ds {
		for _, p := range ps {
			if p == 0 {
				continue
			}
			mean, sd, err := run(func() (float64, error) { return pp(d, p) })
			if err != nil {
				return nil, err
			}
			out = append(out, benchResult{Test: fmt.Sprintf("pp%d", p), NPrompt: p, Depth: d, Threads: e.threads(), TPS: mean, SD: sd})
		}
		for _, n := range ns {
			if n == 0 {
				continue
			}
			mean, sd, err := run(func() (float64, error) { return tg(d, n) })
			if err != nil {
				return nil, err
			}
			out = append(out, benchResult{Test: fmt.Sprintf("tg%d", n), NGen: n, Depth: d, Threads: e.threads(), TPS: mean, SD: sd})
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
