package generate_test

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"greta/generate"
	"greta/gguf"
	"greta/internal/testmodels"
	"greta/sample"
)

func greedy(n int) generate.Options {
	return generate.Options{MaxTokens: n, Sampling: sample.Params{Greedy: true}}
}

// -n follows llama.cpp: 0 generates nothing, -1 runs to EOS or the end of
// the context, other negatives are refused.
func TestMaxTokensMeaning(t *testing.T) {
	l := tiny(t)
	s, _ := l.m.NewState(32, 8, false)
	r, err := generate.Run(l.m, l.tok, s, []int32{1, 5, 6}, greedy(0))
	if err != nil || len(r.Generated) != 0 || r.Text != "" || s.Pos != 3 {
		t.Fatalf("-n 0: %v %+v pos %d", err, r, s.Pos)
	}
	s, _ = l.m.NewState(32, 8, false)
	r, err = generate.Run(l.m, l.tok, s, []int32{1, 5, 6}, greedy(-1))
	if err != nil || (r.StopReason != "context" && r.StopReason != "eos") {
		t.Fatalf("-n -1: %v %+v", err, r)
	}
	if r.StopReason == "context" && 3+len(r.Generated)-1 != 32 {
		t.Errorf("-n -1 stopped at %d prompt + %d generated in a context of 32", 3, len(r.Generated))
	}
	for _, n := range []int{-2, -100, math.MinInt} {
		s, _ = l.m.NewState(32, 8, false)
		_, err = generate.Run(l.m, l.tok, s, []int32{1}, greedy(n))
		var re *sample.RangeError
		if !errors.As(err, &re) || re.Field != "max_tokens" {
			t.Errorf("-n %d: %v", n, err)
		}
	}
}

// Every option is validated before any work: a bad sampling setting is an
// error, not a changed output.
func TestRunValidates(t *testing.T) {
	l := tiny(t)
	s, _ := l.m.NewState(32, 8, false)
	for _, o := range []generate.Options{
		{MaxTokens: 4, Sampling: sample.Params{Temp: math.NaN()}},
		{MaxTokens: 4, Sampling: sample.Params{Temp: 1, TopP: 2}},
		{MaxTokens: 4, Sampling: sample.Params{Temp: 1, TopK: -5}},
		{MaxTokens: 4, Stop: []string{""}},
		{MaxTokens: 4, DebugTop: -1},
	} {
		if _, err := generate.Run(l.m, l.tok, s, []int32{1}, o); err == nil || s.Pos != 0 {
			t.Errorf("%+v: err %v, pos %d", o, err, s.Pos)
		}
	}
}

func TestSizesValidate(t *testing.T) {
	if err := (generate.Sizes{Context: 0, Batch: 512, Threads: 0, MaxTokens: 128}).Validate(); err != nil {
		t.Fatal(err)
	}
	for field, s := range map[string]generate.Sizes{
		"n_ctx":      {Context: -1, Batch: 1},
		"n_batch":    {Batch: 0},
		"n_threads":  {Batch: 1, Threads: -1},
		"max_tokens": {Batch: 1, MaxTokens: -2},
	} {
		var re *sample.RangeError
		if err := s.Validate(); !errors.As(err, &re) || re.Field != field {
			t.Errorf("%s: %v", field, err)
		}
	}
	huge := generate.Sizes{Context: 1 << 62, Batch: 1}
	if huge.Validate() == nil {
		t.Error("a context of 2^62 passed")
	}
}

// Two turns in one session give the tokens of one run over both prompts:
// the cache is kept, and only the new tokens are fed.
func TestSessionContinues(t *testing.T) {
	l := tiny(t)
	s1, _ := l.m.NewState(64, 8, false)
	ss := generate.NewSession(l.m, l.tok, s1)
	a, err := ss.Generate(context.Background(), []int32{1, 10, 11}, greedy(5))
	if err != nil {
		t.Fatal(err)
	}
	b, err := ss.Generate(context.Background(), []int32{20, 21}, greedy(5))
	if err != nil {
		t.Fatal(err)
	}
	// The same sequence in one go: prompt, first reply, second prompt.
	whole := append(append([]int32{1, 10, 11}, a.Generated...), 20, 21)
	s2, _ := l.m.NewState(64, 8, false)
	c, err := generate.Run(l.m, l.tok, s2, whole, greedy(5))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(b.Generated, c.Generated) {
		t.Fatalf("second turn %v, one run %v", b.Generated, c.Generated)
	}
	if want := append(slices.Clone(whole), b.Generated...); !slices.Equal(ss.Tokens(), want) {
		t.Fatalf("session tokens %v, want %v", ss.Tokens(), want)
	}
	// The last generated token is fed with the next turn, not before.
	if s1.Pos != len(whole)+len(b.Generated)-1 {
		t.Errorf("pos %d", s1.Pos)
	}
}

