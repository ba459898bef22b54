package testmodels

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"greta/gguf"
	"greta/model/llama"
)

// Hostile is one corrupt or nonsensical model file and a fragment of the
// error it must produce.
type Hostile struct {
	Name    string
	Path    string
	WantErr string
	// Layer is the first check that refuses the file, so a test knows
	// which commands must fail on it: "file" (gguf.Open: every command),
	// "model" (llama.Validate: run, inspect), "vocab" (tokenizer.FromGGUF:
	// run, tokenize, inspect) or "weights" (llama.CheckFinite: inspect
	// --check; the file is otherwise valid).
	Layer string
}

// Layers a Hostile can name.
const (
	LayerFile    = "file"
	LayerModel   = "model"
	LayerVocab   = "vocab"
	LayerWeights = "weights"
)

// raw builds GGUF bytes by hand, with any values, valid or not.
type raw struct{ bytes.Buffer }

func (r *raw) u32(v uint32) *raw { binary.Write(&r.Buffer, binary.LittleEndian, v); return r }
func (r *raw) u64(v uint64) *raw { binary.Write(&r.Buffer, binary.LittleEndian, v); return r }
func (r *raw) str(s string) *raw { r.u64(uint64(len(s))); r.WriteString(s); return r }
func header(version uint32, nTensors, nKV uint64) *raw {
	r := &raw{}
	r.WriteString("GGUF")
	return r.u32(version).u64(nTensors).u64(nKV)
}

