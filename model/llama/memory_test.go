package llama_test

import (
	"errors"
	"math"
	"runtime"
	"strings"
	"testing"

	"greta/backend/cpu"
	"greta/gguf"
	"greta/internal/testmodels"
	"greta/model/llama"
)

func tinyModel(t *testing.T) *llama.Model {
	t.Helper()
	path := testmodels.Synth(t, t.TempDir(), "tiny.gguf", testmodels.Tiny)
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	b := cpu.New(1)
	t.Cleanup(func() { b.Close() })
	m, err := llama.Load(f, b, llama.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// Every size is checked before anything is allocated: a context past the
// int32 limit is refused by name, and one that does not fit in memory is a
// MemoryError that says how much was asked and how much there is. Before,
// ctx 2^62 panicked in the CPU attention and ctx 2^40 died out of memory.
func TestNewStateRefusesHugeContexts(t *testing.T) {
	m := tinyModel(t)
	for _, ctx := range []int{1 << 62, math.MaxInt, llama.MaxContext + 1} {
		_, err := m.NewState(ctx, 512, false)
		if err == nil || !strings.Contains(err.Error(), "exceeds the limit of 2147483647 tokens") {
			t.Errorf("ctx %d: %v", ctx, err)
		}
	}
	for _, c := range []struct{ ctx, batch int }{{llama.MaxContext, 512}, {llama.MaxContext, 1}, {1 << 30, 1 << 30}} {
		_, err := m.NewState(c.ctx, c.batch, true)
		var me *llama.MemoryError
		if !errors.As(err, &me) || me.Need <= me.Available || !strings.Contains(err.Error(), "needs") || !strings.Contains(err.Error(), "available") {
			t.Errorf("ctx %d batch %d: %v", c.ctx, c.batch, err)
		}
	}
	if _, err := m.NewState(0, 1, false); err == nil {
		t.Error("ctx 0 accepted")
	}
	if _, err := m.NewState(256, 64, false); err != nil {
		t.Errorf("a small state: %v", err)
	}
}

// MemoryNeeded is an upper bound on what NewState allocates on the CPU
// backend, and tight: the rest is only the attention scratch it counts
// for every core.
func TestMemoryNeededBoundsAllocation(t *testing.T) {
	m := tinyModel(t)
	c := m.Config
	const ctx, batch = 1 << 16, 64
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	s, err := m.NewState(ctx, batch, true)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	_ = s
	got := int64(after.TotalAlloc - before.TotalAlloc)
	need, err := llama.MemoryNeeded(c, ctx, batch)
	if err != nil {
		t.Fatal(err)
	}
	scratch := int64(runtime.GOMAXPROCS(0)) * int64(c.NHeads/c.NKVHeads) * ctx * 4
	if got > need || got < need-scratch-need/50 {
		t.Errorf("NewState allocated %d bytes; MemoryNeeded says %d (of which scratch %d)", got, need, scratch)
	}
	kv := int64(2 * c.NLayers * ctx * c.KVDim() * 4)
	if got < kv {
		t.Errorf("allocated %d < KV cache %d", got, kv)
	}
}

func TestMemoryNeededOverflow(t *testing.T) {
	huge := &llama.Config{Dim: 1 << 16, HiddenDim: 1 << 20, NLayers: 1 << 10, NHeads: 1 << 16, NKVHeads: 1 << 16, HeadDim: 1 << 16, VocabSize: 1 << 22}
	if _, err := llama.MemoryNeeded(huge, llama.MaxContext, 1<<20); err == nil || !strings.Contains(err.Error(), "more than 2^63 bytes") {
		t.Errorf("overflow: %v", err)
	}
	small := &llama.Config{Dim: 64, HiddenDim: 128, NLayers: 2, NHeads: 4, NKVHeads: 2, HeadDim: 16, VocabSize: 300}
	a, err1 := llama.MemoryNeeded(small, 1000, 16)
	b, err2 := llama.MemoryNeeded(small, 2000, 16)
	if err1 != nil || err2 != nil || b <= a {
		t.Errorf("not increasing with ctx: %d, %d (%v %v)", a, b, err1, err2)
	}
	for _, bad := range [][2]int{{0, 1}, {-1, 1}, {10, 0}, {llama.MaxContext + 1, 1}} {
		if _, err := llama.MemoryNeeded(small, bad[0], bad[1]); err == nil {
			t.Errorf("ctx %d batch %d accepted", bad[0], bad[1])
		}
	}
}

func TestCheckMemory(t *testing.T) {
	avail, src, err := llama.AvailableMemory()
	if err != nil {
		t.Skipf("no memory figure here: %v", err)
	}
	if avail <= 0 || src == "" {
		t.Fatalf("available %d from %q", avail, src)
	}
	if err := llama.CheckMemory(1 << 20); err != nil {
		t.Errorf("1 MiB: %v", err)
	}
	err = llama.CheckMemory(math.MaxInt64)
	if err == nil || !strings.Contains(err.Error(), "8.0 EiB") || strings.Contains(err.Error(), "\n") {
		t.Errorf("2^63 bytes: %v", err)
	}
}

// INT8 mode copies the float matrices onto the heap: a model whose copy
// cannot fit is refused before the first one is converted.
func TestInt8LoadChecksMemory(t *testing.T) {
	o := llama.Presets["llama3-8b"]
	o.Dim, o.FFN, o.Layers, o.Type = 16384, 53248, 126, "f32" // Llama-3-405B's shape
	path := t.TempDir() + "/405b-f32.gguf"
	testmodels.Sparse(t, path, o, gguf.F32)
	f, err := gguf.Open(path)
	if err != nil {
		t.Skipf("a 1.6 TB sparse file: %v", err)
	}
	defer f.Close()
	if avail, _, err := llama.AvailableMemory(); err != nil || avail > 400<<30 {
		t.Skipf("%d bytes of memory: enough to take the copy", avail)
	}
	b := cpu.New(1)
	defer b.Close()
	_, err = llama.Load(f, b, llama.LoadOptions{Int8: true})
	var me *llama.MemoryError
	if !errors.As(err, &me) || !strings.Contains(err.Error(), "INT8 mode") {
		t.Fatalf("Load: %v", err)
	}
	t.Log(err)
}
