package engine

import (
	"context"
	"sync"
	"testing"

	"greta/backend/cpu"
	"greta/gguf"
	"greta/internal/testmodels"
	"greta/model/llama"
	"greta/sample"
	"greta/tokenizer"
)

// The scheduler reuses its slices from step to step; a finished request
// must not stay reachable from their spare capacity (with its tokens, its
// sampler's vocabulary-sized buffers, its stream): over a soak that would
// hold as many requests as the slices ever held at once.
func TestFinishedRequestsNotRetained(t *testing.T) {
	path := testmodels.Synth(t, t.TempDir(), "tiny.gguf", testmodels.Tiny)
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := cpu.New(1)
	defer b.Close()
	m, err := llama.Load(f, b, llama.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.FromGGUF(f)
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(m, tok, Options{Parallel: 4, Context: 128})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := sample.Defaults()
			p.Seed = uint64(i)
			if _, err := e.Generate(context.Background(), Request{Prompt: []int32{1, int32(10 + i), 20, 30}, MaxTokens: 8, Sampling: p}, nil); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	e.Close() // the scheduler's goroutine has ended: its state is ours to read
	s := e.s
	for i, q := range s.inStep[:cap(s.inStep)] {
		if q != nil {
			t.Errorf("inStep[%d] still holds a finished request", i)
		}
	}
	for i, p := range s.batch.Pages[:cap(s.batch.Pages)] {
		if p != nil {
			t.Errorf("the batch's page table %d is still held", i)
		}
	}
	for i, q := range e.pending[:cap(e.pending)] {
		if q != nil {
			t.Errorf("pending[%d] still holds a request", i)
		}
	}
}
