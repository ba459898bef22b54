package sample

import (
	"math"
	"math/rand/v2"
	"testing"

	"greta/ml"
)

func randLogits(n int, seed uint64) []float32 {
	r := rand.New(rand.NewPCG(seed, 1))
	l := make([]float32, n)
	for i := range l {
		l[i] = float32(r.NormFloat64() * 3)
	}
	return l
}

func TestGreedyIsArgmax(t *testing.T) {
	l := randLogits(1000, 1)
	l[417] = 100
	s := New(Params{Greedy: true}, len(l))
	if got := s.Sample(l, nil); got != 417 {
		t.Fatalf("greedy = %d, want 417", got)
	}
}

func TestSameSeedSameTokens(t *testing.T) {
	p := Defaults()
	p.Seed = 42
	a, b := New(p, 5000), New(p, 5000)
	for i := 0; i < 50; i++ {
		l := randLogits(5000, uint64(i))
		if x, y := a.Sample(l, nil), b.Sample(l, nil); x != y {
			t.Fatalf("step %d: %d vs %d", i, x, y)
		}
	}
}

func TestTopKRestricts(t *testing.T) {
	l := randLogits(2000, 3)
	top := Top(l, 5)
	allowed := map[int32]bool{}
	for _, c := range top {
		allowed[c.ID] = true
	}
	s := New(Params{Temp: 5, TopK: 5, Seed: 9}, len(l))
	for i := 0; i < 200; i++ {
		if id := s.Sample(l, nil); !allowed[id] {
			t.Fatalf("top-k 5 sampled %d, outside %v", id, top)
		}
	}
}

func TestMinPAndTopPKeepTheFavourite(t *testing.T) {
	l := randLogits(2000, 4)
	l[7] = 50 // overwhelming favourite
	s := New(Params{Temp: 1, TopP: 0.9, MinP: 0.1, Seed: 1}, len(l))
	for i := 0; i < 100; i++ {
		if id := s.Sample(l, nil); id != 7 {
			t.Fatalf("sampled %d, want 7", id)
		}
	}
}

func TestRepeatPenaltyChangesGreedy(t *testing.T) {
	l := []float32{1, 2, 1.9}
	s := New(Params{Greedy: true, RepeatPenalty: 1.5, RepeatLastN: 64}, 3)
	if got := s.Sample(l, []int32{1}); got != 2 {
		t.Fatalf("penalized greedy = %d, want 2", got)
	}
}

func TestTopProbabilities(t *testing.T) {
	l := []float32{0, 1, 2, 3}
	top := Top(l, 2)
	if top[0].ID != 3 || top[1].ID != 2 || top[0].P < 0.6 || top[0].P > 0.7 {
		t.Fatalf("Top = %+v", top)
	}
}

func TestSampleDoesNotAllocate(t *testing.T) {
	l := randLogits(32000, 5)
	p := Defaults()
	s := New(p, len(l))
	hist := []int32{1, 2, 3}
	if n := testing.AllocsPerRun(20, func() { s.Sample(l, hist) }); n > 0 {
		t.Fatalf("Sample allocates %.0f times per call", n)
	}
}

// Sampling from a backend's top-k selection draws exactly what sampling
// from the whole row draws, with the same seed.
func TestSampleTopMatchesSample(t *testing.T) {
	p := Defaults()
	p.Seed, p.Temp = 7, 1.3
	a, b := New(p, 8000), New(p, 8000)
	for i := 0; i < 100; i++ {
		l := randLogits(8000, uint64(100+i))
		top := Top(l, p.TopK)
		ids, vals := make([]int32, len(top)), make([]float32, len(top))
		for j, c := range top {
			ids[j], vals[j] = c.ID, c.Logit
		}
		if x, y := a.Sample(l, nil), b.SampleTop(ids, vals); x != y {
			t.Fatalf("step %d: Sample %d, SampleTop %d", i, x, y)
		}
	}
}