// HostileCorpus writes the corpus into dir.
func HostileCorpus(t testing.TB, dir string) []Hostile {
	t.Helper()
	var cases []Hostile
	layer := LayerFile
	add := func(name, want string, data []byte) {
		p := filepath.Join(dir, name+".gguf")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		cases = append(cases, Hostile{name, p, want, layer})
	}

	base := synthBytes(t, Tiny)

	add("empty", "too short", nil)
	add("wrong-magic", "not a GGUF file", append([]byte("GGML"), base[4:]...))
	add("version-1", "version 1 is not supported", patchU32(base, 4, 1))
	add("version-9", "unsupported GGUF version 9", patchU32(base, 4, 9))
	add("big-endian", "big-endian", patchU32(base, 4, 3<<24))
	add("tensor-count-2^62", "tensor count 4611686018427387904 is impossible", header(3, 1<<62, 0).Bytes())
	add("kv-count-2^62", "metadata count 4611686018427387904 is impossible", header(3, 0, 1<<62).Bytes())
	add("key-length-past-eof", "string length 1099511627776 runs past the end", append(header(3, 0, 1).u64(1<<40).Bytes(), make([]byte, 16)...))
	add("string-length-past-eof", "string length 1099511627776 runs past the end", header(3, 0, 1).str("general.name").u32(uint32(gguf.TypeString)).u64(1<<40).Bytes())
	add("array-count-huge", "array of 2305843009213693952 uint32 values", header(3, 0, 1).str("a").u32(uint32(gguf.TypeArray)).u32(uint32(gguf.TypeUint32)).u64(1<<61).Bytes())
	add("unknown-value-type", "unknown value type 99", header(3, 0, 1).str("a").u32(99).u64(0).Bytes())
	add("alignment-not-power-of-two", "expected a power of two", header(3, 0, 1).str("general.alignment").u32(uint32(gguf.TypeUint32)).u32(24).Bytes())

	q := "blk.0.attn_q.weight"
	add("tensor-offset-past-eof", "runs past the end of the file", patchTensor(t, base, q, "offset", 1<<40))
	add("misaligned-offset", "is not aligned to 32", patchTensor(t, base, q, "offset", 36))
	add("unknown-type-id", "unknown ggml type id 200", patchTensor(t, base, q, "type", 200))
	add("rank-5", "rank 5, expected 1..4", patchTensor(t, base, q, "rank", 5))
	add("zero-dimension", "dimension 0 is 0", patchTensor(t, base, q, "dim0", 0))
	add("duplicate-tensor", `tensor "blk.0.attn_q.weight" appears twice`, patchName(t, base, "blk.0.attn_k.weight", q))
	add("duplicate-key", `metadata key "llama.context_length" appears twice`, patchName(t, base, "llama.rope.freq_base", "llama.context_length"))
	add("truncated-data", "runs past the end of the file", base[:len(base)-100])
	add("truncated-header", "truncated", base[:200])

	// Tensor data that aliases other tensor data, or whose byte count
	// overflows: each used to pass as valid.
	add("all-offsets-zero", "overlaps tensor", allOffsetsZero(t, base))
	add("attn_k-on-attn_q", `tensor "blk.0.attn_k.weight": data [154112, 162304) overlaps tensor "blk.0.attn_q.weight" at [154112, 170496)`,
		patchTensor(t, base, "blk.0.attn_k.weight", "offset", tensorOffset(t, base, q)))
	add("tensor-bytes-2^64", "overflow a 64-bit byte count", oneTensor("huge", []uint64{1 << 31, 1 << 31}, gguf.F32))
	add("tensor-bytes-past-eof", "runs past the end of the file", oneTensor("big", []uint64{1 << 20, 1 << 20}, gguf.F16))
	add("name-1MiB-rank-9", "(1048576 bytes): rank 9", header(3, 1, 0).str(strings.Repeat("n", 1<<20)).u32(9).Bytes())

	// Paths that are no regular file: a FIFO blocked every command forever.
	fifo := filepath.Join(dir, "fifo.gguf")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	cases = append(cases, Hostile{"fifo", fifo, "is a FIFO (named pipe), not a GGUF file", LayerFile})
	sub := filepath.Join(dir, "directory.gguf")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	cases = append(cases, Hostile{"directory", sub, "is a directory, not a GGUF file", LayerFile})
	cases = append(cases, Hostile{"char-device", "/dev/zero", "is a character device, not a GGUF file", LayerFile})

	// Model-level cases: well-formed files that describe no sensible llama.
	layer = LayerModel
	add("tensor-name-1MiB", "(1048576 bytes) (F32 [64]) is not part of the llama architecture", rebuild(t, base, nil, func(ti []gguf.TensorInfo) []gguf.TensorInfo {
		return append(ti, gguf.TensorInfo{Name: strings.Repeat("x", 1<<20), Shape: []int64{64}, Type: gguf.F32})
	}))
	add("architecture-1MiB", "(1048576 bytes): unsupported architecture", rebuild(t, base, map[string]any{"general.architecture": strings.Repeat("a", 1<<20)}, nil))
	add("missing-tensor", `tensor "blk.1.ffn_up.weight" is missing`, rebuild(t, base, nil, func(ti []gguf.TensorInfo) []gguf.TensorInfo {
		var out []gguf.TensorInfo
		for _, x := range ti {
			if x.Name != "blk.1.ffn_up.weight" {
				out = append(out, x)
			}
		}
		return out
	}))
	add("heads-not-dividing-dim", `head_count" = 5 does not divide`, rebuild(t, base, map[string]any{"llama.attention.head_count": uint32(5)}, nil))
	add("kv-heads-not-dividing-heads", `head_count_kv" = 3 does not divide`, rebuild(t, base, map[string]any{"llama.attention.head_count_kv": uint32(3)}, nil))
	add("unknown-architecture", `unsupported architecture`, rebuild(t, base, map[string]any{"general.architecture": "mamba"}, nil))
	add("missing-block-count", `"llama.block_count" is missing`, rebuild(t, base, map[string]any{"llama.block_count": nil}, nil))
	add("mixture-of-experts", "mixture-of-experts", rebuild(t, base, map[string]any{"llama.expert_count": uint32(8)}, nil))
	add("wrong-kv-shape", `tensor "blk.0.attn_k.weight": shape [64 32], expected [64 64]`, rebuild(t, base, map[string]any{"llama.attention.head_count_kv": uint32(4)}, nil))
	add("unsupported-type", "type Q2_K is not supported", retype(t, "blk.0.ffn_gate.weight", gguf.Q2_K))

	// The reports' exact case: TinyLlama metadata over Llama-2-7B-shaped
	// tensors. The data section is sparse, so the file costs no disk.
	add("tinyllama-meta-llama2-7b-tensors", `tensor "token_embd.weight": shape [4096 32000], expected [2048 32000]`, nil)
	writeTinyOver7B(t, cases[len(cases)-1].Path)

	// Vocabularies that cannot encode their own input, or whose merges are
	// malformed: each tokenized some text as nothing, or as the wrong ids.
	layer = LayerVocab
	words := []string{"Once", "Ġupon", "Ġa", "Ġtime"}
	add("gpt2-without-byte-tokens", `gpt2 vocabulary lacks the byte-level token "Ā" for byte 0x00`, rebuild(t, base, gpt2Vocab(t, base, false, words, nil), nil))
	add("gpt2-merge-without-space", `tokenizer.ggml.merges[1] = "Once": expected "LEFT RIGHT"`, rebuild(t, base, gpt2Vocab(t, base, true, append(words, "On"), []string{"O n", "Once"}), nil))
	add("gpt2-merge-empty", `tokenizer.ggml.merges[0] = "": expected "LEFT RIGHT"`, rebuild(t, base, gpt2Vocab(t, base, true, words, []string{""}), nil))
	add("gpt2-merge-not-tokens", `"Ġup" is not a token of the vocabulary`, rebuild(t, base, gpt2Vocab(t, base, true, words, []string{"Ġup on"}), nil))
	add("spm-no-byte-fallback-no-unk", "llama (SPM) vocabulary cannot encode every text", rebuild(t, base, spmWithoutFallback(t, base), nil))
	add("token-1MiB-duplicate", "(1048576 bytes) has ids", rebuild(t, base, duplicateLongToken(t, base), nil))

	// Non-finite weights: valid files whose every logit is NaN. Only the
	// weight scan (inspect --check) refuses them.
	layer = LayerWeights
	add("nan-output-norm", `tensor "output_norm.weight": 1 of 64 values are not finite (the first, at index 5, is NaN)`,
		patchData(t, base, "output_norm.weight", func(d []byte) { binary.LittleEndian.PutUint32(d[5*4:], 0x7FC00000) }))
	add("inf-token-embd", `tensor "token_embd.weight": 64 of 19200 values are not finite (the first, at index 640, is +Inf)`,
		patchData(t, base, "token_embd.weight", func(d []byte) {
			for i := 640; i < 704; i++ {
				binary.LittleEndian.PutUint32(d[4*i:], 0x7F800000)
			}
		}))
	q8 := Tiny
	q8.Type = "q8_0"
	add("q8_0-nan-scale", `tensor "blk.1.ffn_down.weight": 32 of 8192 values are not finite (the first, at index 64, is NaN)`,
		patchData(t, synthBytes(t, q8), "blk.1.ffn_down.weight", func(d []byte) { binary.LittleEndian.PutUint16(d[2*34:], 0x7E00) }))
	return cases
}

