package main

import (
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"text/tabwriter"

	"greta/gguf"
	"greta/model/llama"
	"greta/tokenizer"
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

// inspectKV is one metadata entry as gguf-dump shows it.
type inspectKV struct {
	Key   string `json:"key"`
	Type  string `json:"type"`  // UINT32, STRING, [FLOAT32], ...
	Count int    `json:"count"` // 1, or an array's length
	Value string `json:"value"` // the value, arrays and long strings summarized
}

type inspectReport struct {
	File         string            `json:"file"`
	Version      uint32            `json:"version,omitempty"`
	Architecture string            `json:"architecture"`
	Config       *llama.Config     `json:"config"`
	Tokenizer    *inspectTokenizer `json:"tokenizer"`
	Metadata     []inspectKV       `json:"metadata,omitempty"`
	Tensors      []inspectTensor   `json:"tensors"`
	TensorBytes  int64             `json:"tensor_bytes"`
	FileBytes    int64             `json:"file_bytes"`
	// Checked: every tensor of a supported type was scanned for NaN and
	// Inf (--check); Unchecked names those of other types.
	Checked   bool     `json:"checked"`
	Unchecked []string `json:"unchecked,omitempty"`
	Valid     bool     `json:"valid"`
	Errors    []string `json:"errors"`
}

type inspectOptions struct {
	metadata bool // dump every metadata key
	check    bool // scan every tensor for non-finite values
}

func cmdInspect(args []string) error {
	fs := newFlags("inspect", "[-m] MODEL.gguf [--metadata] [--check] [--json]")
	model := fs.StringP("model", "m", "", "GGUF model file (or give it as the argument)")
	metadata := fs.Bool("metadata", false, "print every metadata key and value, as gguf-dump does (arrays and long strings summarized)")
	check := fs.Bool("check", false, "also dequantize every tensor and report those holding NaN or Inf (reads the whole file)")
	asJSON := fs.Bool("json", false, "print one JSON object")
	if err := fs.Parse(args); err != nil {
		return err
	}
	path := *model
	switch {
	case path == "" && fs.NArg() == 1:
		path = fs.Arg(0)
	case path != "" && fs.NArg() == 0:
	default:
		fs.Usage()
		return &exitError{code: 2, err: fmt.Errorf("expected one model file (-m MODEL or an argument), got %d", fs.NArg()+min(len(path), 1))}
	}
	rep := inspect(path, inspectOptions{metadata: *metadata, check: *check})
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		printInspect(stdout, rep)
	}
	if !rep.Valid {
		if *asJSON {
			return &exitError{code: 1}
		}
		return &exitError{code: 1, err: fmt.Errorf("%s", rep.Errors[0])}
	}
	return nil
}

