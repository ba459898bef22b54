package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// sharedModel returns a model from ../shared, skipping when it is absent.
func sharedModel(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join("..", "..", "..", "shared", "models", name)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("%s not found (../shared is absent on a fresh clone): %v", name, err)
	}
	return p
}

func tokenizeCLI(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := runTokenize(args, strings.NewReader(stdin), &out, &errb)
	return out.String(), errb.String(), err
}

func TestTokenizeCommand(t *testing.T) {
	st := sharedModel(t, "stories260K.gguf")
	for _, c := range []struct {
		stdin string
		args  []string
		want  string
	}{
		{"", []string{"-m", st, "Once upon a time"}, "1 403 407 261 378\n"},
		{"", []string{"Once upon a time", "--model", st, "--bos=false"}, "403 407 261 378\n"},
		{"Once upon a time", []string{"-m", st, "-"}, "1 403 407 261 378\n"},
		{"", []string{"-m", st, "--bos=false", ""}, "\n"},
	} {
		out, stderr, err := tokenizeCLI(t, c.stdin, c.args...)
		if err != nil || out != c.want || stderr != "" {
			t.Errorf("%q: got %q, %v (stderr %q); want %q", c.args, out, err, stderr, c.want)
		}
	}

	// - reads the exact bytes: a trailing newline is a token too.
	out, _, err := tokenizeCLI(t, "Once upon a time\n", "-m", st, "-")
	if err != nil || !strings.HasPrefix(out, "1 403 407 261 378 ") {
		t.Errorf("stdin with newline: %q, %v", out, err)
	}

	out, _, err = tokenizeCLI(t, "", "-m", st, "--json", "Once 🦙")
	if err != nil {
		t.Fatal(err)
	}
	var j struct {
		IDs    []int32  `json:"ids"`
		Pieces []string `json:"pieces"`
	}
	if err := json.Unmarshal([]byte(out), &j); err != nil {
		t.Fatalf("--json output %q: %v", out, err)
	}
	if len(j.IDs) != len(j.Pieces) || j.IDs[0] != 1 || j.Pieces[0] != "<s>" || j.Pieces[1] != " Once" ||
		!slices.Contains(j.Pieces, "<0xF0>") {
		t.Errorf("--json: %+v", j)
	}
}

func TestTokenizeSpecial(t *testing.T) {
	m := sharedModel(t, "syn-bpe-Q4_K_M.gguf")
	out, _, err := tokenizeCLI(t, "", "-m", m, "--special", "<|eot_id|>")
	if err != nil || out != "128000 128009\n" {
		t.Errorf("--special: %q, %v", out, err)
	}
	out, _, err = tokenizeCLI(t, "", "-m", m, "<|eot_id|>")
	if err != nil || strings.Contains(out, "128009") {
		t.Errorf("without --special the marker is text: %q, %v", out, err)
	}
}

func TestTokenizeUsageErrors(t *testing.T) {
	st := sharedModel(t, "stories260K.gguf")
	for _, args := range [][]string{{"hello"}, {"-m", st}, {"-m", st, "a", "b"}, {"-m", st, "--nope", "a"}} {
		_, _, err := tokenizeCLI(t, "", args...)
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != 2 {
			t.Errorf("%q: want a usage error (exit 2), got %v", args, err)
		}
	}
	_, _, err := tokenizeCLI(t, "", "-m", filepath.Join(t.TempDir(), "missing.gguf"), "a")
	if err == nil || strings.Contains(err.Error(), "\n") {
		t.Errorf("missing model: %v", err)
	}
}

func TestDisplayPiece(t *testing.T) {
	for in, want := range map[string]string{"abc": "abc", "\xf0": "<0xF0>", "a\xf0\x9fb": "a<0xF0><0x9F>b", " ▁": " ▁"} {
		if got := displayPiece(in); got != want {
			t.Errorf("displayPiece(%q) = %q, want %q", in, got, want)
		}
	}
}
