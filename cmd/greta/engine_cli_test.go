package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"greta/backend/cpu"
	"greta/gguf"
	"greta/model/llama"
)

// runBatchLines runs run --batch-file and returns its output lines, parsed.
func runBatchLines(t *testing.T, file string, wantCode int, args ...string) []map[string]any {
	t.Helper()
	stdout, stderr, code := greta(t, nil, append([]string{"run", "--batch-file", file, "--device", "cpu"}, args...)...)
	if code != wantCode {
		t.Fatalf("%v: exit %d (want %d): %s", args, code, wantCode, stderr)
	}
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSuffix(stdout, "\n"), "\n") {
		var j map[string]any
		if err := json.Unmarshal([]byte(l), &j); err != nil {
			t.Fatalf("output line %q: %v", l, err)
		}
		out = append(out, j)
	}
	return out
}

// run --batch-file: one line out per prompt in input order, bad lines as
// error objects among the others, and each good line exactly what run
// --json gives for that prompt alone, whatever --parallel.
func TestBatchFile(t *testing.T) {
	m := sharedModel(t, "stories260K.gguf")
	lines := []string{
		`{"prompt": "Once upon a time", "max_tokens": 24, "temperature": 0}`,
		`{"prompt": "The cat sat", "max_tokens": 12, "temperature": 0, "stop": [" the"]}`,
		`{"prompt": "bad", "temperature": -1}`,
		``,
		`not json`,
		`{"prompt": "Lily went to the park", "max_tokens": 16, "seed": 7, "temperature": 0.9, "top_k": 20}`,
		`{"prompt": "x", "bogus": 1}`,
		`{"prompt": "Tom had a big red ball. He", "temperature": 0, "repeat_penalty": 1.3}`,
		`{"max_tokens": 3}`,
	}
	// What each good line is alone, as flags.
	single := map[int][]string{
		0: {"-p", "Once upon a time", "-n", "24", "--greedy"},
		1: {"-p", "The cat sat", "-n", "12", "--greedy", "--stop", " the"},
		4: {"-p", "Lily went to the park", "-n", "16", "--seed", "7", "--temp", "0.9", "--top-k", "20"},
		6: {"-p", "Tom had a big red ball. He", "-n", "20", "--greedy", "--repeat-penalty", "1.3"},
	}
	bad := map[int]string{2: "temperature -1", 3: "not a request object", 5: `unknown field "bogus"`, 7: `no "prompt"`}
	file := filepath.Join(t.TempDir(), "prompts.jsonl")
	os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o644)

	want := map[int]map[string]any{}
	for i, args := range single {
		j, _ := runJSON(t, nil, append([]string{"run", "-m", m}, args...)...)
		want[i] = j
	}
	for _, par := range []string{"1", "3", "0"} {
		out := runBatchLines(t, file, 1, "-m", m, "-n", "20", "--parallel", par)
		if len(out) != 8 {
			t.Fatalf("--parallel %s: %d lines, want 8", par, len(out))
		}
		for i, j := range out {
			if j["index"] != float64(i) {
				t.Errorf("--parallel %s: line %d has index %v", par, i, j["index"])
			}
			if w, ok := bad[i]; ok {
				if e, _ := j["error"].(string); !strings.Contains(e, w) {
					t.Errorf("--parallel %s: line %d: error %q, want %q", par, i, e, w)
				}
				continue
			}
			keys := []string{"prompt_tokens", "generated", "text", "stop_reason"}
			if i == 4 {
				keys = append(keys, "seed") // the only line that names one
			}
			for _, k := range keys {
				if mustJSON(j[k]) != mustJSON(want[i][k]) {
					t.Errorf("--parallel %s: prompt %d: %s %v, alone %v", par, i, k, j[k], want[i][k])
				}
			}
		}
	}
	// A file that cannot be read is one line, before any work.
	_, stderr, code := greta(t, nil, "run", "-m", m, "--device", "cpu", "--batch-file", filepath.Join(t.TempDir(), "none.jsonl"))
	oneLineErr(t, "missing file", stderr, code, 1, "no such file")
	_, stderr, code = greta(t, nil, "run", "-m", m, "--device", "cpu", "--batch-file", file, "-p", "hi")
	oneLineErr(t, "-p with --batch-file", stderr, code, 2, "give no -p")
	// Every line good: exit 0, from standard input too.
	good := `{"prompt": "Once upon a time", "max_tokens": 24, "temperature": 0}` + "\n"
	stdout, stderr, code := greta(t, []byte(good), "run", "-m", m, "--device", "cpu", "--batch-file", "-")
	if code != 0 || !strings.Contains(stdout, `"index":0`) || !strings.Contains(stdout, `"text":`+mustJSON(want[0]["text"])) {
		t.Errorf("--batch-file -: exit %d, %q, %s", code, stdout, stderr)
	}
}

