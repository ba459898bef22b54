package main

import (
	"cmp"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"greta/gguf"
	"greta/model/llama"
)

func init() {
	register("synth", "write a model of any family with random weights at any shape", cmdSynth)
}

func cmdSynth(args []string) error {
	fs := newFlags("synth", "-o OUT.gguf [--preset NAME | --dim N --layers N ...] [--type T]")
	out := fs.StringP("output", "o", "", "output GGUF file (required)")
	presetNames := make([]string, 0, len(llama.Presets))
	for n := range llama.Presets {
		presetNames = append(presetNames, n)
	}
	sort.Strings(presetNames)
	preset := fs.String("preset", "", "real model dimensions: "+strings.Join(presetNames, "|"))
	arch := fs.String("arch", "llama", "architecture: "+strings.Join(llama.Architectures(), "|"))
	dim := fs.Int("dim", 256, "embedding length")
	layers := fs.Int("layers", 2, "number of blocks")
	heads := fs.Int("heads", 8, "attention heads")
	kvHeads := fs.Int("kv-heads", 0, "key/value heads (default: --heads)")
	ffn := fs.Int("ffn", 768, "feed-forward length")
	ctx := fs.Int("ctx", 2048, "training context length")
	ropeBase := fs.Float64("rope-base", 10000, "rope theta")
	headDim := fs.Int("head-dim", 0, "head size, written as attention.key_length (default: dim/heads)")
	ropeDim := fs.Int("rope-dim", 0, "rotary dimensions per head (partial rotary below head-dim; default: head-dim)")
	window := fs.Int("sliding-window", 0, "attention.sliding_window (0: none; gemma2 then assumes 4096)")
	swaPattern := fs.Int("swa-pattern", 0, "attention.sliding_window_pattern: every Nth layer global (0: the family's default)")
	ropeBaseSWA := fs.Float64("rope-base-swa", 0, "rope theta of the windowed layers (gemma3; 0: the family's default)")
	attnCap := fs.Float64("attn-softcap", 0, "attn_logit_softcapping (gemma2; 0: not written)")
	finalCap := fs.Float64("final-softcap", 0, "final_logit_softcapping (gemma2/3; 0: not written)")
	weightStd := fs.Float64("weight-std", 0.02, "standard deviation of the weights (larger spreads a small model's logits)")
	tied := fs.Bool("tied", false, "tie output to token_embd (no output.weight)")
	seed := fs.Uint64("seed", 1, "random seed")
	typ := fs.String("type", "f32", "weight type: "+strings.Join(llama.SynthTypes(), "|"))
	vocabFrom := fs.String("vocab-from", "", "copy the tokenizer of this GGUF (e.g. ../shared/vocab/ggml-vocab-llama-spm.gguf)")
	vocab := fs.Int("vocab", 512, "size of a plain vocabulary (without --vocab-from)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *out == "" {
		return usageError("-o OUT.gguf is required (see greta help synth)")
	}
	if !(*weightStd > 0 && *weightStd <= 10) {
		return usageError("--weight-std %v: expected a number in (0, 10]", *weightStd)
	}
	if fs.NArg() > 0 {
		return usageError("unexpected arguments %q", cut(strings.Join(fs.Args(), " "), 60))
	}
	o := llama.SynthOptions{Arch: *arch, Dim: *dim, Layers: *layers, Heads: *heads, KVHeads: *kvHeads, FFN: *ffn,
		Context: *ctx, RopeBase: *ropeBase, Vocab: *vocab, HeadDim: *headDim, RopeDim: *ropeDim,
		SlidingWindow: *window, SWAPattern: *swaPattern, RopeBaseSWA: *ropeBaseSWA, AttnSoftcap: *attnCap, FinalSoftcap: *finalCap, WeightStd: *weightStd}
	if *preset != "" {
		p, ok := llama.Presets[*preset]
		if !ok {
			return fmt.Errorf("unknown preset %q (expected one of %s)", *preset, strings.Join(presetNames, ", "))
		}
		// Flags given explicitly override the preset.
		set := func(name string, dst *int, v int) {
			if !fs.Changed(name) {
				*dst = v
			}
		}
		set("dim", &o.Dim, p.Dim)
		set("layers", &o.Layers, p.Layers)
		set("heads", &o.Heads, p.Heads)
		set("kv-heads", &o.KVHeads, p.KVHeads)
		set("ffn", &o.FFN, p.FFN)
		set("ctx", &o.Context, p.Context)
		set("vocab", &o.Vocab, p.Vocab)
		set("head-dim", &o.HeadDim, p.HeadDim)
		set("rope-dim", &o.RopeDim, p.RopeDim)
		set("sliding-window", &o.SlidingWindow, p.SlidingWindow)
		set("swa-pattern", &o.SWAPattern, p.SWAPattern)
		if !fs.Changed("rope-base") {
			o.RopeBase = p.RopeBase
		}
		if !fs.Changed("arch") {
			o.Arch = cmp.Or(p.Arch, "llama")
		}
		if !fs.Changed("attn-softcap") {
			o.AttnSoftcap = p.AttnSoftcap
		}
		if !fs.Changed("final-softcap") {
			o.FinalSoftcap = p.FinalSoftcap
		}
		if !fs.Changed("tied") {
			*tied = p.Tied
		}
		o.NormEps = p.NormEps
		o.Name = "greta-synth " + *preset + " " + *typ
	}
	o.Tied, o.Seed, o.Type = *tied, *seed, strings.ToLower(*typ)
	if *vocabFrom != "" {
		vf, err := gguf.Open(*vocabFrom)
		if err != nil {
			return err
		}
		defer vf.Close()
		o.VocabFrom = vf
	}
	start := time.Now()
	if err := writeFileAtomic(*out, func(w io.Writer) error { return llama.Synthesize(w, o) }); err != nil {
		return err
	}
	st, _ := os.Stat(*out)
	fmt.Fprintf(os.Stderr, "wrote %s (%s) in %.1fs\n", *out, humanBytes(st.Size()), time.Since(start).Seconds())
	return nil
}
