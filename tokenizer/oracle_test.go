package tokenizer

import (
	"cmp"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"greta/gguf"
)

// oracleFile holds texts with the ids llama.cpp gave them, for both shared
// vocabularies and both parse_special settings (add_special=false). The
// committed ones, testdata/llamacpp-golden*.json, were made by
// testdata/oracle/gen.mjs (the -pre-default one with the Llama 3
// vocabulary rewritten to the 'default' pre-tokenizer, the -stories260k
// one with stories260K's 512-token vocabulary as SPM); more can be made
// there and checked with
// GRETA_TOKENIZER_ORACLE=file1.json,file2.json go test -run TestLlamaCppOracle.
type oracleFile struct {
	Generator string `json:"generator"`
	// BPEPre, when set, means the BPE ids were made with the shared Llama 3
	// vocabulary rewritten to this tokenizer.ggml.pre.
	BPEPre string `json:"bpe_pre"`
	// SPMShared and BPEShared, when set, name the files under shared/
	// (or, starting with testdata/, this package's) that made the SPM and
	// BPE ids (default: vocab/ggml-vocab-llama-spm.gguf and
	// vocab/ggml-vocab-llama-bpe.gguf). A file may hold either kind.
	SPMShared string `json:"spm_shared"`
	BPEShared string `json:"bpe_shared"`
	Cases     []struct {
		Text       string  `json:"text"`
		SPM        []int32 `json:"spm"`
		SPMSpecial []int32 `json:"spm_special"`
		BPE        []int32 `json:"bpe"`
		BPESpecial []int32 `json:"bpe_special"`
	} `json:"cases"`
}

func TestLlamaCppOracle(t *testing.T) {
	files := []string{
		filepath.Join("testdata", "llamacpp-golden.json"),
		filepath.Join("testdata", "llamacpp-golden-pre-default.json"),
		filepath.Join("testdata", "llamacpp-golden-stories260k.json"),
		filepath.Join("testdata", "llamacpp-golden-pre-qwen2.json"),
		filepath.Join("testdata", "llamacpp-golden-gemma-synth.json"),
		filepath.Join("testdata", "llamacpp-golden-qwen2-phi3.json"), // needs vocab/ggml-vocab-{qwen2,phi-3}.gguf
	}
	if env := os.Getenv("GRETA_TOKENIZER_ORACLE"); env != "" {
		files = strings.Split(env, ",")
	}
	for _, fn := range files {
		t.Run(filepath.Base(fn), func(t *testing.T) { checkOracleFile(t, fn) })
	}
}

// checkOracleFile checks one oracle file; it skips when a vocabulary it
// names is not under shared/.
func checkOracleFile(t *testing.T, fn string) {
	b, err := os.ReadFile(fn)
	if err != nil {
		t.Fatal(err)
	}
	var of oracleFile
	if err := json.Unmarshal(b, &of); err != nil {
		t.Fatalf("%s: %v", fn, err)
	}
	if len(of.Cases) == 0 {
		t.Fatalf("%s: no cases", fn)
	}
	var spm, bpe *Tokenizer
	if of.Cases[0].SPM != nil {
		spm = loadVocab(t, cmp.Or(of.SPMShared, "vocab/ggml-vocab-llama-spm.gguf"))
	}
	if of.Cases[0].BPE != nil {
		switch {
		case of.BPEPre != "":
			bpe = withMetadata(t, "vocab/ggml-vocab-llama-bpe.gguf", map[string]any{"tokenizer.ggml.pre": of.BPEPre})
		default:
			bpe = loadVocab(t, cmp.Or(of.BPEShared, "vocab/ggml-vocab-llama-bpe.gguf"))
		}
	}
	fails, total := 0, 0
	check := func(name string, tok *Tokenizer, text string, special bool, want []int32) {
		if tok == nil {
			return // the file has no ids of this kind
		}
		total++
		got := tok.Encode(text, false, special)
		if slices.Equal(got, want) {
			return
		}
		fails++
		if fails <= 20 {
			k := 0
			for k < len(got) && k < len(want) && got[k] == want[k] {
				k++
			}
			t.Errorf("%s special=%v %.200q: first difference at id %d: got %v, want %v",
				name, special, text, k, got[k:min(k+6, len(got))], want[k:min(k+6, len(want))])
		}
	}
	for _, c := range of.Cases {
		check("spm", spm, c.Text, false, c.SPM)
		check("spm", spm, c.Text, true, c.SPMSpecial)
		check("bpe", bpe, c.Text, false, c.BPE)
		check("bpe", bpe, c.Text, true, c.BPESpecial)
	}
	t.Logf("%s (%s): %d/%d encodings match llama.cpp", fn, of.Generator, total-fails, total)
}

// loadVocab loads a vocabulary under shared/, or one of this package's
// testdata/.
func loadVocab(t *testing.T, rel string) *Tokenizer {
	t.Helper()
	if !strings.HasPrefix(rel, "testdata/") {
		return loadShared(t, rel)
	}
	f, err := gguf.Open(rel)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tok, err := FromGGUF(f)
	if err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
	return tok
}