func inspect(path string, o inspectOptions) *inspectReport {
	rep := &inspectReport{File: path, Errors: []string{}, Tensors: []inspectTensor{}}
	f, err := gguf.Open(path)
	if err != nil {
		rep.Errors = append(rep.Errors, err.Error())
		return rep
	}
	defer f.Close()
	rep.FileBytes = f.Size
	rep.Version = f.Version
	rep.Architecture, _, _ = f.String("general.architecture")
	for i := range f.Tensors {
		t := &f.Tensors[i]
		rep.Tensors = append(rep.Tensors, inspectTensor{t.Name, t.Type.String(), t.Shape, t.Size()})
		rep.TensorBytes += t.Size()
	}
	if o.metadata {
		rep.Metadata = dumpMetadata(f)
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
	// The vocabulary is checked as run and tokenize load it, so a file
	// that inspect calls valid also tokenizes.
	if _, has := f.Value("tokenizer.ggml.model"); has || cfg != nil {
		if _, err := tokenizer.FromGGUF(f); err != nil {
			rep.Errors = append(rep.Errors, "tokenizer: "+err.Error())
		}
	}
	// The scan reads every byte; a file already refused is not worth it
	// (and its declared tensors may be terabytes of holes).
	if o.check && len(rep.Errors) == 0 {
		bad, skipped := llama.CheckFinite(f, 0)
		for _, b := range bad {
			rep.Errors = append(rep.Errors, b.Error())
		}
		rep.Checked, rep.Unchecked = true, skipped
	}
	rep.Valid = len(rep.Errors) == 0
	return rep
}

// dumpMetadata lists the header fields and every key as gguf-dump does:
// strings past 60 characters cut, arrays shown by their first 5 strings
// (each cut to 30 characters) or 7 numbers.
func dumpMetadata(f *gguf.File) []inspectKV {
	kvs := []inspectKV{
		{"GGUF.version", "UINT32", 1, fmt.Sprint(f.Version)},
		{"GGUF.tensor_count", "UINT64", 1, fmt.Sprint(len(f.Tensors))},
		{"GGUF.kv_count", "UINT64", 1, fmt.Sprint(len(f.KV))},
	}
	for _, e := range f.KV {
		kv := inspectKV{Key: e.Key, Count: 1}
		switch v := e.Value.(type) {
		case gguf.Array:
			kv.Type = arrayType(v)
			kv.Count = v.Len()
			kv.Value = summarizeArray(v)
		case string:
			kv.Type = "STRING"
			kv.Value = pyRepr(cutRunes(v, 60, false))
		default:
			kv.Type = strings.ToUpper(fmt.Sprintf("%T", v))
			kv.Value = scalarString(v)
		}
		kvs = append(kvs, kv)
	}
	return kvs
}

// arrayType names an array's type as gguf-dump does: [INT32], or
// [[STRING]] for an array of string arrays.
func arrayType(a gguf.Array) string {
	nest := 1
	for a.Type == gguf.TypeArray {
		inner, ok := a.Data.([]gguf.Array)
		if !ok || len(inner) == 0 {
			break
		}
		a = inner[0]
		nest++
	}
	return strings.Repeat("[", nest) + strings.ToUpper(a.Type.String()) + strings.Repeat("]", nest)
}

func summarizeArray(a gguf.Array) string {
	var parts []string
	n := a.Len()
	switch d := a.Data.(type) {
	case []string:
		for _, s := range d[:min(5, n)] {
			parts = append(parts, pyRepr(cutRunes(s, 30, true)))
		}
	case []gguf.Array:
		for _, x := range d[:min(7, n)] {
			parts = append(parts, fmt.Sprintf("[%d %s]", x.Len(), x.Type))
		}
	default:
		rv := reflect.ValueOf(a.Data)
		for i := 0; i < min(7, n); i++ {
			parts = append(parts, scalarString(rv.Index(i).Interface()))
		}
	}
	if n > len(parts) {
		parts = append(parts, "...")
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// cutRunes shortens s to about max characters as gguf-dump does: the
// first max-3 and "..." (values), or the first and last max/2 around "..."
// (array elements).
func cutRunes(s string, max int, middle bool) string {
	r := []rune(s)
	if len(r) <= max {
		return s
	}
	if middle {
		return string(r[:max/2]) + "..." + string(r[len(r)-max/2:])
	}
	return string(r[:max-3]) + "..."
}

// pyRepr quotes s as Python's repr does for most strings: in single
// quotes, with control characters escaped.
func pyRepr(s string) string {
	q := strconv.Quote(s)
	if strings.Contains(s, "'") {
		return q
	}
	return "'" + strings.ReplaceAll(q[1:len(q)-1], `\"`, `"`) + "'"
}

func scalarString(v any) string {
	switch x := v.(type) {
	case bool:
		if x {
			return "True"
		}
		return "False"
	case float32:
		return strconv.FormatFloat(float64(x), 'g', -1, 32)
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	}
	return fmt.Sprint(v)
}

func printInspect(w io.Writer, r *inspectReport) {
	fmt.Fprintf(w, "file:          %s\n", r.File)
	// Every string below but the file's name comes from the file, and is
	// clipped: a 1 MiB tensor name must not give a 1 MiB line.
	if r.FileBytes == 0 {
		fmt.Fprintf(w, "verdict:       INVALID: %s\n", r.Errors[0])
		return
	}
	fmt.Fprintf(w, "architecture:  %s\n", clip(r.Architecture))
	if c := r.Config; c != nil {
		fmt.Fprintf(w, "config:        dim %d, hidden %d, layers %d, heads %d, kv heads %d, head dim %d\n",
			c.Dim, c.HiddenDim, c.NLayers, c.NHeads, c.NKVHeads, c.HeadDim)
		fmt.Fprintf(w, "               vocab %d, context %d, rope base %g (dims %d, scaling %s), rms eps %g, tied embeddings %v\n",
			c.VocabSize, c.ContextLength, c.RopeFreqBase, c.RopeDim, c.RopeScaling, c.NormEps, c.TiedEmbeddings)
		if f := familyLine(c); f != "" {
			fmt.Fprintf(w, "               %s\n", f)
		}
	}
	if t := r.Tokenizer; t != nil {
		fmt.Fprintf(w, "tokenizer:     model %q, pre %q, %d tokens, bos %s, eos %s\n", gguf.Clip(t.Model), gguf.Clip(t.Pre), t.NTokens, optInt(t.BOS), optInt(t.EOS))
	}
	if len(r.Metadata) > 0 {
		fmt.Fprintf(w, "metadata:      %d key/value pairs\n", len(r.Metadata))
		for i, kv := range r.Metadata {
			fmt.Fprintf(w, "  %5d: %-10s | %8d | %s = %s\n", i+1, kv.Type, kv.Count, clip(kv.Key), kv.Value)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "tensors:       %d\n\n", len(r.Tensors))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  NAME\tTYPE\tSHAPE\tBYTES")
	for _, t := range r.Tensors {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", clip(t.Name), t.Type, shapeString(t.Shape), humanBytes(t.Bytes))
	}
	tw.Flush()
	fmt.Fprintf(w, "\ntensor data:   %s (%d bytes); file %s\n", humanBytes(r.TensorBytes), r.TensorBytes, humanBytes(r.FileBytes))
	if r.Checked {
		fmt.Fprintf(w, "weights:       every tensor scanned for NaN and Inf")
		if len(r.Unchecked) > 0 {
			fmt.Fprintf(w, " (%d of types GRETA cannot decode not scanned)", len(r.Unchecked))
		}
		fmt.Fprintln(w)
	}
	if r.Valid {
		fmt.Fprintf(w, "verdict:       valid\n")
	} else {
		fmt.Fprintf(w, "verdict:       INVALID (%d problems)\n", len(r.Errors))
		for _, e := range r.Errors {
			fmt.Fprintf(w, "  - %s\n", e)
		}
	}
}

// clip cuts a file-supplied name for the text report (the JSON keeps it).
func clip(s string) string { return fmt.Sprintf("%s", gguf.Clip(s)) }

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

// familyLine says what the config's family adds to llama ("" for none).
func familyLine(c *llama.Config) string {
	var parts []string
	if c.RopeNeox {
		parts = append(parts, "NEOX rope")
	}
	if c.SlidingWindow > 0 {
		n := c.NLayers
		if c.SWALayers != nil {
			n = 0
			for _, w := range c.SWALayers {
				if w {
					n++
				}
			}
		}
		parts = append(parts, fmt.Sprintf("sliding window %d on %d of %d layers", c.SlidingWindow, n, c.NLayers))
		if c.RopeFreqBaseSWA > 0 {
			parts = append(parts, fmt.Sprintf("their rope base %g", c.RopeFreqBaseSWA))
		}
	}
	if c.AttnSoftcap > 0 {
		parts = append(parts, fmt.Sprintf("attention softcap %g", c.AttnSoftcap))
	}
	if c.FinalSoftcap > 0 {
		parts = append(parts, fmt.Sprintf("final softcap %g", c.FinalSoftcap))
	}
	if c.AttnScale > 0 {
		parts = append(parts, fmt.Sprintf("attention scale %.4g", c.AttnScale))
	}
	if c.EmbedScale > 0 {
		parts = append(parts, fmt.Sprintf("embeddings ×%.4g", c.EmbedScale))
	}
	if c.FusedQKV {
		parts = append(parts, "fused qkv")
	}
	return strings.Join(parts, ", ")
}