// oneTensor is a header with one tensor of the given shape and type at
// offset 0, and 128 bytes of data.
func oneTensor(name string, shape []uint64, typ gguf.Type) []byte {
	r := header(3, 1, 0).str(name).u32(uint32(len(shape)))
	for _, d := range shape {
		r.u64(d)
	}
	r.u32(uint32(typ)).u64(0)
	r.Write(make([]byte, 128+32))
	return r.Bytes()
}

// tensorOffset is the offset field of a tensor in a valid file.
func tensorOffset(t testing.TB, b []byte, name string) uint64 {
	f, err := gguf.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	ti, _ := f.Tensor(name)
	return ti.Offset
}

// allOffsetsZero puts every tensor of a valid file at offset 0.
func allOffsetsZero(t testing.TB, b []byte) []byte {
	f, err := gguf.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	c := append([]byte(nil), b...)
	for _, ti := range f.Tensors {
		// Each patch alone is a valid edit of b; copy its offset field.
		p := patchTensor(t, b, ti.Name, "offset", 0)
		for i := range p {
			if p[i] != b[i] {
				c[i] = 0
			}
		}
	}
	return c
}

// patchData edits one tensor's bytes in a copy of a valid file.
func patchData(t testing.TB, b []byte, name string, edit func([]byte)) []byte {
	c := append([]byte(nil), b...)
	f, err := gguf.Parse(c)
	if err != nil {
		t.Fatal(err)
	}
	ti, ok := f.Tensor(name)
	if !ok {
		t.Fatalf("patchData: no tensor %q", name)
	}
	edit(f.TensorData(ti))
	return c
}

// vocabOf returns a valid file's token list and types.
func vocabOf(t testing.TB, b []byte) ([]string, []int32) {
	f, err := gguf.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	tokens, _, err := f.Strings("tokenizer.ggml.tokens")
	if err != nil {
		t.Fatal(err)
	}
	types, _, err := f.Int32s("tokenizer.ggml.token_type")
	if err != nil {
		t.Fatal(err)
	}
	return append([]string(nil), tokens...), append([]int32(nil), types...)
}

