package main

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/pprof"
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

func cmdBench(args []string) error {
	fs := newFlags("bench", "--model M [-p 512] [-n 128] [-d 0] [-r 3] [--device D] [--json]")
	ef := addEngineFlags(fs, false)
	p := fs.IntP("n-prompt", "p", 512, "prompt tokens for pp (0: skip)")
	n := fs.IntP("n-gen", "n", 128, "generated tokens for tg (0: skip)")
	depth := fs.IntP("n-depth", "d", 0, "tokens already in the context when each test starts (llama-bench's -d); filled with random tokens, not timed")
	reps := fs.IntP("repetitions", "r", 3, "runs of each test")
	asJSON := fs.Bool("json", false, "print one JSON object")
	cpuProfile := fs.String("cpuprofile", "", "write a Go CPU profile of the timed runs")
	if err := fs.Parse(args); err != nil {
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
	if *reps < 1 {
		return fmt.Errorf("-r %d: need at least one run", *reps)
	}
	if *depth < 0 || *p < 0 || *n < 0 {
		return fmt.Errorf("-p %d -n %d -d %d: counts cannot be negative", *p, *n, *depth)
	}
	if *ef.ctx <= 0 {
		*ef.ctx = max(*depth+*p, *depth+*n+1, 1)
	}
	e, err := ef.load()
	if err != nil {
		return err
	}
	defer e.Close()
	if *depth+*p > e.ctx || *depth+*n+1 > e.ctx {
		return fmt.Errorf("%w: -d %d with -p %d / -n %d does not fit --ctx %d", generate.ErrContext, *depth, *p, *n, e.ctx)
	}
	m := e.model
	st, err := m.NewState(e.ctx, *ef.batch, false)
	if err != nil {
		return err
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
	// pp: prefill p random tokens after depth others (the logits of the
	// last one included). tg: n tokens one at a time, each fed back, after
	// depth others.
	// fill starts a test: the cache emptied, then depth random tokens.
	fill := func() error {
		st.Pos = 0
		if *depth == 0 {
			return nil
		}
		return generate.Prefill(m, st, randomTokens(*depth))
	}
	pp := func() (float64, error) {
		toks := randomTokens(*p)
		if err := fill(); err != nil {
			return 0, err
		}
		start := time.Now()
		if err := generate.Prefill(m, st, toks); err != nil {
			return 0, err
		}
		e.backend.Argmax(st.Logits, argmax)
		return float64(*p) / time.Since(start).Seconds(), nil
	}
	tg := func() (float64, error) {
		if err := fill(); err != nil {
			return 0, err
		}
		tok := []int32{int32(rng.IntN(m.Config.VocabSize))}
		start := time.Now()
		for i := 0; i < *n; i++ {
			if err := m.Forward(st, tok); err != nil {
				return 0, err
			}
			e.backend.Argmax(st.Logits, argmax)
			tok[0] = argmax[0]
		}
		return float64(*n) / time.Since(start).Seconds(), nil
	}
	run := func(k int, f func() (float64, error)) (*benchStat, error) {
		if k <= 0 {
			return nil, nil
		}
		if _, err := f(); err != nil { // warm-up
			return nil, err
		}
		var xs []float64
		for i := 0; i < *reps; i++ {
			x, err := f()
			if err != nil {
				return nil, err
			}
			xs = append(xs, x)
		}
		mean, sd := meanSD(xs)
		return &benchStat{N: k, TPS: mean, SD: sd}, nil
	}
	ppStat, err := run(*p, pp)
	if err != nil {
		return err
	}
	tgStat, err := run(*n, tg)
	if err != nil {
		return err
	}
	dev := e.backend.Device()
	if *asJSON {
		return json.NewEncoder(os.Stdout).Encode(map[string]any{
			"model": filepath.Base(*ef.model), "device": dev, "backend": e.backend.Name(),
			"threads": *ef.threads, "pp": ppStat, "tg": tgStat, "reps": *reps, "depth": *depth,
		})
	}
	fmt.Printf("| model | backend | device | test | t/s |\n|---|---|---|---|---|\n")
	for _, r := range []struct {
		name string
		s    *benchStat
	}{{"pp", ppStat}, {"tg", tgStat}} {
		if r.s != nil {
			test := fmt.Sprintf("%s%d", r.name, r.s.N)
			if *depth > 0 {
				test += fmt.Sprintf(" @ d%d", *depth)
			}
			fmt.Printf("| %s | %s | %s | %s | %.2f ± %.2f |\n", filepath.Base(*ef.model), e.backend.Name(), dev, test, r.s.TPS, r.s.SD)
		}
	}
	return nil
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
