package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"greta/gguf"
	"greta/model/llama"
)

func init() {
	register("inspect", "summarize a GGUF model and validate it", cmdInspect)
}

type inspectTokenizer struct {
	Model   string `json:"model"`
	Pre     string `json:"pre"`
	NTokens int    `json:"n_tokens"`
	BOS     *int64 `json:"bos"`
	EOS     *int64 `json:"eos"`
}

type inspectTensor struct {
	Name  string  `json:"name"`
	Type  string  `json:"type"`
	Shape []int64 `json:"shape"`
	Bytes int64   `json:"bytes"`
}

type inspectReport struct {
	File         string            `json:"file"`
	Architecture string            `json:"architecture"`
	Config       *llama.Config     `json:"config"`
	Tokenizer    *inspectTokenizer `json:"tokenizer"`
	Tensors      []inspectTensor   `json:"tensors"`
	TensorBytes  int64             `json:"tensor_bytes"`
	FileBytes    int64             `json:"file_bytes"`
	Valid        bool              `json:"valid"`
	Errors       []string          `json:"errors"`
}

func cmdInspect(args []string) error {
	fs := newFlags("inspect", "MODEL.gguf [--json]")
	asJSON := fs.Bool("json", false, "print one JSON object")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return &exitError{code: 2, err: fmt.Errorf("expected one model file, got %d arguments", fs.NArg())}
	}
	rep := inspect(fs.Arg(0))
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		printInspect(os.Stdout, rep)
	}
	if !rep.Valid {
		if *asJSON {
			return &exitError{code: 1}
		}
		return &exitError{code: 1, err: fmt.Errorf("%s", rep.Errors[0])}
	}
	return nil
}

func inspect(path string) *inspectReport {
	rep := &inspectReport{File: path, Errors: []string{}, Tensors: []inspectTensor{}}
	f, err := gguf.Open(path)
	if err != nil {
		rep.Errors = append(rep.Errors, err.Error())
		return rep
	}
	defer f.Close()
	rep.FileBytes = f.Size
	rep.Architecture, _, _ = f.String("general.architecture")
	for i := range f.Tensors {
		t := &f.Tensors[i]
		rep.Tensors = append(rep.Tensors, inspectTensor{t.Name, t.Type.String(), t.Shape, t.Size()})
		rep.TensorBytes += t.Size()
	}
	tk := &inspectTokenizer{}
	tk.Model, _, _ = f.String("tokenizer.ggml.model")
	tk.Pre, _, _ = f.String("tokenizer.ggml.pre")
	if a, ok, _ := f.Array("tokenizer.ggml.tokens"); ok {
		tk.NTokens = a.Len()
	}
	if v, ok, _ := f.Int("tokenizer.ggml.bos_token_id"); ok {
		tk.BOS = &v
	}
	if v, ok, _ := f.Int("tokenizer.ggml.eos_token_id"); ok {
		tk.EOS = &v
	}
	rep.Tokenizer = tk
	cfg, errs := llama.Validate(f)
	rep.Config = cfg
	for _, e := range errs {
		rep.Errors = append(rep.Errors, e.Error())
	}
	rep.Valid = len(errs) == 0
	return rep
}

func printInspect(w io.Writer, r *inspectReport) {
	fmt.Fprintf(w, "file:          %s\n", r.File)
	if r.FileBytes == 0 {
		fmt.Fprintf(w, "verdict:       INVALID: %s\n", r.Errors[0])
		return
	}
	fmt.Fprintf(w, "architecture:  %s\n", r.Architecture)
	if c := r.Config; c != nil {
		fmt.Fprintf(w, "config:        dim %d, hidden %d, layers %d, heads %d, kv heads %d, head dim %d\n",
			c.Dim, c.HiddenDim, c.NLayers, c.NHeads, c.NKVHeads, c.HeadDim)
		fmt.Fprintf(w, "               vocab %d, context %d, rope base %g (dims %d, scaling %s), rms eps %g, tied embeddings %v\n",
			c.VocabSize, c.ContextLength, c.RopeFreqBase, c.RopeDim, c.RopeScaling, c.NormEps, c.TiedEmbeddings)
	}
	if t := r.Tokenizer; t != nil {
		fmt.Fprintf(w, "tokenizer:     model %q, pre %q, %d tokens, bos %s, eos %s\n", t.Model, t.Pre, t.NTokens, optInt(t.BOS), optInt(t.EOS))
	}
	fmt.Fprintf(w, "tensors:       %d\n\n", len(r.Tensors))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  NAME\tTYPE\tSHAPE\tBYTES")
	for _, t := range r.Tensors {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", t.Name, t.Type, shapeString(t.Shape), humanBytes(t.Bytes))
	}
	tw.Flush()
	fmt.Fprintf(w, "\ntensor data:   %s (%d bytes); file %s\n", humanBytes(r.TensorBytes), r.TensorBytes, humanBytes(r.FileBytes))
	if r.Valid {
		fmt.Fprintf(w, "verdict:       valid\n")
	} else {
		fmt.Fprintf(w, "verdict:       INVALID (%d problems)\n", len(r.Errors))
		for _, e := range r.Errors {
			fmt.Fprintf(w, "  - %s\n", e)
		}
	}
}

func optInt(p *int64) string {
	if p == nil {
		return "none"
	}
	return fmt.Sprint(*p)
}

func shapeString(s []int64) string {
	parts := make([]string, len(s))
	for i, d := range s {
		parts[i] = fmt.Sprint(d)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
