package llama

import (
	"strings"
	"testing"
)

func TestCheckTensorParallel(t *testing.T) {
	l3 := Config{Dim: 4096, HiddenDim: 14336, NHeads: 32, NKVHeads: 8, HeadDim: 128}
	l70 := Config{Dim: 8192, HiddenDim: 28672, NHeads: 64, NKVHeads: 8, HeadDim: 128}
	tiny := Config{Dim: 2048, HiddenDim: 5632, NHeads: 32, NKVHeads: 4, HeadDim: 64}
	for _, c := range []struct {
		cfg      Config
		n, block int
		bad      string // "" when it splits
	}{
		{l3, 1, 256, ""}, {l3, 2, 256, ""}, {l3, 4, 256, ""}, {l3, 8, 256, ""},
		{l3, 3, 256, "KV heads do not divide by 3"},
		{l3, 16, 256, "KV heads do not divide by 16"},
		{l70, 8, 256, ""},
		{tiny, 4, 256, "ffn_down are not whole 256-value"}, // 1408 columns
		{tiny, 4, 32, ""}, {tiny, 2, 256, ""},
		{tiny, 8, 32, "KV heads do not divide"},
		{l3, 0, 256, "must be at least 1"},
		{Config{HiddenDim: 14340, NHeads: 32, NKVHeads: 5, HeadDim: 128}, 5, 1, "attention heads"},
		{Config{HiddenDim: 14335, NHeads: 32, NKVHeads: 8, HeadDim: 128}, 2, 1, "FFN size 14335"},
	} {
		err := c.cfg.CheckTensorParallel(c.n, c.block)
		switch {
		case c.bad == "" && err != nil:
			t.Errorf("%+v n=%d: %v", c.cfg, c.n, err)
		case c.bad != "" && (err == nil || !strings.Contains(err.Error(), c.bad)):
			t.Errorf("%+v n=%d: got %v, want %q", c.cfg, c.n, err, c.bad)
		}
	}
}
