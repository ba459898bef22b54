package llama_test

import (
	"strings"
	"testing"

	"greta/gguf"
	"greta/internal/testmodels"
	"greta/model/llama"
	"greta/tokenizer"
)

// load opens and validates a model and its vocabulary the way every
// command that runs it does; with check, it also scans the weights.
func load(path string, check bool) error {
	f, err := gguf.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, errs := llama.Validate(f); len(errs) > 0 {
		return errs[0]
	}
	if _, err := tokenizer.FromGGUF(f); err != nil {
		return err
	}
	if check {
		if bad, _ := llama.CheckFinite(f, 0); len(bad) > 0 {
			return bad[0]
		}
	}
	return nil
}

func TestHostileCorpus(t *testing.T) {
	cases := testmodels.HostileCorpus(t, t.TempDir())
	if len(cases) < 20 {
		t.Fatalf("corpus has %d files, want at least 20", len(cases))
	}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			if c.Layer == testmodels.LayerWeights {
				if err := load(c.Path, false); err != nil {
					t.Fatalf("refused without the weight scan: %v", err)
				}
			}
			err := load(c.Path, true)
			if err == nil {
				t.Fatalf("accepted; want an error containing %q", c.WantErr)
			}
			if !strings.Contains(err.Error(), c.WantErr) {
				t.Fatalf("error %q does not contain %q", err, c.WantErr)
			}
			if strings.Contains(err.Error(), "\n") || len(err.Error()) > 512 {
				t.Fatalf("error spans lines or is long: %.600q", err)
			}
		})
	}
}

func TestSharedModelsValid(t *testing.T) {
	dir := testmodels.SharedDir(t, 2)
	for _, name := range []string{"stories260K.gguf", "stories260K-Q8_0.gguf", "syn-spm-Q4_0.gguf", "syn-spm-Q4_K_M.gguf", "syn-spm-Q5_K_M.gguf", "syn-spm-Q8_0.gguf", "syn-bpe-Q4_K_M.gguf"} {
		f, err := gguf.Open(dir + "/models/" + name)
		if err != nil {
			t.Fatal(err)
		}
		c, errs := llama.Validate(f)
		if len(errs) > 0 {
			t.Errorf("%s: %v", name, errs)
		}
		// The config must equal the metadata, key by key.
		k := func(s string) int64 { v, _, _ := f.Int("llama." + s); return v }
		if int64(c.Dim) != k("embedding_length") || int64(c.NLayers) != k("block_count") || int64(c.HiddenDim) != k("feed_forward_length") ||
			int64(c.NHeads) != k("attention.head_count") || int64(c.NKVHeads) != k("attention.head_count_kv") || int64(c.ContextLength) != k("context_length") {
			t.Errorf("%s: config %+v differs from metadata", name, c)
		}
		f.Close()
	}
}
