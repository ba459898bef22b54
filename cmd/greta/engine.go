package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	flag "github.com/spf13/pflag"
	"golang.org/x/term"

	"greta/backend/cpu"
	"greta/backend/ref"
	eng "greta/engine"
	"greta/generate"
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
	e := addEngineFlagsNoThreads(fs, withTrace)
	e.threads = fs.IntP("threads", "t", 0, "CPU threads (0: all cores)")
	return e
}

// addEngineFlagsNoThreads leaves --threads to the caller (bench takes a
// list); it must set threads before load.
func addEngineFlagsNoThreads(fs *flag.FlagSet, withTrace bool) *engineFlags {
	zero := 0
	e := &engineFlags{
		model:   fs.StringP("model", "m", "", "GGUF model file (required)"),
		device:  fs.String("device", "auto", "cpu, cuda, ref (float64 oracle) or auto (cuda when present)"),
		threads: &zero,
		ctx:     fs.Int("ctx", 0, "context size in tokens (0: the model's, at most 4096)"),
		batch:   fs.Int("batch", 2048, "tokens per prefill batch (llama.cpp's n_batch default; on CUDA, products of 2048 prompt rows fill the GPU where 512 leave most SMs one block)"),
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

func (f *engineFlags) modelName() string { return filepath.Base(*f.model) }

// sizes returns the numeric engine flags as the validated type.
func (f *engineFlags) sizes() generate.Sizes {
	return generate.Sizes{Context: *f.ctx, Batch: *f.batch, Threads: *f.threads}
}

// engine is a loaded model with its tokenizer and backend.
type engine struct {
	file    *gguf.File
	model   *llama.Model
	tok     *tokenizer.Tokenizer
	backend ml.Backend
	tracer  *trace.Recorder
	sched   *eng.Engine // the engine requests run through, once started
	ctx     int
	loadDur time.Duration
}

// Close releases everything and returns the trace file's write error, if
// any: a trace that lost records is a failed run.
func (e *engine) Close() error {
	var err error
	if e.sched != nil {
		e.sched.Close() // before the backend it runs on
		e.sched = nil
	}
	if e.tracer != nil {
		err = e.tracer.Close()
		e.tracer = nil
	}
	if e.backend != nil {
		e.backend.Close()
		e.backend = nil
	}
	if e.file != nil {
		e.file.Close()
		e.file = nil
	}
	return err
}

// closeInto closes e and keeps its error in *errp unless one is there.
func (e *engine) closeInto(errp *error) {
	if err := e.Close(); err != nil && *errp == nil {
		*errp = err
	}
}

// threads is the number of CPU threads the backend runs (0 for others).
func (e *engine) threads() int {
	if c, ok := e.backend.(*cpu.Backend); ok {
		return c.Pool().Threads()
	}
	return 0
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
	return nil, usageError("unknown --device %q (expected cpu, cuda, ref or auto)", device)
}

// check validates the flags that need no model: sizes and trace settings.
func (f *engineFlags) check(fs *flag.FlagSet) error {
	if *f.model == "" {
		return usageError("--model is required")
	}
	if err := f.sizes().Validate(); err != nil {
		return err
	}
	if f.traceValues != nil && fs.Changed("trace-values") && *f.traceOut == "" && !traceEnvOn() {
		return usageError("--trace-values has no effect without a trace (--trace-out FILE or GRETA_TRACE_LAYER=1)")
	}
	if f.traceLayers != nil && (*f.traceLayers != "" || *f.tracePoints != "") && *f.traceOut == "" && !traceEnvOn() {
		return usageError("--trace-layers and --trace-points have no effect without a trace (--trace-out FILE or GRETA_TRACE_LAYER=1)")
	}
	return nil
}

func traceEnvOn() bool {
	on, err := strconv.ParseBool(strings.TrimSpace(os.Getenv("GRETA_TRACE_LAYER")))
	return on || (err != nil && os.Getenv("GRETA_TRACE_LAYER") != "")
}

// load opens, validates and loads the model, and sets up tracing. Call
// check first.
func (f *engineFlags) load() (*engine, error) {
	if *f.model == "" {
		return nil, usageError("--model is required")
	}
	if err := f.sizes().Validate(); err != nil {
		return nil, err
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
		warnf("%s", w)
	}
	e.ctx = *f.ctx
	if e.ctx <= 0 {
		e.ctx = min(cfg.ContextLength, 4096)
	} else if cfg.ContextLength > 0 && e.ctx > cfg.ContextLength {
		warnf("--ctx %d exceeds the %d tokens the model was trained on: past them its output degrades", e.ctx, cfg.ContextLength)
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

// warnf prints a warning line on stderr.
func warnf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "warning: "+format+"\n", args...)
}

func (f *engineFlags) setupTrace(e *engine) error {
	nl := e.model.Config.NLayers
	o, on, err := trace.OptionsFromEnv(nl)
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
		if o.Layers, err = trace.ParseLayers(*f.traceLayers, nl); err != nil {
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
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return usageError("--trace-values %q: expected a count or all", v)
			}
			o.Values = n
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

// version names this build in traces, benchmarks and --version.
const version = "greta 0.1"

// progressBar returns a load progress callback drawing on stderr, or nil
// when stderr is not a terminal.
func progressBar(label string) func(done, total int64) {
	if !stderrIsTerminal() {
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

func stderrIsTerminal() bool { return term.IsTerminal(int(os.Stderr.Fd())) }