// gpt2Vocab turns a valid file's vocabulary into a byte-level BPE one of
// the same size: BOS, the 256 byte-level characters (or not), the words,
// then filler tokens; with the given merges.
func gpt2Vocab(t testing.TB, b []byte, withBytes bool, words, merges []string) map[string]any {
	old, types := vocabOf(t, b)
	tokens := []string{"<|begin_of_text|>"}
	if withBytes {
		for c := 0; c < 256; c++ {
			tokens = append(tokens, gpt2ByteChar(byte(c)))
		}
	}
	tokens = append(tokens, words...)
	for i := len(tokens); len(tokens) < len(old); i++ {
		tokens = append(tokens, fmt.Sprintf("<|reserved_%d|>", i))
	}
	for i := range types {
		types[i] = 1
	}
	types[0] = 3
	if merges == nil {
		merges = []string{}
	}
	return map[string]any{
		"tokenizer.ggml.model":            "gpt2",
		"tokenizer.ggml.pre":              "llama-bpe",
		"tokenizer.ggml.tokens":           gguf.Array{Type: gguf.TypeString, Data: tokens},
		"tokenizer.ggml.token_type":       gguf.Array{Type: gguf.TypeInt32, Data: types},
		"tokenizer.ggml.merges":           gguf.Array{Type: gguf.TypeString, Data: merges},
		"tokenizer.ggml.scores":           nil,
		"tokenizer.ggml.bos_token_id":     uint32(0),
		"tokenizer.ggml.eos_token_id":     uint32(0),
		"tokenizer.ggml.unknown_token_id": nil,
	}
}

// gpt2ByteChar is GPT-2's bytes_to_unicode for one byte.
func gpt2ByteChar(c byte) string {
	n := 0
	for b := 0; b < 256; b++ {
		printable := (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)
		if b == int(c) {
			if printable {
				return string(rune(b))
			}
			return string(rune(256 + n))
		}
		if !printable {
			n++
		}
	}
	return ""
}

// spmWithoutFallback renames the <0xXX> byte tokens and makes <unk> an
// ordinary token, so no text outside the pieces can be encoded.
func spmWithoutFallback(t testing.TB, b []byte) map[string]any {
	tokens, types := vocabOf(t, b)
	for i, s := range tokens {
		if len(s) == 6 && strings.HasPrefix(s, "<0x") {
			tokens[i] = "byte" + s[3:5]
			types[i] = 1
		}
	}
	types[0] = 1
	return map[string]any{
		"tokenizer.ggml.tokens":     gguf.Array{Type: gguf.TypeString, Data: tokens},
		"tokenizer.ggml.token_type": gguf.Array{Type: gguf.TypeInt32, Data: types},
	}
}

// duplicateLongToken makes the last two tokens the same 1 MiB text.
func duplicateLongToken(t testing.TB, b []byte) map[string]any {
	tokens, _ := vocabOf(t, b)
	long := strings.Repeat("▁", 1<<20/3) + "x"
	tokens[len(tokens)-1], tokens[len(tokens)-2] = long, long
	return map[string]any{"tokenizer.ggml.tokens": gguf.Array{Type: gguf.TypeString, Data: tokens}}
}

