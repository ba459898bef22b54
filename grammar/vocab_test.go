package grammar

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"greta/gguf"
	"greta/tokenizer"
)

var seed = flag.Uint64("grammar.seed", 13, "seed of TestRandomModel's runs")

var vocabs sync.Map // file name -> *Vocab

// sharedVocab loads ../shared/vocab/NAME (skipping when absent).
func sharedVocab(tb testing.TB, name string) *Vocab {
	tb.Helper()
	if v, ok := vocabs.Load(name); ok {
		return v.(*Vocab)
	}
	path := filepath.Join("..", "..", "shared", "vocab", name)
	if _, err := os.Stat(path); err != nil {
		tb.Skipf("%s absent (the shared fixtures are not here): %v", path, err)
	}
	f, err := gguf.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	tok, err := tokenizer.FromGGUF(f)
	if err != nil {
		tb.Fatal(err)
	}
	v := FromTokenizer(tok)
	vocabs.Store(name, v)
	return v
}

const (
	spmVocab = "ggml-vocab-llama-spm.gguf"
	bpeVocab = "ggml-vocab-llama-bpe.gguf"
)

// testSchemas are varied schemas, as applications send them.
var testSchemas = []string{
	// 0: a flat record, OpenAI strict style
	`{"type":"object","properties":{"name":{"type":"string","maxLength":40},"age":{"type":"integer"},"email":{"type":"string"}},
	  "required":["name","age","email"],"additionalProperties":false}`,
	// 1: optional properties, bools, null, numbers
	`{"type":"object","properties":{"ok":{"type":"boolean"},"score":{"type":"number"},"note":{"type":["string","null"],"maxLength":30},
	  "n":{"type":"integer"}},"required":["ok"]}`,
	// 2: enum and const
	`{"type":"object","properties":{"color":{"enum":["red","green","blue"]},"version":{"const":2},"mode":{"type":"string","enum":["a","ab","abc"]}},
	  "required":["color","version","mode"],"additionalProperties":false}`,
	// 3: arrays with bounds, nested objects
	`{"type":"object","properties":{"items":{"type":"array","minItems":1,"maxItems":4,
	  "items":{"type":"object","properties":{"sku":{"type":"string","minLength":3,"maxLength":8},"qty":{"type":"integer"}},"required":["sku","qty"]}}},
	  "required":["items"]}`,
	// 4: anyOf of objects sharing a key (two alternatives alive at once)
	`{"anyOf":[{"type":"object","properties":{"kind":{"const":"circle"},"r":{"type":"number"}},"required":["kind","r"],"additionalProperties":false},
	  {"type":"object","properties":{"kind":{"const":"rect"},"w":{"type":"number"},"h":{"type":"number"}},"required":["kind","w","h"],"additionalProperties":false}]}`,
	// 5: $defs and $ref, arrays of strings
	`{"$defs":{"Person":{"type":"object","properties":{"first":{"type":"string","maxLength":20},"last":{"type":"string","maxLength":20}},"required":["first","last"]}},
	  "type":"object","properties":{"people":{"type":"array","items":{"$ref":"#/$defs/Person"},"maxItems":3},"tags":{"type":"array","items":{"type":"string","maxLength":10},"maxItems":5}},
	  "required":["people","tags"]}`,
	// 6: free-form object values and free-form maps
	`{"type":"object","properties":{"meta":{"type":"object"},"counts":{"type":"object","additionalProperties":{"type":"integer"}}},"required":["meta","counts"]}`,
	// 7: nested anyOf, arrays of mixed values
	`{"type":"array","maxItems":6,"items":{"anyOf":[{"type":"integer"},{"anyOf":[{"type":"string","maxLength":5},{"type":"null"},{"type":"array","items":{"type":"boolean"},"maxItems":3}]}]}}`,
	// 8: strings with minimum lengths, deep nesting
	`{"type":"object","properties":{"a":{"type":"object","properties":{"b":{"type":"object","properties":{"c":{"type":"string","minLength":5,"maxLength":12}},"required":["c"]}},"required":["b"]}},"required":["a"]}`,
	// 9: a tool call (pydantic style: titles, descriptions, Optional as anyOf with null)
	`{"title":"Call","type":"object","properties":{"tool":{"title":"Tool","description":"which tool","type":"string","enum":["search","calc"]},
	  "args":{"title":"Args","type":"object","properties":{"query":{"anyOf":[{"type":"string","maxLength":50},{"type":"null"}],"default":null},
	  "limit":{"type":"integer"}},"required":["query"]}},"required":["tool","args"]}`,
}

// maxSteps bounds every random run. The free-form schema (6) is the
// longest: up to 3,847 tokens over seeds 1 to 3 and 13.
const maxSteps = 8000

