// Package sample picks the next token from logits: greedy, or llama.cpp's
// chain of repetition penalty, top-k, top-p, min-p and temperature, drawing
// from a seeded generator so that a run is reproducible.
package sample

import (
	"math"
	"math/rand/v2"
	"slices"
	"sort"
)

// Params are the sampling settings. Zero values disable a stage where that
// makes sense (TopK 0: no top-k; TopP 1: none; MinP 0: none;
// RepeatPenalty 1: none). Temp ≤ 0 or Greedy means argmax.
type Params struct {
	Greedy        bool
	Temp          float64
	TopK          int
	TopP          float64
	MinP          float64
	RepeatPenalty float64
	RepeatLastN   int // how many recent tokens the penalties look at
	// PresencePenalty is subtracted from the logit of every token among
	// the last RepeatLastN, FrequencyPenalty once per occurrence there
	// (OpenAI's presence_penalty and frequency_penalty, applied over
	// llama.cpp's window as llama-server does). 0: off.
	PresencePenalty  float64
	FrequencyPenalty float64
	Seed             uint64
}

// Penalized reports whether any penalty is on: then even greedy decoding
// must go through Sample, which applies them before the argmax.
func (p Params) Penalized() bool {
	return (p.RepeatPenalty != 0 && p.RepeatPenalty != 1) || p.PresencePenalty != 0 || p.FrequencyPenalty != 0
}

// Defaults are llama.cpp's defaults.
func Defaults() Params {
	return Params{Temp: 0.8, TopK: 40, TopP: 0.95, MinP: 0.05, RepeatPenalty: 1, RepeatLastN: 64, Seed: 0}
}

// Candidate is one token with its logit and probability.
type Candidate struct {
	ID    int32
	Logit float32
	P     float64
}

// Sampler holds the settings, the generator and preallocated buffers, so
// that sampling a token allocates nothing.
type Sampler struct {
	p     Params
	rng   *rand.Rand
	cands []Candidate
	seen  map[int32]int
}

// New returns a sampler for a vocabulary of n tokens.
func New(p Params, n int) *Sampler {
	return &Sampler{p: p, rng: rand.New(rand.NewPCG(p.Seed, p.Seed^0x5851F42D4C957F2D)), cands: make([]Candidate, n), seen: map[int32]int{}}
}

// Greedy returns the index of the largest logit (the first on ties).
func Greedy(logits []float32) int32 {
	best := 0
	for i, v := range logits {
		if v > logits[best] {
			best = i
		}
	}
	return int32(best)
}

// Sample picks the next token. history holds the tokens so far (prompt and
// generated), for the repetition penalty.
func (s *Sampler) Sample(logits []float32, history []int32) int32 {
	p := s.p
	penalize := p.Penalized()
	if (p.Greedy || p.Temp <= 0) && !penalize {
		return Greedy(logits)
	}
	c := s.cands[:len(logits)]
	for i, v := range logits {
		c[i] = Candidate{ID: int32(i), Logit: v}
	}
	if penalize {
		// llama.cpp's penalties sampler: per distinct recent token, divide
		// a positive logit by the repeat penalty (multiply a negative
		// one), then subtract count·frequency + presence.
		clear(s.seen)
		from := max(0, len(history)-p.RepeatLastN)
		for _, t := range history[from:] {
			if t >= 0 && int(t) < len(c) {
				s.seen[t]++
			}
		}
		rp := p.RepeatPenalty
		if rp == 0 {
			rp = 1
		}
		for t, n := range s.seen {
			l := c[t].Logit
			if l > 0 {
				l /= float32(rp)
			} else {
				l *= float32(rp)
			}
			c[t].Logit = l - float32(float64(n)*p.FrequencyPenalty+p.PresencePenalty)
		}
	}
	if p.Greedy || p.Temp <= 0 {
		best := 0
		for i := range c {
			if c[i].Logit > c[best].Logit {
				best = i
			}
		}
		return c[best].ID
	}
	// Top-k: keep the k largest, sorted by logit.
	if p.TopK > 0 && p.TopK < len(c) {
		selectTop(c, p.TopK)
		c = c[:p.TopK]
	}
	sortDesc(c)
	return s.finish(c)
}

