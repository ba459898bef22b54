package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"greta/internal/testmodels"
)

// gretaBin is the CLI built once for the tests that run it as users do.
var gretaBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "greta-cli")
	if err != nil {
		panic(err)
	}
	gretaBin = filepath.Join(dir, "greta")
	build := exec.Command("go", "build", "-o", gretaBin, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		panic("building greta: " + err.Error())
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// greta runs the CLI and returns stdout, stderr and the exit code.
func greta(t *testing.T, stdin []byte, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(gretaBin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

func TestInspectHostileFilesOneLine(t *testing.T) {
	for _, c := range testmodels.HostileCorpus(t, t.TempDir()) {
		_, stderr, code := greta(t, nil, "inspect", c.Path)
		if code != 1 {
			t.Errorf("%s: exit %d, want 1 (stderr %q)", c.Name, code, stderr)
		}
		if strings.Count(stderr, "\n") != 1 || strings.Contains(stderr, "panic") || strings.Contains(stderr, "goroutine") {
			t.Errorf("%s: stderr is not one clean line: %q", c.Name, stderr)
		}
		if !strings.Contains(stderr, c.WantErr) {
			t.Errorf("%s: stderr %q lacks %q", c.Name, stderr, c.WantErr)
		}
		stdout, _, code := greta(t, nil, "inspect", "--json", c.Path)
		var rep struct {
			Valid  bool     `json:"valid"`
			Errors []string `json:"errors"`
		}
		if err := json.Unmarshal([]byte(stdout), &rep); err != nil || rep.Valid || len(rep.Errors) == 0 || code != 1 {
			t.Errorf("%s: --json gave exit %d, %+v, err %v", c.Name, code, rep, err)
		}
	}
}

func TestInspectSynthJSON(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "m.gguf")
	if _, stderr, code := greta(t, nil, "synth", "-o", path, "--dim", "128", "--layers", "3", "--heads", "4", "--kv-heads", "1", "--ffn", "256", "--type", "q8_0", "--vocab", "400", "--tied"); code != 0 {
		t.Fatalf("synth: %s", stderr)
	}
	stdout, stderr, code := greta(t, nil, "inspect", path, "--json")
	if code != 0 {
		t.Fatalf("inspect exit %d: %s", code, stderr)
	}
	var rep struct {
		Architecture string
		Config       map[string]any
		Tokenizer    map[string]any
		Tensors      []struct {
			Name  string
			Type  string
			Shape []int64
		}
		Valid bool
	}
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"dim": 128, "hidden_dim": 256, "n_layers": 3, "n_heads": 4, "n_kv_heads": 1, "head_dim": 32, "vocab_size": 400, "context_length": 2048, "rope_freq_base": 10000}
	for k, v := range want {
		if rep.Config[k] != v {
			t.Errorf("config.%s = %v, want %v", k, rep.Config[k], v)
		}
	}
	if !rep.Valid || rep.Architecture != "llama" || rep.Tokenizer["model"] != "llama" || rep.Tokenizer["n_tokens"].(float64) != 400 {
		t.Errorf("report: %+v", rep)
	}
	for _, tn := range rep.Tensors {
		if tn.Name == "output.weight" {
			t.Errorf("--tied wrote output.weight")
		}
		if tn.Name == "blk.0.attn_k.weight" && (tn.Type != "Q8_0" || tn.Shape[0] != 128 || tn.Shape[1] != 32) {
			t.Errorf("attn_k: %+v", tn)
		}
	}
}
