package grammar_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"greta/backend/cpu"
	"greta/engine"
	"greta/gguf"
	"greta/grammar"
	"greta/model/llama"
	"greta/sample"
	"greta/tokenizer"
)

// TestEngineStructuredOutput is issue 13's json_schema check through the
// engine: requests over 10 schemas on a trained model (stories260K) and a
// few on random-weight models with the Llama-3 and Llama-2 vocabularies
// (TestRandomModel does many without the model's cost), sampled
// (seeded) and greedy, many at once; every output must end because the
// value is complete, parse, and validate.
func TestEngineStructuredOutput(t *testing.T) {
	schemas := grammar.SchemasForTest
	// Tight bounds: stories260K's context is 512 tokens and its tokens are
	// mostly single characters.
	opt := grammar.Options{MaxStringLength: 16, MaxItems: 3, MaxProperties: 3, MaxDepth: 3}
	for _, tc := range []struct {
		model    string
		requests int
	}{{"stories260K.gguf", 100}, {"syn-bpe-Q4_K_M.gguf", 5}, {"syn-spm-Q8_0.gguf", 5}} {
		t.Run(tc.model, func(t *testing.T) {
			if testing.Short() && tc.model != "stories260K.gguf" {
				t.Skip("short: the trained model only")
			}
			path := filepath.Join("..", "..", "shared", "models", tc.model)
			if _, err := os.Stat(path); err != nil {
				t.Skipf("%s absent (the shared fixtures are not here)", path)
			}
			f, err := gguf.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			b := cpu.New(0)
			defer b.Close()
			m, err := llama.Load(f, b, llama.LoadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			tok, err := tokenizer.FromGGUF(f)
			if err != nil {
				t.Fatal(err)
			}
			e, err := engine.New(m, tok, engine.Options{Parallel: 16, Context: 512})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			v := grammar.FromTokenizer(tok)
			gs := make([]*grammar.Grammar, len(schemas))
			vals := make([]*jsonschema.Schema, len(schemas))
			for i, s := range schemas {
				if gs[i], err = grammar.Compile([]byte(s), opt); err != nil {
					t.Fatal(err)
				}
				vals[i] = validator(t, s)
			}
			prompt := tok.Encode("Once upon a time, the answer in JSON was", true, false)
			var wg sync.WaitGroup
			for r := range tc.requests {
				wg.Go(func() {
					i := r % len(schemas)
					p := sample.Defaults()
					p.Temp, p.Seed = 1, uint64(r)
					p.Greedy = r%4 == 0
					res, err := e.Generate(context.Background(), engine.Request{
						Prompt: prompt, MaxTokens: -1, Sampling: p, Constraint: gs[i].NewConstraint(v),
					}, nil)
					if err != nil {
						t.Errorf("schema %d, request %d: %v", i, r, err)
						return
					}
					out := tok.Decode(res.Generated)
					if res.StopReason != engine.StopConstraint && res.StopReason != engine.StopEOS {
						t.Errorf("schema %d, request %d: stopped by %s after %d tokens: %q", i, r, res.StopReason, len(res.Generated), out)
						return
					}
					doc, err := jsonschema.UnmarshalJSON(bytes.NewReader([]byte(out)))
					if err != nil {
						t.Errorf("schema %d, request %d: %q does not parse: %v", i, r, out, err)
						return
					}
					if err := vals[i].Validate(doc); err != nil {
						t.Errorf("schema %d, request %d: %q does not validate: %v", i, r, out, err)
					}
					if r < len(schemas) && testing.Verbose() {
						t.Logf("schema %d (%s, %d tokens): %.200q", i, res.StopReason, len(res.Generated), out)
					}
				})
			}
			wg.Wait()
		})
	}
}

func validator(tb testing.TB, schema string) *jsonschema.Schema {
	tb.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader([]byte(schema)))
	if err != nil {
		tb.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("schema.json", doc); err != nil {
		tb.Fatal(err)
	}
	s, err := c.Compile("schema.json")
	if err != nil {
		tb.Fatal(err)
	}
	return s
}
