package tokenizer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"greta/gguf"
)

// sharedDir is the project's fixture folder, ../shared from the repo root.
const sharedDir = "../../shared"

// sharedPath returns the path of a file under shared/, skipping the test
// when it is absent (a fresh clone without fixtures).
func sharedPath(t testing.TB, rel string) string {
	t.Helper()
	// llama.cpp's phi-3 vocabulary (with its .inp/.out suite) lives in
	// testdata/vocab, since ../shared holds only the llama ones; the qwen2
	// one (5.9 MB) is too large to track, so its tests skip unless
	// ../shared/vocab has it.
	if p := filepath.Join("testdata", rel); fileExists(p) {
		return p
	}
	p := filepath.Join(sharedDir, rel)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("fixture %s not found (../shared is absent on a fresh clone): %v", rel, err)
	}
	return p
}

var (
	loadMu sync.Mutex
	loaded = map[string]*Tokenizer{}
)

// loadShared loads (once per test binary) the tokenizer of a shared GGUF.
func loadShared(t testing.TB, rel string) *Tokenizer {
	t.Helper()
	p := sharedPath(t, rel)
	loadMu.Lock()
	defer loadMu.Unlock()
	if tok, ok := loaded[p]; ok {
		return tok
	}
	f, err := gguf.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tok, err := FromGGUF(f)
	if err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
	loaded[p] = tok
	return tok
}

type vocabCase struct {
	text string
	want []int32
}

// readVocabCases parses llama.cpp's .inp/.out pair exactly as its
// test-tokenizer-0 does: the input is split on "\n__ggml_vocab_test__\n"
// (so a case keeps its inner newlines and the file's last separator leaves
// no empty case behind), and line i of .out holds case i's ids.
func readVocabCases(t *testing.T, base string) []vocabCase {
	t.Helper()
	inp, err := os.ReadFile(base + ".inp")
	if err != nil {
		t.Fatal(err)
	}
	outb, err := os.ReadFile(base + ".out")
	if err != nil {
		t.Fatal(err)
	}
	const sep = "\n__ggml_vocab_test__\n"
	raw := string(inp)
	var ins []string
	for pos := 0; pos < len(raw); {
		k := strings.Index(raw[pos:], sep)
		if k < 0 {
			ins = append(ins, raw[pos:])
			break
		}
		ins = append(ins, raw[pos:pos+k])
		pos += k + len(sep)
	}
	lines := strings.Split(strings.TrimSuffix(string(outb), "\n"), "\n")
	if len(ins) != len(lines) {
		t.Fatalf("%s: %d inputs but %d output lines", base, len(ins), len(lines))
	}
	cases := make([]vocabCase, len(ins))
	for i := range ins {
		var ids []int32
		for _, f := range strings.Fields(lines[i]) {
			v, err := strconv.Atoi(f)
			if err != nil {
				t.Fatalf("%s.out line %d: %v", base, i+1, err)
			}
			ids = append(ids, int32(v))
		}
		cases[i] = vocabCase{ins[i], ids}
	}
	return cases
}

// TestLlamaCppVocabSuites runs llama.cpp's own tokenizer test cases
// (made with add_special=false, parse_special=false) for both vocabularies.
func TestLlamaCppVocabSuites(t *testing.T) {
	for _, name := range []string{"ggml-vocab-llama-spm.gguf", "ggml-vocab-llama-bpe.gguf", "ggml-vocab-qwen2.gguf", "ggml-vocab-phi-3.gguf"} {
		t.Run(name, func(t *testing.T) {
			tok := loadShared(t, "vocab/"+name)
			cases := readVocabCases(t, sharedPath(t, "vocab/"+name))
			pass := 0
			for i, c := range cases {
				got := tok.Encode(c.text, false, false)
				if slices.Equal(got, c.want) {
					pass++
					continue
				}
				t.Errorf("case %d %q:\n got %v\nwant %v", i, c.text, got, c.want)
			}
			t.Logf("%s: %d/%d cases pass", name, pass, len(cases))
		})
	}
}

// TestReferencePrompts reproduces the prompt tokens of every llama.cpp
// reference run (BOS added, special tokens parsed).
func TestReferencePrompts(t *testing.T) {
	dir := sharedPath(t, "reference/llamacpp")
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no reference json in %s: %v", dir, err)
	}
	for _, fn := range files {
		var ref struct {
			Model        string  `json:"model"`
			Prompt       string  `json:"prompt"`
			PromptTokens []int32 `json:"prompt_tokens"`
		}
		b, err := os.ReadFile(fn)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &ref); err != nil {
			t.Fatalf("%s: %v", fn, err)
		}
		tok := loadShared(t, "models/"+ref.Model)
		got := tok.Encode(ref.Prompt, true, true)
		if !slices.Equal(got, ref.PromptTokens) {
			t.Errorf("%s (%s) %q:\n got %v\nwant %v", filepath.Base(fn), ref.Model, ref.Prompt, got, ref.PromptTokens)
		}
	}
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}
