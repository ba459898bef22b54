package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
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

// The reports' reproduction command: one record per step × listed layer ×
// listed point, exactly the listed points, and a clean diff against the
// oracle run of the same command.
func TestReportsTraceReproduction(t *testing.T) {
	dir := t.TempDir()
	models := []string{}
	if shared, err := filepath.Abs("../../../shared/models/stories260K.gguf"); err == nil {
		if _, err := os.Stat(shared); err == nil {
			models = append(models, shared)
		}
	}
	// TinyLlama's shape (dim 2048, 32 heads, 4 KV heads, ffn 5632), cut to
	// 3 layers to keep CI fast; `greta synth --preset tinyllama-1.1b` gives
	// all 22.
	tl := filepath.Join(dir, "tinyllama-shaped.gguf")
	if _, stderr, code := greta(t, nil, "synth", "--preset", "tinyllama-1.1b", "--layers", "3", "--type", "q4_k_m", "-o", tl); code != 0 {
		t.Fatal(stderr)
	}
	models = append(models, tl)
	points := "x,norm_out,q,k,v,attn_out,ffn_norm,mlp_out,x_out"
	for _, m := range models {
		var paths []string
		for _, dev := range []string{"cpu", "ref"} {
			out := filepath.Join(dir, filepath.Base(m)+"."+dev+".jsonl")
			cmd := exec.Command(gretaBin, "run", "--model", m, "--prompt", "Hi", "--max-tokens", "16", "--greedy", "--debug-decode", "16", "--device", dev, "--json")
			cmd.Env = append(os.Environ(), "GRETA_TRACE_LAYER=1", "GRETA_TRACE_LAYER_OUT="+out,
				"GRETA_TRACE_LAYER_LAYERS=0,1,2", "GRETA_TRACE_LAYER_POINTS="+points)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("%s on %s: %v: %s", filepath.Base(m), dev, err, stderr.String())
			}
			if !strings.Contains(stderr.String(), "[debug-decode] step 0") {
				t.Errorf("no debug-decode output: %q", stderr.String())
			}
			var res struct{ Generated []int32 }
			json.Unmarshal(stdout.Bytes(), &res)
			lines := strings.Split(strings.TrimSpace(readFile(t, out)), "\n")
			// Steps: the prefill plus one per generated token fed back.
			steps := len(res.Generated)
			if steps == 0 {
				t.Fatalf("nothing generated")
			}
			seen := map[string]int{}
			for _, l := range lines[1:] {
				var r struct {
					Step  int
					Layer int
					Point string
				}
				json.Unmarshal([]byte(l), &r)
				seen[r.Point]++
				if r.Layer < 0 || r.Layer > 2 || r.Step >= steps {
					t.Fatalf("unexpected record %s", l[:min(len(l), 120)])
				}
			}
			if want := steps * 3 * 9; len(lines)-1 != want || len(seen) != 9 {
				t.Fatalf("%s/%s: %d records over %d points, want %d (= %d steps × 3 layers × 9 points)", filepath.Base(m), dev, len(lines)-1, len(seen), want, steps)
			}
			paths = append(paths, out)
		}
		stdout, stderr, code := greta(t, nil, "trace", "diff", paths[0], paths[1], "--tol", "1e-1", "--html", filepath.Join(dir, "d.html"))
		if code != 0 || !strings.HasPrefix(stdout, "no divergence") {
			t.Errorf("%s: cpu vs ref: exit %d\n%s%s", filepath.Base(m), code, stdout, stderr)
		}
		if html := readFile(t, filepath.Join(dir, "d.html")); !strings.Contains(html, "<svg") || strings.Contains(html, "http://www.w3.org/1999/xhtml\" src") {
			t.Errorf("html report lacks an inline svg")
		}
	}
}

func readFile(t *testing.T, p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestTraceDiffExitCodes(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.jsonl")
	os.WriteFile(bad, []byte("{\"type\":\"nope\"}\n"), 0o644)
	if _, _, code := greta(t, nil, "trace", "diff", bad, bad); code != 2 {
		t.Errorf("bad input: exit %d, want 2", code)
	}
	if _, _, code := greta(t, nil, "trace", "diff", bad); code != 2 {
		t.Errorf("one file: exit %d, want 2", code)
	}
}

// TestBenchJSONAndDepth runs greta bench on a small synthetic model: the
// JSON report has both tests, -d starts them behind that many tokens, and a
// depth that does not fit the context is one line and a non-zero exit.
func TestBenchJSONAndDepth(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.gguf")
	if _, stderr, code := greta(t, nil, "synth", "-o", path, "--dim", "128", "--layers", "2", "--heads", "4", "--kv-heads", "2", "--ffn", "256", "--type", "q4_k_m", "--vocab", "300"); code != 0 {
		t.Fatalf("synth: %s", stderr)
	}
	stdout, stderr, code := greta(t, nil, "bench", "-m", path, "--device", "cpu", "-p", "16", "-n", "8", "-d", "40", "-r", "2", "--json")
	if code != 0 {
		t.Fatalf("bench exit %d: %s", code, stderr)
	}
	var rep struct {
		Depth  int
		Reps   int
		PP, TG struct {
			N   int
			TPS float64
		}
	}
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("%v: %s", err, stdout)
	}
	if rep.Depth != 40 || rep.Reps != 2 || rep.PP.N != 16 || rep.TG.N != 8 || !(rep.PP.TPS > 0) || !(rep.TG.TPS > 0) {
		t.Errorf("report: %+v", rep)
	}
	stdout, _, code = greta(t, nil, "bench", "-m", path, "--device", "cpu", "-p", "16", "-n", "8", "-d", "40", "-r", "1")
	if code != 0 || !strings.Contains(stdout, "pp16 @ d40") || !strings.Contains(stdout, "tg8 @ d40") {
		t.Errorf("table (exit %d):\n%s", code, stdout)
	}
	_, stderr, code = greta(t, nil, "bench", "-m", path, "--device", "cpu", "-p", "16", "-n", "8", "-d", "60", "--ctx", "64")
	if code == 0 || strings.Count(strings.TrimSpace(stderr), "\n") != 0 || !strings.Contains(stderr, "does not fit --ctx 64") {
		t.Errorf("-d past the context: exit %d, stderr %q", code, stderr)
	}
}