// generate drives c as a random-weight model would: with independent
// random logits, the argmax of the masked row is a token drawn uniformly
// from those allowed, which is what it picks (cheaper than making up
// 128,256 logits a step). It returns the output and the number of tokens.
func generate(tb testing.TB, c *Constraint, v *Vocab, rng *rand.Rand, logits []float32) ([]byte, int) {
	tb.Helper()
	var out []byte
	var allowed []int32
	for step := 0; ; step++ {
		if c.Done() {
			return out, step
		}
		if step == maxSteps {
			tb.Fatalf("no end after %d tokens: %.200q...", maxSteps, out)
		}
		clear(logits)
		c.Mask(logits)
		allowed = allowed[:0]
		for i, l := range logits {
			if l == 0 {
				allowed = append(allowed, int32(i))
			}
		}
		if len(allowed) == 0 {
			tb.Fatalf("every token masked after %q", out)
		}
		id := allowed[rng.IntN(len(allowed))]
		if err := c.Accept(id); err != nil {
			tb.Fatalf("after %q: %v", out, err)
		}
		if c.finished { // an EOG token
			return out, step + 1
		}
		out = append(out, v.pieces[id]...)
	}
}

func compileValidator(tb testing.TB, schema string) *jsonschema.Schema {
	tb.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader([]byte(schema)))
	if err != nil {
		tb.Fatal(err)
	}
	comp := jsonschema.NewCompiler()
	if err := comp.AddResource("schema.json", doc); err != nil {
		tb.Fatal(err)
	}
	sch, err := comp.Compile("schema.json")
	if err != nil {
		tb.Fatal(err)
	}
	return sch
}

// TestRandomModel is issue 13's check: 200 requests over the 10 schemas on
// each vocabulary, tokens chosen at random among those allowed; every
// output must parse and validate, and end within maxSteps.
func TestRandomModel(t *testing.T) {
	requests := 200
	if testing.Short() {
		requests = 40
	}
	for _, name := range []string{spmVocab, bpeVocab} {
		t.Run(name, func(t *testing.T) {
			v := sharedVocab(t, name)
			grammars := make([]*Grammar, len(testSchemas))
			validators := make([]*jsonschema.Schema, len(testSchemas))
			for i, s := range testSchemas {
				grammars[i] = mustCompile(t, s, Options{MaxWhitespace: i % 3})
				validators[i] = compileValidator(t, s)
			}
			logits := make([]float32, v.NumTokens())
			total, longest := 0, 0
			for r := range requests {
				i := r % len(testSchemas)
				rng := rand.New(rand.NewPCG(uint64(r), *seed))
				out, n := generate(t, grammars[i].NewConstraint(v), v, rng, logits)
				total += n
				longest = max(longest, n)
				val, err := jsonschema.UnmarshalJSON(bytes.NewReader(out))
				if err != nil || !json.Valid(out) {
					t.Fatalf("schema %d, request %d: output does not parse (%v): %q", i, r, err, out)
				}
				if err := validators[i].Validate(val); err != nil {
					t.Fatalf("schema %d, request %d: %q does not validate: %v", i, r, out, err)
				}
				if r < len(testSchemas) && testing.Verbose() {
					t.Logf("schema %d: %d tokens: %.300q", i, n, out)
				}
			}
			t.Logf("%d requests, %d tokens, the longest %d", requests, total, longest)
		})
	}
}