// Presence and frequency penalties subtract from the logits of recent
// tokens (presence once, frequency per occurrence), so that greedy picks
// the best token after them, and the window is RepeatLastN.
func TestPresenceFrequencyPenalties(t *testing.T) {
	l := []float32{0, 5, 4.5, 3, -1}
	hist := []int32{1, 1, 2}
	for _, c := range []struct {
		p    Params
		want int32
	}{
		{Params{Greedy: true}, 1},
		{Params{Greedy: true, RepeatLastN: 64, PresencePenalty: 0.4}, 1},                   // 4.6 vs 4.1
		{Params{Greedy: true, RepeatLastN: 64, PresencePenalty: 0.6}, 1},                   // 4.4, 3.9 vs 3
		{Params{Greedy: true, RepeatLastN: 64, FrequencyPenalty: 0.6}, 2},                  // 3.8, 3.9 vs 3: counts matter
		{Params{Greedy: true, RepeatLastN: 1, FrequencyPenalty: 2}, 1},                     // only token 2 is in the window
		{Params{Greedy: true, RepeatLastN: 64, FrequencyPenalty: -1}, 1},                   // negative: favours repeats
		{Params{Greedy: true, RepeatLastN: 64, RepeatPenalty: 2, PresencePenalty: 0.1}, 3}, // 2.4, 2.15 vs 3
	} {
		if !c.p.Penalized() && c.p.PresencePenalty != 0 {
			t.Fatal("Penalized is false with a penalty on")
		}
		if got := New(c.p, len(l)).Sample(l, hist); got != c.want {
			t.Errorf("%+v: got %d, want %d", c.p, got, c.want)
		}
	}
	if err := (Params{PresencePenalty: 2.5}).Validate(); err == nil {
		t.Error("presence_penalty 2.5 passed Validate")
	}
	if err := (Params{FrequencyPenalty: -2}).Validate(); err != nil {
		t.Errorf("frequency_penalty -2: %v", err)
	}
}

// Sampling from a backend's selection for Want (ml.TopKRows, what the CPU
// backend runs; the CUDA one is tested against it) draws exactly what
// Sample draws from the whole row, step after step with one seed: greedy
// and sampled, with every kind of penalty (those that raise logits too),
// on rows with heavy ties, and top-k from 1 to the vocabulary.
func TestWantSampleTopMatchesSample(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	const V = 300
	for trial := range 400 {
		p := Params{Temp: []float64{0, 0.7, 1.5}[trial%3], TopK: 1 + r.IntN(V+20), TopP: []float64{1, 0.9, 0.5}[r.IntN(3)],
			MinP: []float64{0, 0.05}[r.IntN(2)], RepeatLastN: r.IntN(40), Seed: uint64(trial)}
		switch trial % 5 {
		case 1:
			p.RepeatPenalty = 1.3
		case 2:
			p.RepeatPenalty = 0.7 // raises logits: a token far down can come up
		case 3:
			p.PresencePenalty, p.FrequencyPenalty = -2, 0.5
		case 4:
			p.RepeatPenalty, p.PresencePenalty, p.FrequencyPenalty = 1.1, 0.4, -0.3
		}
		if trial%7 == 0 {
			p.TopK = 0
		}
		a, b := New(p, V), New(p, V)
		hist := []int32{-1, V + 5} // out of the vocabulary: ignored
		for step := range 8 {
			row := make([]float32, V)
			for i := range row {
				switch trial % 4 {
				case 0:
					row[i] = float32(r.NormFloat64() * 3)
				case 1:
					row[i] = float32(r.IntN(4)) / 2 // four values: ties everywhere
				case 2:
					row[i] = 1
				default:
					row[i] = float32(math.Round(r.NormFloat64()*4) / 4)
				}
			}
			want := a.Sample(row, hist)
			k, gather, ok := b.Want(hist)
			if !ok {
				if p.TopK > 0 && p.TopK < V && p.Temp > 0 {
					t.Fatalf("trial %d: Want refused top_k %d", trial, p.TopK)
				}
				b.Sample(row, hist) // keep the generators in step
				continue
			}
			tk := ml.TopK{Rows: []int32{0}, K: []int32{int32(k)}, Gather: [][]int32{gather}}
			ml.TopKRows(&tk, 1, V, func(int) []float32 { return row })
			if got := b.SampleTop(tk.IDs, tk.Vals); got != want {
				t.Fatalf("trial %d step %d (%+v, k %d, %d gathered): SampleTop %d, Sample %d", trial, step, p, k, len(gather), got, want)
			}
			for range 1 + r.IntN(6) {
				hist = append(hist, int32(r.IntN(V)))
			}
		}
	}
}

// selectTop keeps the lower ids among equal logits, as ml.TopKHost does.
func TestSelectTopTies(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	for range 200 {
		n := 1 + r.IntN(200)
		row := make([]float32, n)
		for i := range row {
			row[i] = float32(r.IntN(3))
		}
		k := 1 + r.IntN(n)
		c := make([]Candidate, n)
		for i, v := range row {
			c[i] = Candidate{ID: int32(i), Logit: v}
		}
		selectTop(c, k)
		c = c[:k]
		sortDesc(c)
		ids, vals := make([]int32, k), make([]float32, k)
		ml.TopKHost(row, k, ids, vals)
		for i := range k {
			if c[i].ID != ids[i] {
				t.Fatalf("n %d k %d: entry %d is %d, TopKHost %d", n, k, i, c[i].ID, ids[i])
			}
		}
	}
}
