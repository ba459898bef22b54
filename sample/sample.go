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
	seen  map[int32]int // the recent tokens' counts (penalties)
	pen   []int32       // Want's gather list: the distinct recent tokens
}

// New returns a sampler for a vocabulary of n tokens.
func New(p Params, n int) *Sampler {
	return &Sampler{p: p, rng: rand.New(rand.NewPCG(p.Seed, p.Seed^0x5851F42D4C957F2D)), cands: make([]Candidate, n), seen: map[int32]int{},
		pen: make([]int32, 0, min(n, max(p.RepeatLastN, 0), 1<<12))}
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
		s.recent(history)
		for t, n := range s.seen {
			c[t].Logit = p.penalize(c[t].Logit, n)
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

// recent counts the tokens among history's last RepeatLastN into seen and
// lists the distinct ones in pen, in the order they first appear.
func (s *Sampler) recent(history []int32) {
	clear(s.seen)
	s.pen = s.pen[:0]
	from := max(0, len(history)-s.p.RepeatLastN)
	for _, t := range history[from:] {
		if t >= 0 && int(t) < len(s.cands) {
			if s.seen[t] == 0 {
				s.pen = append(s.pen, t)
			}
			s.seen[t]++
		}
	}
}

// penalize is llama.cpp's penalties sampler for one token seen n times
// recently: divide a positive logit by the repeat penalty (multiply a
// negative one), then subtract n·frequency + presence.
func (p Params) penalize(l float32, n int) float32 {
	rp := p.RepeatPenalty
	if rp == 0 {
		rp = 1
	}
	if l > 0 {
		l /= float32(rp)
	} else {
		l *= float32(rp)
	}
	return l - float32(float64(n)*p.FrequencyPenalty+p.PresencePenalty)
}

// Want says what the sampler needs of the next token's logits row when a
// backend selects candidates on the device (ml.TopK) instead of copying
// the row: its k largest logits, and the logits at the columns gather.
// ok is false when it needs the whole row: sampling without top-k (top_k
// 0 or the whole vocabulary). gather is valid until the next Want, and
// SampleTop must get the backend's answer to this Want.
//
// Penalties change which tokens are in the top k, so the backend cannot
// select on the raw logits alone; Want asks for k+P of them instead, P
// being the number of distinct penalized tokens (those among history's
// last RepeatLastN), and for the raw logits of those P. That is enough,
// whatever the penalties' signs: the unpenalized tokens in the final top
// k are the best of the unpenalized ones, in their raw order, and at most
// P penalized tokens rank above any of them in the raw top k+P; the
// penalized tokens' values come from the gathered logits, so a penalty
// that raises a logit (repeat_penalty < 1, a negative presence or
// frequency penalty) can lift one from anywhere in the row. SampleTop
// applies the penalties (the same float32 arithmetic as Sample) and takes
// the top k by value, the lower id first on ties: the set and order
// Sample's top-k gives over the whole penalized row. Top-p, min-p,
// temperature and the draw then run over the same candidates in the same
// order, so a seeded request draws the same token on either path.
func (s *Sampler) Want(history []int32) (k int, gather []int32, ok bool) {
	p := s.p
	V := len(s.cands)
	s.pen = s.pen[:0]
	if p.Penalized() {
		s.recent(history)
	}
	switch {
	case p.Greedy || p.Temp <= 0:
		k = 1
	case p.TopK <= 0 || p.TopK >= V:
		return 0, nil, false
	default:
		k = p.TopK
	}
	return min(k+len(s.pen), V), s.pen, true
}

// SampleTop samples from what a backend returned for the last Want (ids
// and logits: the k largest raw logits, best first and the lower id first
// on ties, then the raw logits at the gathered columns) and gives the
// token Sample would give for the same row and history.
func (s *Sampler) SampleTop(ids []int32, logits []float32) int32 {
	p := s.p
	nsel := len(ids) - len(s.pen)
	c := s.cands[:0]
	if len(s.pen) == 0 {
		for i := range nsel {
			c = append(c, Candidate{ID: ids[i], Logit: logits[i]})
		}
	} else {
		for i := range nsel {
			if s.seen[ids[i]] == 0 {
				c = append(c, Candidate{ID: ids[i], Logit: logits[i]})
			}
		}
		for j, t := range ids[nsel:] {
			c = append(c, Candidate{ID: t, Logit: p.penalize(logits[nsel+j], s.seen[t])})
		}
		sortDesc(c)
	}
	if p.Greedy || p.Temp <= 0 {
		return c[0].ID
	}
	if p.TopK > 0 && p.TopK < len(c) {
		c = c[:p.TopK]
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

// better orders candidates by logit, the lower id first on ties: the order
// of ml.TopKHost, so that the top k is one set however it is found.
func better(a, b Candidate) bool {
	return a.Logit > b.Logit || a.Logit == b.Logit && a.ID < b.ID
}

// selectTop moves the k best candidates (better) to the front
// (quickselect).
func selectTop(c []Candidate, k int) {
	lo, hi := 0, len(c)-1
	for lo < hi {
		pivot := c[(lo+hi)/2]
		i, j := lo, hi
		for i <= j {
			for better(c[i], pivot) {
				i++
			}
			for better(pivot, c[j]) {
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
