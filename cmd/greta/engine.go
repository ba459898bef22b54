package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	flag "github.com/spf13/pflag"
	"golang.org/x/term"

	"greta/backend/ref"
	"greta/gguf"
	"greta/ml"
	"greta/model/llama"
	"greta/tokenizer"
	"greta/trace"
)

// engineFlags are the flags every command that runs a model shares.
type engineFlags struct {
	model   *string
	device  *string
	threads *int
	ctx     *int
	batch   *int
	int8    *bool
	act     *string
	cache   *string

	traceOut, traceLayers, tracePoints, traceValues *string
}

func addEngineFlags(fs *flag.FlagSet, withTrace bool) *engineFlags {
	e := &engineFlags{
		model:   fs.StringP("model", "m", "", "GGUF model file (required)"),
		device:  fs.String("device", "auto", "cpu, cuda, ref (float64 oracle) or auto (cuda when present)"),
		threads: fs.Int("threads", 0, "CPU threads (0: all cores)"),
		ctx:     fs.Int("ctx", 0, "context size in tokens (0: the model's, at most 4096)"),
		batch:   fs.Int("batch", 512, "tokens per prefill batch"),
		int8:    fs.Bool("int8", false, "INT8 mode: quantize F32/F16/BF16 weight matrices to Q8_0 at load"),
		act:     fs.String("act", "auto", "CPU activations into quantized matmuls: auto (8-bit for prefill batches, exact-ish for decode), f32, q8, q15"),
		cache:   fs.String("cache-type", "", "CUDA KV cache values: f16 (default) or f32 (twice the memory; for alignment with the oracle). The CPU backend holds f32"),
	}
	if withTrace {
		e.traceOut = fs.String("trace-out", "", "write a LayerTrace JSONL file (also GRETA_TRACE_LAYER=1 GRETA_TRACE_LAYER_OUT=...)")
		e.traceLayers = fs.String("trace-layers", "", "layers to trace, e.g. 0,1,2,15,31 (default all)")
		e.tracePoints = fs.String("trace-points", "", "points to trace, e.g. x,q,k,v,attn_out (default all)")
		e.traceValues = fs.String("trace-values", "8", "values kept per token row: N or all")
	}
	return e
}

// engine is a loaded model with its tokenizer and backend.
type engine struct {
	file    *gguf.File
	model   *llama.Model
	tok     *tokenizer.Tokenizer
	backend ml.Backend
	tracer  *trace.Recorder
	ctx     int
	loadDur time.Duration
}

func (e *engine) Close() {
	if e.tracer != nil {
		e.tracer.Close()
	}
	if e.backend != nil {
		e.backend.Close()
	}
	if e.file != nil {
		e.file.Close()
	}
}

// newBackend opens the device asked for.
func newBackend(device string, threads int) (ml.Backend, error) {
	switch device {
	case "ref":
		return ref.New(), nil
	case "cpu":
		return newCPUBackend(threads), nil
	case "cuda":
		return newCUDABackend()
	case "auto", "":
		if b, err := newCUDABackend(); err == nil {
			return b, nil
		}
		return newCPUBackend(threads), nil
	}
	return nil, fmt.Errorf("unknown --device %q (expected cpu, cuda, ref or auto)", device)
}

// load opens, validates and loads the model, and sets up tracing.
func (f *engineFlags) load() (*engine, error) {
	if *f.model == "" {
		return nil, &exitError{code: 2, err: errors.New("--model is required")}
	}
	start := time.Now()
	e := &engine{}
	var err error
	if e.file, err = gguf.Open(*f.model); err != nil {
		return nil, err
	}
	cfg, errs := llama.Validate(e.file)
	if len(errs) > 0 {
		e.Close()
		return nil, fmt.Errorf("%s: %w", *f.model, errs[0])
	}
	if e.tok, err = tokenizer.FromGGUF(e.file); err != nil {
		e.Close()
		return nil, fmt.Errorf("%s: tokenizer: %w", *f.model, err)
	}
	for _, w := range e.tok.Warnings() {
		fmt.Fprintf(os.Stderr, "warning: %s\n", w)
	}
	e.ctx = *f.ctx
	if e.ctx <= 0 {
		e.ctx = min(cfg.ContextLength, 4096)
	}
	if e.backend, err = newBackend(*f.device, *f.threads); err != nil {
		e.Close()
		return nil, err
	}
	if err := setActivations(e.backend, *f.act); err != nil {
		e.Close()
		return nil, err
	}
	if err := setCacheType(e.backend, *f.cache); err != nil {
		e.Close()
		return nil, err
	}
	progress := progressBar("loading " + e.backend.Name())
	e.model, err = llama.Load(e.file, e.backend, llama.LoadOptions{Int8: *f.int8, Progress: progress})
	if progress != nil {
		fmt.Fprint(os.Stderr, "\r\033[K")
	}
	if err != nil {
		e.Close()
		return nil, err
	}
	if err := f.setupTrace(e); err != nil {
		e.Close()
		return nil, err
	}
	e.loadDur = time.Since(start)
	return e, nil
}

func (f *engineFlags) setupTrace(e *engine) error {
	o, on, err := trace.OptionsFromEnv()
	if err != nil {
		return err
	}
	if f.traceOut != nil && *f.traceOut != "" {
		on = true
		o.Path = *f.traceOut
		if o.Values == 0 {
			o.Values = 8
		}
	}
	if !on {
		return nil
	}
	if f.traceLayers != nil && *f.traceLayers != "" {
		if o.Layers, err = trace.ParseLayers(*f.traceLayers); err != nil {
			return fmt.Errorf("--trace-layers: %w", err)
		}
	}
	if f.tracePoints != nil && *f.tracePoints != "" {
		if o.Points, err = trace.ParsePoints(*f.tracePoints); err != nil {
			return fmt.Errorf("--trace-points: %w", err)
		}
	}
	if f.traceValues != nil {
		switch v := strings.TrimSpace(*f.traceValues); v {
		case "all":
			o.Values = -1
		default:
			if _, err := fmt.Sscan(v, &o.Values); err != nil || o.Values < 0 {
				return fmt.Errorf("--trace-values %q: expected a count or all", v)
			}
		}
	}
	for l := range o.Layers {
		if l >= e.model.Config.NLayers {
			return fmt.Errorf("trace layer %d does not exist: the model has %d layers (0..%d)", l, e.model.Config.NLayers, e.model.Config.NLayers-1)
		}
	}
	r, err := trace.NewRecorder(o, e.backend, trace.Header{Model: *f.model, Config: e.model.Config, Version: version})
	if err != nil {
		return err
	}
	e.tracer = r
	e.model.Trace = r
	return nil
}

// version names this build in traces and benchmarks.
const version = "greta 0.1"

// progressBar returns a load progress callback drawing on stderr, or nil
// when stderr is not a terminal.
func progressBar(label string) func(done, total int64) {
	if !term.IsTerminal(int(os.Stderr.Fd())) {
		return nil
	}
	last := -1
	return func(done, total int64) {
		pct := int(100 * done / max(total, 1))
		if pct == last {
			return
		}
		last = pct
		const width = 30
		n := width * pct / 100
		fmt.Fprintf(os.Stderr, "\r%s [%s%s] %3d%% %s", label, strings.Repeat("=", n), strings.Repeat(" ", width-n), pct, humanBytes(done))
	}
}
