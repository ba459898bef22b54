package sample

import (
	"errors"
	"math"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	if err := Defaults().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	ok := []func(*Params){
		func(p *Params) { p.Temp = 0 },
		func(p *Params) { p.TopP, p.MinP = 1, 1 },
		func(p *Params) { p.TopP, p.MinP = 0, 0 },
		func(p *Params) { p.TopK = 0 },
		func(p *Params) { p.RepeatPenalty = 0 },
		func(p *Params) { p.RepeatLastN = 0 },
	}
	for i, f := range ok {
		p := Defaults()
		f(&p)
		if err := p.Validate(); err != nil {
			t.Errorf("case %d: %v", i, err)
		}
	}
	nan, inf := math.NaN(), math.Inf(1)
	bad := []struct {
		field string
		set   func(*Params)
	}{
		{"temperature", func(p *Params) { p.Temp = nan }},
		{"temperature", func(p *Params) { p.Temp = inf }},
		{"temperature", func(p *Params) { p.Temp = -0.5 }},
		{"top_p", func(p *Params) { p.TopP = 2 }},
		{"top_p", func(p *Params) { p.TopP = -0.1 }},
		{"top_p", func(p *Params) { p.TopP = nan }},
		{"min_p", func(p *Params) { p.MinP = -1 }},
		{"min_p", func(p *Params) { p.MinP = 1.5 }},
		{"min_p", func(p *Params) { p.MinP = nan }},
		{"repeat_penalty", func(p *Params) { p.RepeatPenalty = -2 }},
		{"repeat_penalty", func(p *Params) { p.RepeatPenalty = nan }},
		{"repeat_penalty", func(p *Params) { p.RepeatPenalty = -inf }},
		{"top_k", func(p *Params) { p.TopK = -5 }},
		{"top_k", func(p *Params) { p.TopK = 1 << 40 }},
		{"repeat_last_n", func(p *Params) { p.RepeatLastN = -1 }},
	}
	for _, c := range bad {
		p := Defaults()
		c.set(&p)
		err := p.Validate()
		var re *RangeError
		if !errors.As(err, &re) || re.Field != c.field || !strings.Contains(err.Error(), c.field) || !strings.Contains(err.Error(), "want") {
			t.Errorf("%s: %v", c.field, err)
		}
	}
}

func TestRandomSeedDiffers(t *testing.T) {
	if RandomSeed() == RandomSeed() && RandomSeed() == RandomSeed() {
		t.Fatal("two pairs of random seeds are equal")
	}
}