func synthBytes(t testing.TB, o llama.SynthOptions) []byte {
	var buf bytes.Buffer
	if err := llama.Synthesize(&buf, o); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func patchU32(b []byte, off int, v uint32) []byte {
	c := append([]byte(nil), b...)
	binary.LittleEndian.PutUint32(c[off:], v)
	return c
}

// patchTensor rewrites one field of a tensor info in place.
func patchTensor(t testing.TB, b []byte, name, field string, v uint64) []byte {
	f, err := gguf.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	ti, _ := f.Tensor(name)
	needle := append(binary.LittleEndian.AppendUint64(nil, uint64(len(name))), name...)
	at := bytes.Index(b, needle) + len(needle)
	c := append([]byte(nil), b...)
	nd := len(ti.Shape)
	switch field {
	case "rank":
		binary.LittleEndian.PutUint32(c[at:], uint32(v))
	case "dim0":
		binary.LittleEndian.PutUint64(c[at+4:], v)
	case "type":
		binary.LittleEndian.PutUint32(c[at+4+8*nd:], uint32(v))
	case "offset":
		binary.LittleEndian.PutUint64(c[at+4+8*nd+4:], v)
	}
	return c
}

// patchName replaces the first occurrence of a length-prefixed string with
// another of the same length.
func patchName(t testing.TB, b []byte, from, to string) []byte {
	if len(from) != len(to) {
		panic(fmt.Sprintf("patchName: %q and %q differ in length", from, to))
	}
	needle := append(binary.LittleEndian.AppendUint64(nil, uint64(len(from))), from...)
	at := bytes.Index(b, needle)
	if at < 0 {
		t.Fatalf("patchName: %q not found", from)
	}
	c := append([]byte(nil), b...)
	copy(c[at+8:], to)
	return c
}

// rebuild rewrites a valid file with metadata changes (nil deletes a key)
// and an optional edit of its tensor list.
func rebuild(t testing.TB, b []byte, set map[string]any, edit func([]gguf.TensorInfo) []gguf.TensorInfo) []byte {
	f, err := gguf.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	var kv []gguf.KV
	seen := map[string]bool{}
	for _, e := range f.KV {
		if v, ok := set[e.Key]; ok {
			seen[e.Key] = true
			if v == nil {
				continue
			}
			e.Value = v
		}
		kv = append(kv, e)
	}
	for k, v := range set {
		if !seen[k] && v != nil {
			kv = append(kv, gguf.KV{Key: k, Value: v})
		}
	}
	tensors := f.Tensors
	if edit != nil {
		tensors = edit(tensors)
	}
	var out bytes.Buffer
	w, err := gguf.NewWriter(&out, 3, kv, tensors)
	if err != nil {
		t.Fatal(err)
	}
	for i, out := range w.Tensors() {
		data := make([]byte, out.Size()) // a tensor the edit added: zeros
		if ti, ok := f.Tensor(tensors[i].Name); ok {
			data = f.TensorData(ti)
		}
		if err := w.WriteTensor(data); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// retype writes Tiny with one tensor stored in another type (random bytes).
func retype(t testing.TB, name string, typ gguf.Type) []byte {
	o := Tiny
	o.Dim, o.FFN, o.Heads, o.KVHeads = 256, 256, 4, 2
	f, err := gguf.Parse(synthBytes(t, o))
	if err != nil {
		t.Fatal(err)
	}
	tensors := append([]gguf.TensorInfo(nil), f.Tensors...)
	for i := range tensors {
		if tensors[i].Name == name {
			tensors[i].Type = typ
		}
	}
	var out bytes.Buffer
	w, err := gguf.NewWriter(&out, 3, f.KV, tensors)
	if err != nil {
		t.Fatal(err)
	}
	for _, ti := range w.Tensors() {
		if err := w.WriteTensor(make([]byte, ti.Size())); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()
	return out.Bytes()
}

// writeTinyOver7B writes TinyLlama-1.1B metadata with Llama-2-7B-shaped F16
// tensors as a sparse file: the header is real, the data is a hole.
func writeTinyOver7B(t testing.TB, path string) {
	tiny := llama.Presets["tinyllama-1.1b"]
	big := llama.Presets["llama2-7b"]
	tiny.Type, big.Type = "f16", "f16"
	writeSparse(t, path, metadataOf(t, tiny), configOf(t, big), gguf.F16)
}

// Sparse writes a valid model of shape o whose matrices have type typ (norms
// F32) as a sparse file: the header is real, the data is a hole of zeros,
// so a model of any size costs no disk and loads without reading it.
func Sparse(t testing.TB, path string, o llama.SynthOptions, typ gguf.Type) {
	writeSparse(t, path, metadataOf(t, o), configOf(t, o), typ)
}

func writeSparse(t testing.TB, path string, kv []gguf.KV, c *llama.Config, typ gguf.Type) {
	var tensors []gguf.TensorInfo
	for _, s := range c.TensorSpecs() {
		if s.Name == "rope_freqs.weight" {
			continue
		}
		tt := typ
		if len(s.Shape) == 1 {
			tt = gguf.F32
		}
		tensors = append(tensors, gguf.TensorInfo{Name: s.Name, Shape: s.Shape, Type: tt})
	}
	fd, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	cw := &countWriter{w: fd}
	w, err := gguf.NewWriter(cw, 3, kv, tensors)
	if err != nil {
		t.Fatal(err)
	}
	// Flush the header only, then extend the file over the data it declares.
	w.Flush()
	end := cw.n
	for _, ti := range w.Tensors() {
		end = max(end, cw.n+int64(ti.Offset)+ti.Size())
	}
	if err := fd.Truncate(alignUp(end, 32)); err != nil {
		t.Fatal(err)
	}
}

type countWriter struct {
	w interface{ Write([]byte) (int, error) }
	n int64
}

func (c *countWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return n, err
}

func alignUp(n, a int64) int64 { return (n + a - 1) / a * a }

func metadataOf(t testing.TB, o llama.SynthOptions) []gguf.KV {
	b := synthHeader(t, o)
	return b.KV
}

func configOf(t testing.TB, o llama.SynthOptions) *llama.Config {
	c, err := llama.ConfigFromGGUF(synthHeader(t, o))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// synthHeader returns the metadata synth would write for o, without data.
func synthHeader(t testing.TB, o llama.SynthOptions) *gguf.File {
	kv, err := llama.SynthMetadata(o)
	if err != nil {
		t.Fatal(err)
	}
	f, err := gguf.FromMetadata(kv)
	if err != nil {
		t.Fatal(err)
	}
	return f
}