// bench --parallel prints one JSON line per level: the single test's
// object plus "parallel" and a "total" beside "pp" and "tg".
func TestBenchParallelJSON(t *testing.T) {
	m := tinyModel(t)
	stdout, stderr, code := greta(t, nil, "bench", "-m", m, "--device", "cpu", "-p", "8", "-n", "4", "--parallel", "1,3", "-r", "1", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2:\n%s", len(lines), stdout)
	}
	for i, par := range []int{1, 3} {
		var j struct {
			Parallel       int
			Threads        int
			PP, TG, Total  *benchStat
			Results        []benchResult
			Model, Backend string
			Params, Reps   int
			SizeBytes      int64 `json:"size_bytes"`
			Depth          *int
		}
		if err := json.Unmarshal([]byte(lines[i]), &j); err != nil {
			t.Fatalf("%v: %s", err, lines[i])
		}
		if j.Parallel != par || j.PP == nil || j.TG == nil || j.Total == nil || len(j.Results) != 3 || j.Backend != "cpu" || j.Threads < 1 || j.Depth == nil {
			t.Fatalf("line %d: %s", i, lines[i])
		}
		if j.PP.N != 8 || j.TG.N != 4 || j.Total.N != 12 || !(j.PP.TPS > 0) || !(j.TG.TPS > 0) || !(j.Total.TPS > 0) {
			t.Errorf("line %d: pp %+v tg %+v total %+v", i, *j.PP, *j.TG, *j.Total)
		}
	}
	// --parallel 1 alone is today's single-sequence report.
	j, _ := runJSON(t, nil, "bench", "-m", m, "-p", "8", "-n", "4", "--parallel", "1", "-r", "1")
	if _, ok := j["parallel"]; ok || j["pp"] == nil || j["tg"] == nil {
		t.Errorf("--parallel 1: %v", j)
	}
	stdout, _, code = greta(t, nil, "bench", "-m", m, "--device", "cpu", "-p", "8", "-n", "4", "--parallel", "2", "-r", "1")
	if code != 0 || !strings.Contains(stdout, "| parallel |") || !strings.Contains(stdout, "| 2 | pp8+tg4 |") {
		t.Errorf("table:\n%s", stdout)
	}
	_, stderr, code = greta(t, nil, "bench", "-m", m, "--device", "cpu", "--parallel", "2", "-d", "8")
	oneLineErr(t, "--parallel with -d", stderr, code, 2, "-d with --parallel")
}