// TestJSONObjectRandom drives the json_object grammar the same way, with
// tighter bounds than the defaults: with those a random model writes
// objects of thousands of tokens (finite, but long for a test).
func TestJSONObjectRandom(t *testing.T) {
	g, err := NewJSONObject(Options{MaxStringLength: 48, MaxItems: 6, MaxProperties: 6, MaxDepth: 4, MaxWhitespace: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{spmVocab, bpeVocab} {
		t.Run(name, func(t *testing.T) {
			v := sharedVocab(t, name)
			logits := make([]float32, v.NumTokens())
			for r := range 20 {
				rng := rand.New(rand.NewPCG(uint64(r), 7))
				out, _ := generate(t, g.NewConstraint(v), v, rng, logits)
				var m map[string]any
				if err := json.Unmarshal(out, &m); err != nil {
					t.Fatalf("request %d: %v: %q", r, err, out)
				}
			}
		})
	}
}

// TestMaskExact compares masks, cached and clamped, with feeding every
// token's bytes to the automaton, along random runs.
func TestMaskExact(t *testing.T) {
	for _, name := range []string{spmVocab, bpeVocab} {
		t.Run(name, func(t *testing.T) {
			v := sharedVocab(t, name)
			logits := make([]float32, v.NumTokens())
			checked := 0
			for r := range 2 * len(testSchemas) {
				i := r % len(testSchemas)
				g := mustCompile(t, testSchemas[i], Options{MaxWhitespace: r % 2, MaxStringLength: 16, MaxItems: 4})
				c := g.NewConstraint(v)
				rng := rand.New(rand.NewPCG(uint64(r), 99))
				for step := 0; !c.Done() && step < maxSteps; step++ {
					for k := range logits {
						logits[k] = 1
					}
					c.Mask(logits)
					if step%4 == 0 && (name == spmVocab || r%3 == 0) {
						for id := range int32(v.NumTokens()) {
							want := c.fits(id)
							if got := !math.IsInf(float64(logits[id]), -1); got != want {
								t.Fatalf("schema %d, step %d, token %d (%q): mask says %v, automaton %v", i, step, id, v.pieces[id], got, want)
							}
						}
						checked++
					}
					var allowed []int32
					for id, l := range logits {
						if l == 1 {
							allowed = append(allowed, int32(id))
						}
					}
					if len(allowed) == 0 {
						t.Fatalf("schema %d, step %d: nothing allowed", i, step)
					}
					if err := c.Accept(allowed[rng.IntN(len(allowed))]); err != nil {
						t.Fatal(err)
					}
				}
			}
			t.Logf("%d masks checked token by token", checked)
		})
	}
}

// fits reports whether id may come next, by feeding its bytes.
func (c *Constraint) fits(id int32) bool {
	p := c.v.pieces[id]
	if p == nil {
		for _, e := range c.v.eog {
			if e == id {
				return c.CanEnd()
			}
		}
		return false
	}
	var a, b state
	a.copyFrom(&c.st)
	cur, nxt := &a, &b
	for _, x := range p {
		c.g.step(cur, x, nxt)
		if nxt.empty() {
			return false
		}
		cur, nxt = nxt, cur
	}
	return true
}

func TestVocabTrie(t *testing.T) {
	v := NewVocab([]string{"a", "ab", "", "b", "ab", "abc", "<eos>"}, []int32{6})
	var got []string
	for _, n := range v.nodes {
		for _, id := range v.toks[max(n.tok0, 0) : max(n.tok0, 0)+n.ntok] {
			got = append(got, fmt.Sprintf("%d:%d", n.depth, id))
		}
	}
	if fmt.Sprint(got) != "[1:0 2:1 2:4 3:5 1:3]" {
		t.Errorf("trie tokens %v", got)
	}
	if len(v.nodes) != 4 || v.nodes[0].end != 3 || v.nodes[3].end != 4 {
		t.Errorf("trie nodes %+v", v.nodes)
	}
}

// The engine's Constraint, restated to avoid importing engine.
var _ interface {
	Mask(logits []float32)
	Accept(id int32) error
	Done() bool
} = (*Constraint)(nil)

func TestFromTokenizer(t *testing.T) {
	v := sharedVocab(t, bpeVocab)
	// Llama-3: <|begin_of_text|> 128000 is control, <|eot_id|> 128009 ends
	// generation, "{" is 90, "\"" is 1.
	if v.pieces[128000] != nil || v.pieces[128009] != nil || !slices.Contains(v.eog, 128009) {
		t.Errorf("special tokens: 128000 %q, 128009 %q, eog %v", v.pieces[128000], v.pieces[128009], v.eog)
	}
	if string(v.pieces[90]) != "{" || string(v.pieces[1]) != "\"" {
		t.Errorf("pieces 90 %q, 1 %q", v.pieces[90], v.pieces[1])
	}
	s := sharedVocab(t, spmVocab)
	// Llama-2: <unk> 0, <s> 1 never; </s> 2 at the end; "▁" 29871 is a space;
	// <0x0A> 13 is a newline.
	if s.pieces[0] != nil || s.pieces[1] != nil || !slices.Contains(s.eog, 2) || string(s.pieces[29871]) != " " || string(s.pieces[13]) != "\n" {
		t.Errorf("spm pieces: %q %q %q %q, eog %v", s.pieces[0], s.pieces[1], s.pieces[29871], s.pieces[13], s.eog)
	}
	for _, x := range []*Vocab{s, v} {
		t.Logf("%d tokens: trie of %d nodes, longest piece %d bytes, count clamp %d, eog %v", x.NumTokens(), x.TrieNodes(), x.maxLen, x.clamp, x.eog)
	}
}

// TestConcurrent runs requests that share grammars and a vocabulary (and
// so their mask caches) from several goroutines; run it with -race.
func TestConcurrent(t *testing.T) {
	v := sharedVocab(t, spmVocab)
	gs := make([]*Grammar, len(testSchemas))
	for i, s := range testSchemas {
		gs[i] = mustCompile(t, s, Options{MaxStringLength: 32, MaxItems: 4})
	}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			logits := make([]float32, v.NumTokens())
			for r := range 10 {
				rng := rand.New(rand.NewPCG(uint64(w), uint64(r)))
				generate(t, gs[(w+r)%len(gs)].NewConstraint(v), v, rng, logits)
			}
		})
	}
	wg.Wait()
}
