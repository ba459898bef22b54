package engine_test

import (
	"context"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"greta/backend/cpu"
	"greta/backend/cuda"
	"greta/engine"
	"greta/internal/testmodels"
	"greta/ml"
	"greta/model/llama"
	"greta/sample"
	"greta/tokenizer"
)

type loaded struct {
	m   *llama.Model
	tok *tokenizer.Tokenizer
}

func load(t testing.TB, path string, b ml.Backend) *loaded {
	t.Helper()
	m, tok := testmodels.Load(t, path, b)
	return &loaded{m, tok}
}

func newCPU(t testing.TB) *cpu.Backend { return newCPUThreads(t, 0) }

// backends are the devices the invariance tests run on: the CPU always,
// CUDA where a GPU is present (skipped otherwise).
var backends = []struct {
	name string
	new  func(t testing.TB) ml.Backend
}{
	{"cpu", func(t testing.TB) ml.Backend { return newCPU(t) }},
	{"cuda", func(t testing.TB) ml.Backend {
		b, err := cuda.New()
		if err != nil {
			t.Skipf("no GPU: %v", err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	}},
}

func newCPUThreads(t testing.TB, n int) *cpu.Backend {
	b := cpu.New(n)
	t.Cleanup(func() { b.Close() })
	return b
}

func newEngine(t testing.TB, l *loaded, o engine.Options) *engine.Engine {
	t.Helper()
	e, err := engine.New(l.m, l.tok, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// requests makes n greedy requests with random prompts of 1 to maxLen
// tokens (BOS first) and 1 to maxGen tokens to generate. Prompts i and
// i+1 share a prefix for odd i, so that prefix reuse has something to find.
func requests(r *rand.Rand, n, maxLen, maxGen, vocab int, bos int32) []engine.Request {
	reqs := make([]engine.Request, n)
	var prev []int32
	for i := range reqs {
		l := 1 + r.IntN(maxLen)
		p := []int32{bos}
		if i%2 == 1 && len(prev) > 40 {
			p = slices.Clone(prev[:min(len(prev), l)])
		}
		for len(p) < l {
			p = append(p, int32(3+r.IntN(vocab-3)))
		}
		prev = p
		reqs[i] = engine.Request{Prompt: p, MaxTokens: 1 + r.IntN(maxGen), Sampling: sample.Params{Greedy: true}, IgnoreEOS: true}
	}
	return reqs
}

// runAll submits every request at once and returns each one's tokens.
func runAll(t testing.TB, e *engine.Engine, reqs []engine.Request) [][]int32 {
	t.Helper()
	out := make([][]int32, len(reqs))
	errs := make([]error, len(reqs))
	var wg sync.WaitGroup
	for i, r := range reqs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := e.Generate(context.Background(), r, nil)
			if err != nil {
				errs[i] = err
				return
			}
			out[i] = res.Generated
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	return out
}

// alone runs each request by itself on an engine without prefix reuse.
func alone(t testing.TB, l *loaded, reqs []engine.Request) [][]int32 {
	e := newEngine(t, l, engine.Options{Parallel: 1, NoPrefixCache: true, Context: 2048})
	out := make([][]int32, len(reqs))
	for i, r := range reqs {
		res, err := e.Generate(context.Background(), r, nil)
		if err != nil {
			t.Fatalf("request %d alone: %v", i, err)
		}
		out[i] = res.Generated
	}
	return out
}

func sharedModel(t *testing.T, name string) string { return sharedModelB(t, name) }

// sharedModelB skips, rather than fails, when the shared fixtures or the
// one file are absent (a device run carries only some models).
func sharedModelB(t testing.TB, name string) string {
	p := filepath.Join(testmodels.SharedDir(t, 1), "models", name)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("%s is absent", p)
	}
	return p
}

// TestBatchInvariance: 64 concurrent greedy sequences with mixed prompt
// lengths and mixed lengths to generate each produce exactly the tokens
// they produce alone; so do they on a second run that takes the prompts'
// pages from the cache (prefix hits), with a prefill budget of 7 tokens a
// step (odd chunking), and with a page pool so small that sequences are
// preempted and recomputed. Prompts run from 1 to 1,500 tokens on the
// trained F32 model, 1 to 400 on the Q4_K_M one and 1 to 200 on the Q8_0
// one (whose prompt and generated rows take different kernels), to keep
// CI's time in bounds;
// two fifths of that with the pure-Go kernels.
func TestBatchInvariance(t *testing.T) {
	for _, bk := range backends {
		for _, m := range []struct {
			name   string
			maxLen int
		}{{"stories260K.gguf", 1500}, {"syn-spm-Q4_K_M.gguf", 400}, {"syn-spm-Q8_0.gguf", 200}} {
			t.Run(bk.name+"/"+m.name, func(t *testing.T) { batchInvariance(t, sharedModel(t, m.name), bk.new(t), m.maxLen) })
		}
	}
}

func batchInvariance(t *testing.T, path string, b ml.Backend, maxLen int) {
	l := load(t, path, b)
	n, maxGen := 64, 24
	if !simdBuild && b.Name() == "cpu" {
		maxLen = maxLen * 2 / 5 // the pure-Go kernels: 1 to 600 and 1 to 160 tokens
	}
	if testing.Short() {
		n, maxLen = 16, min(maxLen, 300)
	}
	reqs := requests(rand.New(rand.NewPCG(1, 2)), n, maxLen, maxGen, l.m.Config.VocabSize, l.tok.BOS())
	want := alone(t, l, reqs)
	// A pool a little larger than the longest sequence: a few run at once,
	// and their decoding runs out of pages.
	var longest int
	for _, r := range reqs {
		longest = max(longest, len(r.Prompt)+r.MaxTokens)
	}
	cases := []struct {
		name string
		o    engine.Options
	}{
		{"batch64", engine.Options{Parallel: 64, Context: 2048}},
		{"budget7", engine.Options{Parallel: 64, PrefillBudget: 7, Context: 2048, NoPrefixCache: true}},
		{"preempt", engine.Options{Parallel: 64, Pages: longest/ml.PageSize + 24, Context: 2048}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEngine(t, l, c.o)
			got := runAll(t, e, reqs)
			for i := range reqs {
				if !slices.Equal(got[i], want[i]) {
					t.Fatalf("request %d (%d prompt tokens): %v, alone %v", i, len(reqs[i].Prompt), got[i], want[i])
				}
			}
			if c.name == "batch64" {
				// Again, now with the prompts' pages in the cache.
				again := runAll(t, e, reqs)
				for i := range reqs {
					if !slices.Equal(again[i], want[i]) {
						t.Fatalf("request %d again (prefix hits): %v, alone %v", i, again[i], want[i])
					}
				}
				if e.Stats().PrefixHitTokens == 0 {
					t.Errorf("no prefix hits on the second run")
				}
			}
			st := e.Stats()
			t.Logf("%s: %d steps, %d prefix-hit tokens, %d preemptions", c.name, st.Steps, st.PrefixHitTokens, st.Preemptions)
			if c.name == "preempt" && st.Preemptions == 0 {
				t.Errorf("the small pool preempted nothing")
			}
			// Stats are published after each step: wait for the last.
			waitFor(t, func() bool { return e.Stats().PagesUsed == 0 })
		})
	}
}

// TestSeededSamplingInvariant: with a seed, a sampled request's tokens are
// the same alone and beside others.
func TestSeededSamplingInvariant(t *testing.T) {
	for _, bk := range backends {
		t.Run(bk.name, func(t *testing.T) { seededSampling(t, bk.new(t)) })
	}
}

func seededSampling(t *testing.T, b ml.Backend) {
	l := load(t, sharedModel(t, "stories260K.gguf"), b)
	reqs := requests(rand.New(rand.NewPCG(3, 4)), 12, 60, 40, l.m.Config.VocabSize, l.tok.BOS())
	for i := range reqs {
		reqs[i].Sampling = sample.Params{Temp: 0.9, TopK: 40, TopP: 0.95, Seed: uint64(i + 7), RepeatPenalty: 1.1, RepeatLastN: 64}
	}
	want := alone(t, l, reqs)
	got := runAll(t, newEngine(t, l, engine.Options{Parallel: 8, PrefillBudget: 13}), reqs)
	for i := range reqs {
		if !slices.Equal(got[i], want[i]) {
			t.Fatalf("request %d: %v, alone %v", i, got[i], want[i])
		}
	}
}

// TestSampledReadModesAgree: a step reads its rows' candidates (one
// Backend.TopK for all rows) unless a row needs its logits (top_logprobs
// here), and a seeded request draws the same tokens either way: alone on
// candidates, alone on logits, and in a batch whose steps switch between
// the two. The settings cover penalties that lower and that raise logits
// (repeat_penalty < 1, a negative presence penalty), penalized greedy
// decoding, and sampling without top-k (always logits).
func TestSampledReadModesAgree(t *testing.T) {
	for _, bk := range backends {
		t.Run(bk.name, func(t *testing.T) { readModesAgree(t, bk.new(t)) })
	}
}

func readModesAgree(t *testing.T, b ml.Backend) {
	l := load(t, sharedModel(t, "stories260K.gguf"), b)
	reqs := requests(rand.New(rand.NewPCG(7, 8)), 12, 60, 40, l.m.Config.VocabSize, l.tok.BOS())
	for i := range reqs {
		p := sample.Params{Seed: uint64(i + 1), RepeatLastN: 64}
		switch i % 5 {
		case 0:
			p.Temp, p.TopK, p.TopP, p.RepeatPenalty = 0.9, 40, 0.95, 1.1
		case 1:
			p.Temp, p.TopK, p.PresencePenalty, p.FrequencyPenalty = 1.2, 5, -1.5, 0.5
		case 2:
			p.Greedy, p.RepeatPenalty = true, 0.8
		case 3:
			p.Temp, p.TopK, p.MinP, p.RepeatPenalty, p.FrequencyPenalty = 0.7, 100, 0.05, 1.3, 0.3
		case 4:
			p.Temp, p.TopP = 0.8, 0.9
		}
		reqs[i].Sampling = p
	}
	want := alone(t, l, reqs)
	withLogprobs := slices.Clone(reqs)
	for i := range withLogprobs {
		withLogprobs[i].TopLogprobs = 2
	}
	onLogits := alone(t, l, withLogprobs)
	mixed := slices.Clone(reqs)
	for i := range mixed {
		if i%4 == 3 {
			mixed[i].TopLogprobs = 1
		}
	}
	batch := runAll(t, newEngine(t, l, engine.Options{Parallel: 8, PrefillBudget: 13}), mixed)
	for i := range reqs {
		if !slices.Equal(onLogits[i], want[i]) {
			t.Fatalf("request %d (%+v): %v on logits, %v on candidates", i, reqs[i].Sampling, onLogits[i], want[i])
		}
		if !slices.Equal(batch[i], want[i]) {
			t.Fatalf("request %d (%+v): %v in the batch, %v alone", i, reqs[i].Sampling, batch[i], want[i])
		}
	}
}

// TestTeacherForcedLogitsInBatch: a sequence's teacher-forced logits in a
// batch of 16 equal its logits alone, bit for bit. (The oracle bounds are
// model/llama's conformance tests, whose Forward runs ForwardBatch.)
func TestTeacherForcedLogitsInBatch(t *testing.T) {
	for _, bk := range backends {
		t.Run(bk.name, func(t *testing.T) { teacherForcedInBatch(t, bk.new(t)) })
	}
}

func teacherForcedInBatch(t *testing.T, b ml.Backend) {
	l := load(t, sharedModel(t, "syn-spm-Q4_K_M.gguf"), b)
	reqs := requests(rand.New(rand.NewPCG(5, 6)), 16, 200, 1, l.m.Config.VocabSize, l.tok.BOS())
	logits := func(e *engine.Engine, rs []engine.Request) [][][]float32 {
		out := make([][][]float32, len(rs))
		var wg sync.WaitGroup
		for i, r := range rs {
			r.Logits, r.MaxTokens = true, 0
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := e.Generate(context.Background(), r, func(ev engine.Event) {
					if ev.Logits != nil {
						out[i] = append(out[i], ev.Logits)
					}
				})
				if err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		return out
	}
	// In the batch, 16 rows of logits a step (the default: Parallel) cut
	// the teacher-forced prompt chunks; alone, up to 64 rows.
	batch := logits(newEngine(t, l, engine.Options{Parallel: 16, PrefillBudget: 64}), reqs)
	e1 := newEngine(t, l, engine.Options{Parallel: 1, PrefillBudget: 64, LogitRows: 64})
	for i := range reqs {
		one := logits(e1, reqs[i:i+1])[0]
		if len(one) != len(reqs[i].Prompt) || len(batch[i]) != len(one) {
			t.Fatalf("request %d: %d and %d logits rows for %d tokens", i, len(batch[i]), len(one), len(reqs[i].Prompt))
		}
		for r := range one {
			for c := range one[r] {
				if math.Float32bits(one[r][c]) != math.Float32bits(batch[i][r][c]) {
					t.Fatalf("request %d row %d col %d: %v in the batch, %v alone", i, r, c, batch[i][r][c], one[r][c])
				}
			}
		}
	}
}

// TestCancelFreesPages: cancelled requests end within a step with
// StopCancelled, every page returns to the pool, and no goroutine is left.
func TestCancelFreesPages(t *testing.T) {
	l := load(t, sharedModel(t, "stories260K.gguf"), newCPU(t))
	before := runtime.NumGoroutine()
	e, err := engine.New(l.m, l.tok, engine.Options{Parallel: 8})
	if err != nil {
		t.Fatal(err)
	}
	reqs := requests(rand.New(rand.NewPCG(7, 8)), 16, 100, 1, l.m.Config.VocabSize, l.tok.BOS())
	var wg sync.WaitGroup
	for i, r := range reqs {
		r.MaxTokens = -1
		ctx, cancel := context.WithCancel(context.Background())
		ch, err := e.Submit(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := 0
			for ev := range ch {
				n++
				if n == 3+i {
					cancel()
				}
				if ev.Done && ev.Result.StopReason != engine.StopCancelled && ev.Result.StopReason != engine.StopContext {
					t.Errorf("request %d ended with %q", i, ev.Result.StopReason)
				}
			}
			cancel()
		}()
	}
	wg.Wait()
	waitFor(t, func() bool { s := e.Stats(); return s.PagesUsed == 0 && s.Running == 0 })
	// Requests in flight when the engine closes end with ErrClosed.
	ch, err := e.Submit(context.Background(), engine.Request{Prompt: reqs[0].Prompt, MaxTokens: -1, Sampling: sample.Params{Greedy: true}, IgnoreEOS: true})
	if err != nil {
		t.Fatal(err)
	}
	<-ch // running
	e.Close()
	var last engine.Event
	for ev := range ch {
		last = ev
	}
	if !last.Done || last.Result.Err == nil {
		t.Fatalf("after Close: %+v", last)
	}
	if _, err := e.Submit(context.Background(), reqs[0]); err == nil {
		t.Fatal("Submit after Close succeeded")
	}
	waitFor(t, func() bool { return runtime.NumGoroutine() <= before })
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("condition not met in 10 s; goroutines:\n%s", buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestBadRequests: requests that cannot run fail at Submit, before any
// work, and a full queue refuses more.
func TestBadRequests(t *testing.T) {
	l := load(t, sharedModel(t, "stories260K.gguf"), newCPU(t))
	e := newEngine(t, l, engine.Options{Parallel: 1, QueueSize: 2, Context: 64})
	for _, r := range []engine.Request{
		{},
		{Prompt: []int32{1, 99999}},
		{Prompt: make([]int32, 65)},
		{Prompt: []int32{1}, MaxTokens: 64},
	} {
		if _, err := e.Submit(context.Background(), r); err == nil {
			t.Errorf("%v accepted", r.Prompt)
		}
	}
	long := engine.Request{Prompt: []int32{1}, MaxTokens: 60, Sampling: sample.Params{Greedy: true}, IgnoreEOS: true}
	var chans []<-chan engine.Event
	var full error
	for range 10 {
		ch, err := e.Submit(context.Background(), long)
		if err != nil {
			full = err
			break
		}
		chans = append(chans, ch)
	}
	if full == nil {
		t.Fatal("a queue of 2 took 10 requests")
	}
	for _, ch := range chans {
		for range ch {
		}
	}
	t.Logf("queue full: %v", full)
}

// TestFamilyBatchInvariance is TestBatchInvariance on small random-weight
// files of every family beyond llama, and on a llama with a sliding
// window: the windowed attention of prompts up to 64 tokens (windows of
// 16) through batches, a prefill budget of 7 (chunks that start inside
// and outside the window) and preemption gives each sequence the tokens
// it gets alone.
func TestFamilyBatchInvariance(t *testing.T) {
	base := llama.SynthOptions{Dim: 64, Layers: 2, Heads: 4, KVHeads: 2, FFN: 128, Context: 2048, Vocab: 600, WeightStd: 0.3, Type: "f32", Seed: 11}
	for _, c := range []struct {
		name string
		o    func(o *llama.SynthOptions)
	}{
		{"llama-swa", func(o *llama.SynthOptions) { o.SlidingWindow = 16 }},
		{"qwen2", func(o *llama.SynthOptions) { o.Arch = "qwen2" }},
		{"qwen3", func(o *llama.SynthOptions) { o.Arch, o.HeadDim = "qwen3", 32 }},
		{"gemma2", func(o *llama.SynthOptions) {
			o.Arch, o.HeadDim, o.SlidingWindow, o.AttnSoftcap, o.FinalSoftcap, o.WeightStd = "gemma2", 32, 16, 1.5, 4, 0.1
		}},
		{"gemma3", func(o *llama.SynthOptions) { o.Arch, o.Layers, o.SlidingWindow, o.WeightStd = "gemma3", 6, 16, 0.1 }},
		{"phi3", func(o *llama.SynthOptions) { o.Arch, o.RopeDim = "phi3", 8 }},
	} {
		o := base
		c.o(&o)
		for _, bk := range backends {
			t.Run(bk.name+"/"+c.name, func(t *testing.T) {
				path := testmodels.Synth(t, t.TempDir(), c.name+".gguf", o)
				batchInvariance(t, path, bk.new(t), 64)
			})
		}
	}
}