// greta logits through the engine writes exactly what the single-sequence
// forward path wrote before, on the F32 model, whatever the chunking.
func TestLogitsThroughEngineBitwise(t *testing.T) {
	m := sharedModel(t, "stories260K.gguf")
	tokens := []int32{1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338, 401, 396, 267}
	f, err := gguf.Open(m)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := cpu.New(0)
	defer b.Close()
	setActivations(b, "f32")
	model, err := llama.Load(f, b, llama.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	V := model.Config.VocabSize
	ids := make([]string, len(tokens))
	for i, tk := range tokens {
		ids[i] = strings.TrimSpace(mustJSON(tk))
	}
	for _, batch := range []int{512, 7, 1} {
		st, err := model.NewState(len(tokens), batch, true)
		if err != nil {
			t.Fatal(err)
		}
		var want bytes.Buffer
		buf := make([]float32, batch*V)
		for i := 0; i < len(tokens); i += batch {
			chunk := tokens[i:min(len(tokens), i+batch)]
			if err := model.Forward(st, chunk); err != nil {
				t.Fatal(err)
			}
			vals := buf[:len(chunk)*V]
			b.Read(st.Logits, vals)
			for _, v := range vals {
				binary.Write(&want, binary.LittleEndian, math.Float32bits(v))
			}
		}
		stdout, stderr, code := greta(t, nil, "logits", "-m", m, "--tokens", strings.Join(ids, ","), "-o", "-", "--device", "cpu", "--batch", mustJSON(batch))
		if code != 0 {
			t.Fatalf("--batch %d: exit %d: %s", batch, code, stderr)
		}
		if stdout != want.String() {
			t.Errorf("--batch %d: the engine's logits differ from the forward path's (%d bytes, want %d)", batch, len(stdout), want.Len())
		}
	}
}

func TestKVBudgetFlag(t *testing.T) {
	for _, c := range []struct {
		in    string
		bytes int64
		frac  float64
	}{
		{"", 0, 0}, {"512MiB", 512 << 20, 0}, {"2GiB", 2 << 30, 0}, {"2G", 2 << 30, 0}, {"1GB", 1e9, 0},
		{"1e9", 1e9, 0}, {"4096", 4096, 0}, {"0.9", 0, 0.9}, {"1", 0, 1}, {"90%", 0, 0.9}, {" 64 KiB ", 64 << 10, 0},
	} {
		b, f, err := parseKVBudget(c.in)
		if err != nil || b != c.bytes || math.Abs(f-c.frac) > 1e-12 {
			t.Errorf("%q: %d %g %v, want %d %g", c.in, b, f, err, c.bytes, c.frac)
		}
	}
	for _, bad := range []string{"-1", "0", "0%", "120%", "nan", "inf", "12XB", "MiB", "1e30"} {
		if _, _, err := parseKVBudget(bad); err == nil {
			t.Errorf("%q: accepted", bad)
		}
	}
	m := tinyModel(t)
	_, stderr, code := greta(t, nil, "run", "-m", m, "-p", "hi", "--device", "cpu", "--kv-budget", "12XB")
	oneLineErr(t, "--kv-budget 12XB", stderr, code, 2, "--kv-budget")
	_, stderr, code = greta(t, nil, "serve", "-m", m, "--device", "cpu", "--port", "0", "--kv-budget", "12XB")
	oneLineErr(t, "serve --kv-budget 12XB", stderr, code, 2, "--kv-budget")
	_, stderr, code = greta(t, nil, "run", "-m", m, "-p", "hi", "--device", "cpu", "--kv-budget", "100B")
	oneLineErr(t, "--kv-budget 100B", stderr, code, 1, "holds no page")
	// A pool smaller than the context: the context shrinks to it, and a
	// request that does not fit is refused before any work.
	j, _ := runJSON(t, nil, "run", "-m", m, "-p", "hi", "-n", "4", "--kv-budget", "32KiB")
	if j["kv_tokens"] != float64(32<<10/(2*2*32*4)) {
		t.Errorf("--kv-budget 32KiB: kv_tokens %v", j["kv_tokens"])
	}
	_, stderr, code = greta(t, nil, "run", "-m", m, "-p", "hi", "-n", "500", "--device", "cpu", "--kv-budget", "32KiB")
	oneLineErr(t, "past the pool", stderr, code, 1, "context overflow")
	j, _ = runJSON(t, nil, "run", "-m", m, "-p", "hi", "-n", "4", "--kv-budget", "0.01")
	if v, _ := j["kv_tokens"].(float64); v < 16 {
		t.Errorf("--kv-budget 0.01: kv_tokens %v", j["kv_tokens"])
	}
	_, stderr, code = greta(t, nil, "run", "-m", m, "-p", "hi", "--device", "cpu", "--parallel", "-1")
	oneLineErr(t, "--parallel -1", stderr, code, 2, "--parallel: parallel -1")
	_, stderr, code = greta(t, nil, "run", "-m", m, "-p", "hi", "--device", "cpu", "--prefill-budget", "0")
	oneLineErr(t, "--prefill-budget 0", stderr, code, 2, "--prefill-budget: prefill_budget 0")
}