// SampleTop samples from candidates a backend already selected with
// Backend.TopK (ids and logits, best first, TopK of them): the rest of the
// chain (top-p, min-p, temperature) needs nothing else. It must not be used
// with a repetition penalty, which needs every logit.
func (s *Sampler) SampleTop(ids []int32, logits []float32) int32 {
	c := s.cands[:len(ids)]
	for i := range ids {
		c[i] = Candidate{ID: ids[i], Logit: logits[i]}
	}
	return s.finish(c)
}

// finish runs top-p, min-p and temperature over candidates sorted best
// first, and draws one.
func (s *Sampler) finish(c []Candidate) int32 {
	p := s.p
	softmax(c, 1)
	// Top-p: the smallest prefix whose probability reaches p.
	if p.TopP > 0 && p.TopP < 1 {
		var cum float64
		for i := range c {
			cum += c[i].P
			if cum >= p.TopP {
				c = c[:i+1]
				break
			}
		}
	}
	// Min-p: drop tokens below min_p times the top probability.
	if p.MinP > 0 {
		limit := c[0].P * p.MinP
		n := 1
		for n < len(c) && c[n].P >= limit {
			n++
		}
		c = c[:n]
	}
	softmax(c, p.Temp)
	r := s.rng.Float64()
	var cum float64
	for i := range c {
		cum += c[i].P
		if r < cum {
			return c[i].ID
		}
	}
	return c[len(c)-1].ID
}

// softmax sets P from Logit/temp over c.
func softmax(c []Candidate, temp float64) {
	maxL := math.Inf(-1)
	for i := range c {
		maxL = math.Max(maxL, float64(c[i].Logit))
	}
	var sum float64
	for i := range c {
		c[i].P = math.Exp((float64(c[i].Logit) - maxL) / temp)
		sum += c[i].P
	}
	for i := range c {
		c[i].P /= sum
	}
}

func sortDesc(c []Candidate) {
	slices.SortFunc(c, func(a, b Candidate) int {
		switch {
		case a.Logit > b.Logit:
			return -1
		case a.Logit < b.Logit:
			return 1
		}
		return int(a.ID - b.ID)
	})
}

// selectTop moves the k largest logits to the front (quickselect).
func selectTop(c []Candidate, k int) {
	lo, hi := 0, len(c)-1
	for lo < hi {
		pivot := c[(lo+hi)/2].Logit
		i, j := lo, hi
		for i <= j {
			for c[i].Logit > pivot {
				i++
			}
			for c[j].Logit < pivot {
				j--
			}
			if i <= j {
				c[i], c[j] = c[j], c[i]
				i++
				j--
			}
		}
		switch {
		case k-1 <= j:
			hi = j
		case k-1 >= i:
			lo = i
		default:
			return
		}
	}
}

// Top returns the k most likely tokens with their probabilities over the
// whole vocabulary (for --debug-decode).
func Top(logits []float32, k int) []Candidate {
	maxL := math.Inf(-1)
	for _, v := range logits {
		maxL = math.Max(maxL, float64(v))
	}
	var sum float64
	for _, v := range logits {
		sum += math.Exp(float64(v) - maxL)
	}
	k = min(k, len(logits))
	top := make([]Candidate, 0, k+1)
	for i, v := range logits {
		if len(top) == k && v <= top[k-1].Logit {
			continue
		}
		at := sort.Search(len(top), func(j int) bool { return top[j].Logit < v })
		top = slices.Insert(top, at, Candidate{ID: int32(i), Logit: v})
		if len(top) > k {
			top = top[:k]
		}
	}
	for i := range top {
		top[i].P = math.Exp(float64(top[i].Logit)-maxL) / sum
	}
	return top
}