// A cancelled context stops a reply between tokens without an error, and
// the session goes on.
func TestSessionCancel(t *testing.T) {
	l := tiny(t)
	s, _ := l.m.NewState(128, 8, false)
	ss := generate.NewSession(l.m, l.tok, s)
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	o := greedy(-1)
	o.OnText = func(string) error {
		if n++; n == 3 {
			cancel()
		}
		return nil
	}
	r, err := ss.Generate(ctx, []int32{1, 7}, o)
	if err != nil || r.StopReason != "cancelled" || len(r.Generated) > 4 {
		t.Fatalf("cancel: %v %+v", err, r)
	}
	if _, err := ss.Generate(context.Background(), []int32{9}, greedy(2)); err != nil {
		t.Fatalf("after a cancel: %v", err)
	}
}

// A failing OnText (a write error) ends the generation with its error.
func TestOnTextError(t *testing.T) {
	l := tiny(t)
	s, _ := l.m.NewState(64, 8, false)
	boom := errors.New("no space left on device")
	o := greedy(20)
	o.OnText = func(string) error { return boom }
	r, err := generate.Run(l.m, l.tok, s, []int32{1, 7}, o)
	if !errors.Is(err, boom) || len(r.Generated) > 2 {
		t.Fatalf("%v, %d generated", err, len(r.Generated))
	}
}

// A stop string is found across token boundaries and never emitted.
func TestStopStrings(t *testing.T) {
	l := tiny(t)
	s, _ := l.m.NewState(64, 8, false)
	free, err := generate.Run(l.m, l.tok, s, []int32{1, 7}, greedy(30))
	if err != nil {
		t.Fatal(err)
	}
	// A stop string that spans at least two tokens, from the middle of the text.
	var pieces []string
	for _, id := range free.Generated {
		pieces = append(pieces, l.tok.Decode([]int32{id}))
	}
	at := -1
	for i := 3; i+1 < len(pieces); i++ {
		if len(pieces[i]) > 0 && len(pieces[i+1]) > 0 {
			at = i
			break
		}
	}
	if at < 0 {
		t.Skip("no two non-empty pieces in a row")
	}
	stopStr := pieces[at][len(pieces[at])-1:] + pieces[at+1][:1]
	want, _, _ := strings.Cut(free.Text, stopStr)
	s, _ = l.m.NewState(64, 8, false)
	o := greedy(30)
	o.Stop = []string{stopStr}
	var streamed strings.Builder
	o.OnText = func(t string) error { streamed.WriteString(t); return nil }
	r, err := generate.Run(l.m, l.tok, s, []int32{1, 7}, o)
	if err != nil || r.StopReason != "stop" || r.Text != want || streamed.String() != want {
		t.Fatalf("stop %q: %v %q (streamed %q), want %q", stopStr, err, r.Text, streamed.String(), want)
	}
}

// brokenModel writes the tiny model with every value of one f32 tensor set
// to v.
func brokenModel(t *testing.T, tensor string, v float32) string {
	path := testmodels.Synth(t, t.TempDir(), "m.gguf", testmodels.Tiny)
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	ti, ok := f.Tensor(tensor)
	if !ok || ti.Type != gguf.F32 {
		t.Fatalf("%s: %v", tensor, ti)
	}
	off, size := f.DataOffset+int64(ti.Offset), ti.Size()
	f.Close()
	b, _ := os.ReadFile(path)
	for i := off; i < off+size; i += 4 {
		binary.LittleEndian.PutUint32(b[i:], math.Float32bits(v))
	}
	out := filepath.Join(t.TempDir(), "broken.gguf")
	os.WriteFile(out, b, 0o644)
	return out
}

// Logits that are NaN or Inf stop generation with an error naming the step,
// on every path that picks a token (argmax, top-k, the full row).
func TestNonFiniteLogits(t *testing.T) {
	for _, c := range []struct {
		tensor string
		v      float32
	}{
		{"output_norm.weight", float32(math.NaN())},
		{"token_embd.weight", float32(math.Inf(1))},
	} {
		l := load(t, brokenModel(t, c.tensor, c.v), newCPU(t))
		for name, o := range map[string]generate.Options{
			"greedy":  greedy(20),
			"top-k":   {MaxTokens: 20, Sampling: sample.Defaults()},
			"penalty": {MaxTokens: 20, Sampling: sample.Params{Temp: 1, RepeatPenalty: 1.1, RepeatLastN: 64}},
			"debug":   {MaxTokens: 20, Sampling: sample.Params{Greedy: true}, DebugTop: 3},
		} {
			s, _ := l.m.NewState(64, 8, false)
			r, err := generate.Run(l.m, l.tok, s, []int32{1, 7}, o)
			var le *generate.LogitsError
			if !errors.As(err, &le) || le.Step != 0 || !strings.Contains(err.Error(), "step 0") {
				t.Errorf("%s %s: %v", c.tensor, name, err)
			}
			if r != nil && len(r.Generated) != 0 {
				t.Errorf("%s %s: generated %v", c.tensor, name, r.Generated)
			}
		}
	}
}

func TestCheckLogits(t *testing.T) {
	row := make([]float32, 1000)
	for i := range row {
		row[i] = float32(i) - 500
	}
	if err := generate.CheckLogits(3, row); err != nil {
		t.Fatal(err)
	}
	for _, v := range []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))} {
		row[777] = v
		var le *generate.LogitsError
		if err := generate.CheckLogits(3, row); !errors.As(err, &le) || le.Step != 3 || le.Index != 777 {
			t.Errorf("%v: %v", v, err)
		}
	}
}
