package main

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"greta/gguf"
)

// tinyModel writes a small random-weight model with the CLI.
func tinyModel(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	if _, stderr, code := greta(t, nil, "synth", "-o", path, "--dim", "64", "--layers", "2", "--heads", "4", "--kv-heads", "2", "--ffn", "128", "--vocab", "300"); code != 0 {
		t.Fatalf("synth: %s", stderr)
	}
	return path
}

// oneLineErr checks a failure: the exit code, one clean stderr line that
// contains want.
func oneLineErr(t *testing.T, what, stderr string, code, wantCode int, want string) {
	t.Helper()
	if code != wantCode || strings.Count(stderr, "\n") != 1 || strings.Contains(stderr, "goroutine") || !strings.Contains(stderr, want) {
		t.Errorf("%s: exit %d (want %d), stderr %q (want one line with %q)", what, code, wantCode, stderr, want)
	}
}

// Every numeric flag is range-checked before any work, with an error that
// names the flag, the API field and the allowed range.
func TestFlagRanges(t *testing.T) {
	m := tinyModel(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--temp", "nan"}, "--temp: temperature NaN"},
		{[]string{"--temp", "-1"}, "temperature -1"},
		{[]string{"--temp", "+Inf"}, "temperature +Inf"},
		{[]string{"--top-p", "2"}, "--top-p: top_p 2"},
		{[]string{"--repeat-penalty", "-2"}, "--repeat-penalty: repeat_penalty -2"},
		{[]string{"--min-p", "-1"}, "--min-p: min_p -1"},
		{[]string{"--top-k", "-5"}, "--top-k: top_k -5"},
		{[]string{"--repeat-last-n", "-1"}, "repeat_last_n -1"},
		{[]string{"--batch", "0"}, "--batch: n_batch 0"},
		{[]string{"--threads", "-1"}, "--threads: n_threads -1"},
		{[]string{"--ctx", "-1"}, "--ctx: n_ctx -1"},
		{[]string{"--ctx", "4611686018427387904"}, "n_ctx 4611686018427387904"},
		{[]string{"-n", "-2"}, "max_tokens -2"},
		{[]string{"--stop", ""}, "--stop"},
		{[]string{"--debug-decode", "-1"}, "debug_top"},
	} {
		args := append([]string{"run", "-m", m, "-p", "hi", "--device", "cpu"}, c.args...)
		_, stderr, code := greta(t, nil, args...)
		oneLineErr(t, strings.Join(c.args, " "), stderr, code, 2, c.want)
		if !strings.Contains(stderr, "want") {
			t.Errorf("%v: no allowed range in %q", c.args, stderr)
		}
	}
	// The same checks in every command that runs a model, and bench's own.
	for _, args := range [][]string{
		{"logits", "-m", m, "--tokens", "1", "-o", "-", "--batch", "0"},
		{"chat", "-m", m, "--temp", "nan"},
		{"bench", "-m", m, "-t", "-1"},
		{"bench", "-m", m, "-p", "-5"},
		{"bench", "-m", m, "-n", "1,-1"},
		{"bench", "-m", m, "-d", "1000000000000"},
		{"bench", "-m", m, "-r", "0"},
		{"bench", "-m", m, "--batch", "0"},
	} {
		_, stderr, code := greta(t, nil, args...)
		oneLineErr(t, strings.Join(args[3:], " "), stderr, code, 2, "want")
	}
}

func runJSON(t *testing.T, stdin []byte, args ...string) (map[string]any, string) {
	t.Helper()
	stdout, stderr, code := greta(t, stdin, append(args, "--json", "--device", "cpu")...)
	if code != 0 {
		t.Fatalf("%v: exit %d: %s", args, code, stderr)
	}
	var j map[string]any
	if err := json.Unmarshal([]byte(stdout), &j); err != nil {
		t.Fatalf("%v: %v: %q", args, err, stdout)
	}
	return j, stderr
}

func TestMaxTokensAndSeed(t *testing.T) {
	m := tinyModel(t)
	j, _ := runJSON(t, nil, "run", "-m", m, "-p", "hi", "-n", "0")
	if g := j["generated"].([]any); len(g) != 0 || j["text"] != "" {
		t.Errorf("-n 0 generated %v", g)
	}
	j, _ = runJSON(t, nil, "run", "-m", m, "-p", "hi", "-n", "-1", "--ctx", "24", "--greedy")
	if r := j["stop_reason"]; r != "context" && r != "eos" {
		t.Errorf("-n -1: %v", r)
	}
	// Unseeded runs differ in their seed (and so in their text); the seed
	// printed repeats the run.
	seedA, textA := seeded(t, m)
	seedB, _ := seeded(t, m)
	if seedA == seedB {
		t.Errorf("two unseeded runs got seed %s", seedA)
	}
	c, _ := runJSON(t, nil, "run", "-m", m, "-p", "hi", "-n", "24", "--temp", "1.5", "--seed", seedA)
	if c["text"] != textA {
		t.Errorf("--seed %s: %q, first run %q", seedA, c["text"], textA)
	}
	_, stderr, code := greta(t, nil, "run", "-m", m, "-p", "hi", "-n", "2", "--device", "cpu", "--seed", "42", "--verbose")
	if code != 0 || !strings.Contains(stderr, "seed 42") {
		t.Errorf("--verbose: %q", stderr)
	}
	// -n 1: no decode step, so no decode speed.
	_, stderr, _ = greta(t, nil, "run", "-m", m, "-p", "hi", "-n", "1", "--device", "cpu")
	if strings.Contains(stderr, "0.0 tok/s") {
		t.Errorf("-n 1: %q", stderr)
	}
	j, _ = runJSON(t, nil, "run", "-m", m, "-p", "hi", "-n", "1")
	if v := j["timings"].(map[string]any)["gen_tokens_per_s"]; v != nil {
		t.Errorf("-n 1: gen_tokens_per_s %v", v)
	}
}

// seeded makes an unseeded sampling run and returns the seed it printed
// in --json, exactly (a uint64 does not survive float64), and its text.
func seeded(t *testing.T, m string) (string, string) {
	stdout, stderr, code := greta(t, nil, "run", "-m", m, "-p", "hi", "-n", "24", "--temp", "1.5", "--json", "--device", "cpu")
	if code != 0 {
		t.Fatal(stderr)
	}
	dec := json.NewDecoder(strings.NewReader(stdout))
	dec.UseNumber()
	var j struct {
		Seed json.Number
		Text string
	}
	if err := dec.Decode(&j); err != nil {
		t.Fatal(err)
	}
	return j.Seed.String(), j.Text
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestStopFlag(t *testing.T) {
	m := tinyModel(t)
	free, _ := runJSON(t, nil, "run", "-m", m, "-p", "hi", "-n", "40", "--greedy")
	text := free["text"].(string)
	if len(text) < 8 {
		t.Skipf("short text %q", text)
	}
	stop := text[4:6]
	want, _, _ := strings.Cut(text, stop)
	j, _ := runJSON(t, nil, "run", "-m", m, "-p", "hi", "-n", "40", "--greedy", "--stop", "NEVER-MATCHES", "--stop", stop)
	if j["text"] != want || j["stop_reason"] != "stop" {
		t.Errorf("--stop %q: %q (%v), want %q", stop, j["text"], j["stop_reason"], want)
	}
	stdout, _, code := greta(t, nil, "run", "-m", m, "-p", "hi", "-n", "40", "--greedy", "--stop", stop, "--device", "cpu")
	if code != 0 || stdout != want+"\n" {
		t.Errorf("streamed with --stop: %q, want %q", stdout, want+"\n")
	}
}

// A write error on any output is a non-zero exit with one line.
func TestWriteErrors(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full")
	}
	m := tinyModel(t)
	full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Skip(err)
	}
	defer full.Close()
	toFull := func(args ...string) (string, int) {
		cmd := exec.Command(gretaBin, args...)
		cmd.Stdout = full
		var errb strings.Builder
		cmd.Stderr = &errb
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		return errb.String(), code
	}
	for _, args := range [][]string{
		{"run", "-m", m, "-p", "hi", "-n", "4", "--device", "cpu"},
		{"run", "-m", m, "-p", "hi", "-n", "4", "--device", "cpu", "--json"},
		{"tokenize", "-m", m, "hi"},
		{"inspect", m},
		{"inspect", "--json", m},
		{"bench", "-m", m, "-p", "4", "-n", "2", "-r", "1", "--device", "cpu"},
		{"bench", "-m", m, "-p", "4", "-n", "2", "-r", "1", "--device", "cpu", "--json"},
		{"logits", "-m", m, "--tokens", "1,2", "-o", "-", "--device", "cpu"},
		{"--version"},
		{"help"},
		{"run", "--help"},
	} {
		stderr, code := toFull(args...)
		if code == 0 || !strings.Contains(stderr, "no space left on device") {
			t.Errorf("%v > /dev/full: exit %d, %q", args, code, stderr)
		}
	}
	for _, args := range [][]string{
		{"run", "-m", m, "-p", "hi", "-n", "4", "--device", "cpu", "--trace-out", "/dev/full"},
		{"logits", "-m", m, "--tokens", "1,2", "-o", "/dev/full", "--device", "cpu"},
	} {
		_, stderr, code := greta(t, nil, args...)
		if code == 0 || !strings.Contains(stderr, "no space left on device") {
			t.Errorf("%v: exit %d, %q", args, code, stderr)
		}
	}
}

// Layer lists are checked against the model before anything is expanded:
// a huge range is one line at once, not a hang.
func TestTraceLayerRanges(t *testing.T) {
	m := tinyModel(t)
	out := filepath.Join(t.TempDir(), "t.jsonl")
	start := time.Now()
	_, stderr, code := greta(t, nil, "run", "-m", m, "-p", "hi", "-n", "2", "--device", "cpu", "--trace-out", out, "--trace-layers", "0-2000000000")
	oneLineErr(t, "--trace-layers", stderr, code, 1, "the model has 2 layers")
	cmd := exec.Command(gretaBin, "run", "-m", m, "-p", "hi", "-n", "2", "--device", "cpu")
	cmd.Env = append(os.Environ(), "GRETA_TRACE_LAYER=1", "GRETA_TRACE_LAYER_OUT="+out, "GRETA_TRACE_LAYER_LAYERS=0-2000000000")
	b, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(b), "the model has 2 layers") {
		t.Errorf("GRETA_TRACE_LAYER_LAYERS: %v %q", err, b)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %v", d)
	}
	// GRETA_TRACE_LAYER=false is off, not on.
	dir := t.TempDir()
	cmd = exec.Command(gretaBin, "run", "-m", m, "-p", "hi", "-n", "2", "--device", "cpu")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GRETA_TRACE_LAYER=false")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	if _, err := os.Stat(filepath.Join(dir, "greta_trace.jsonl")); err == nil {
		t.Error("GRETA_TRACE_LAYER=false wrote a trace")
	}
	cmd = exec.Command(gretaBin, "run", "-m", m, "-p", "hi", "-n", "2", "--device", "cpu")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GRETA_TRACE_LAYER=maybe")
	if b, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(b), "GRETA_TRACE_LAYER") {
		t.Errorf("GRETA_TRACE_LAYER=maybe: %v %q", err, b)
	}
}

// synth -o writes only regular files or new paths, and leaves nothing
// behind when it cannot.
func TestSynthOutput(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Skip(err)
	}
	small := []string{"--dim", "64", "--layers", "1", "--heads", "4", "--ffn", "128", "--vocab", "300"}
	for _, target := range []string{fifo, dir, "/dev/null"} {
		_, stderr, code := greta(t, nil, append([]string{"synth", "-o", target}, small...)...)
		oneLineErr(t, target, stderr, code, 1, "not a regular file")
	}
	if st, err := os.Lstat(fifo); err != nil || st.Mode()&os.ModeNamedPipe == 0 {
		t.Errorf("the FIFO was replaced: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("left behind: %v", ents)
	}
	if _, err := os.Stat(dir + ".tmp"); err == nil {
		t.Errorf("%s.tmp left behind", dir)
	}
	// An existing regular file is replaced, and a missing folder is an error.
	reg := filepath.Join(dir, "m.gguf")
	os.WriteFile(reg, []byte("old"), 0o644)
	if _, stderr, code := greta(t, nil, append([]string{"synth", "-o", reg}, small...)...); code != 0 {
		t.Fatal(stderr)
	}
	if st, _ := os.Stat(reg); st.Size() < 1000 || st.Mode().Perm() != 0o644 {
		t.Errorf("replaced file: %v", st)
	}
	_, stderr, code := greta(t, nil, append([]string{"synth", "-o", filepath.Join(dir, "no/such/m.gguf")}, small...)...)
	oneLineErr(t, "missing folder", stderr, code, 1, "no such file")
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Errorf("left behind: %v", ents)
	}
}

func TestTraceDiffTolAndHelp(t *testing.T) {
	m := tinyModel(t)
	out := filepath.Join(t.TempDir(), "t.jsonl")
	if _, stderr, code := greta(t, nil, "trace", "record", "-o", out, "-m", m, "-p", "hi", "-n", "2", "--device", "cpu", "--greedy"); code != 0 {
		t.Fatal(stderr)
	}
	for _, tol := range []string{"-1", "nan", "NaN", "inf"} {
		_, stderr, code := greta(t, nil, "trace", "diff", out, out, "--tol", tol)
		oneLineErr(t, "--tol "+tol, stderr, code, 2, "--tol")
	}
	if stdout, _, code := greta(t, nil, "trace", "diff", out, out, "--tol", "0"); code != 0 || !strings.HasPrefix(stdout, "no divergence") {
		t.Errorf("--tol 0 on one trace: exit %d %q", code, stdout)
	}
	for _, args := range [][]string{
		{"trace", "--help"}, {"trace", "diff", "--help"}, {"trace", "record", "--help"}, {"help", "run"},
		{"help", "trace"}, {"run", "--help"}, {"run", "-h"}, {"bench", "--help"}, {"tokenize", "--help"}, {"--help"},
	} {
		stdout, stderr, code := greta(t, nil, args...)
		if code != 0 || strings.Contains(stdout+stderr, "pflag") || !strings.Contains(stdout, "usage: greta") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, stdout, stderr)
		}
	}
	if stdout, _, _ := greta(t, nil, "help", "run"); !strings.Contains(stdout, "--max-tokens") {
		t.Errorf("greta help run: %q", stdout)
	}
	if stdout, _, _ := greta(t, nil, "trace", "record", "--help"); !strings.Contains(stdout, "--prompt") {
		t.Errorf("trace record --help lacks the run flags: %q", stdout)
	}
	_, stderr, code := greta(t, nil, "run", "--nope")
	oneLineErr(t, "unknown flag", stderr, code, 2, "unknown flag: --nope")
}

func TestPromptSources(t *testing.T) {
	m := tinyModel(t)
	want, _ := runJSON(t, nil, "run", "-m", m, "-p", "hello\nworld", "-n", "0")
	got, _ := runJSON(t, []byte("hello\nworld"), "run", "-m", m, "-p", "-", "-n", "0")
	if mustJSON(got["prompt_tokens"]) != mustJSON(want["prompt_tokens"]) {
		t.Errorf("-p -: %v, want %v", got["prompt_tokens"], want["prompt_tokens"])
	}
	f := filepath.Join(t.TempDir(), "p.txt")
	os.WriteFile(f, []byte("hello\nworld"), 0o644)
	got, _ = runJSON(t, nil, "run", "-m", m, "-f", f, "-n", "0")
	if mustJSON(got["prompt_tokens"]) != mustJSON(want["prompt_tokens"]) {
		t.Errorf("-f: %v", got["prompt_tokens"])
	}
	got, _ = runJSON(t, nil, "run", "-m", m, "-p", `hello\nworld`, "-e", "-n", "0")
	if mustJSON(got["prompt_tokens"]) != mustJSON(want["prompt_tokens"]) {
		t.Errorf("-e: %v", got["prompt_tokens"])
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-p", "hi", "there"}, `unexpected arguments "there"`},
		{[]string{"-p", "hi", "-f", f}, "give the prompt once"},
		{[]string{"-p", "hi", "--system", "be nice"}, "--system has no effect without --chat"},
		{[]string{"-p", "hi", "--trace-values", "all"}, "--trace-values has no effect"},
		{[]string{"-p", "hi", "--trace-layers", "0"}, "no effect without a trace"},
		{[]string{"-f", "/dev/null"}, "not a regular file"},
		{[]string{}, "no prompt"},
	} {
		_, stderr, code := greta(t, nil, append([]string{"run", "-m", m, "--device", "cpu"}, c.args...)...)
		if code == 0 || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: exit %d, %q", c.args, code, stderr)
		}
	}
	// Warnings: a context past the trained one, a second BOS.
	_, stderr := runJSON(t, nil, "run", "-m", m, "-p", "hi", "-n", "0", "--ctx", "5000")
	if !strings.Contains(stderr, "exceeds the 2048 tokens the model was trained on") {
		t.Errorf("--ctx 5000: %q", stderr)
	}
	_, stderr = runJSON(t, nil, "run", "-m", m, "-p", "<s>hi", "-n", "0")
	if !strings.Contains(stderr, "two BOS") {
		t.Errorf("<s> prompt: %q", stderr)
	}
}

func TestLogitsToStdout(t *testing.T) {
	m := tinyModel(t)
	dir := t.TempDir()
	stdout, stderr, code := greta(t, nil, "logits", "-m", m, "--tokens", "1,2,3", "-o", "-", "--device", "cpu")
	if code != 0 || len(stdout) != 3*300*4 {
		t.Fatalf("-o -: exit %d, %d bytes: %s", code, len(stdout), stderr)
	}
	f := filepath.Join(dir, "l.bin")
	if _, stderr, code := greta(t, nil, "logits", "-m", m, "--tokens", "1,2,3", "-o", f, "--device", "cpu"); code != 0 {
		t.Fatal(stderr)
	}
	if b, _ := os.ReadFile(f); string(b) != stdout {
		t.Error("stdout and file differ")
	}
	if _, err := os.Stat("-"); err == nil {
		t.Error("a file named - was written")
	}
}

func TestVersion(t *testing.T) {
	stdout, _, code := greta(t, nil, "--version")
	if code != 0 || !strings.Contains(stdout, version) || !strings.Contains(stdout, "commit ") || !strings.Contains(stdout, "go1.") {
		t.Errorf("--version: exit %d %q", code, stdout)
	}
}

func TestBenchLists(t *testing.T) {
	m := tinyModel(t)
	stdout, stderr, code := greta(t, nil, "bench", "-m", m, "--device", "cpu", "-p", "8,16", "-n", "4", "-t", "1,2", "-r", "1")
	if code != 0 {
		t.Fatal(stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 2+2*3 || !strings.Contains(lines[0], "| size | params | backend | threads |") {
		t.Fatalf("table:\n%s", stdout)
	}
	for _, want := range []string{"| 1 | pp8 |", "| 1 | pp16 |", "| 1 | tg4 |", "| 2 | pp8 |", "| 2 | tg4 |"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("no %q in\n%s", want, stdout)
		}
	}
	j, _ := runJSON(t, nil, "bench", "-m", m, "-p", "8", "-n", "4", "-r", "1")
	if th, _ := j["threads"].(float64); th < 1 {
		t.Errorf(`"threads": %v`, j["threads"])
	}
	if p, _ := j["params"].(float64); p < 1000 {
		t.Errorf(`"params": %v`, j["params"])
	}
}

// A model whose logits are NaN is an error naming the step, never <unk>
// forever with exit 0.
func TestNaNModelCLI(t *testing.T) {
	m := tinyModel(t)
	bad := filepath.Join(t.TempDir(), "nan.gguf")
	os.WriteFile(bad, breakTensor(t, m, "output_norm.weight"), 0o644)
	for _, extra := range [][]string{{"--greedy"}, {}, {"--repeat-penalty", "1.1"}} {
		_, stderr, code := greta(t, nil, append([]string{"run", "-m", bad, "-p", "hi", "-n", "8", "--device", "cpu"}, extra...)...)
		oneLineErr(t, "NaN model", stderr, code, 1, "non-finite logits at generation step 0")
	}
}

// breakTensor returns the model file with every value of an f32 tensor NaN.
func breakTensor(t *testing.T, path, name string) []byte {
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	ti, ok := f.Tensor(name)
	if !ok || ti.Type != gguf.F32 {
		t.Fatalf("%s: %+v", name, ti)
	}
	off, size := f.DataOffset+int64(ti.Offset), ti.Size()
	f.Close()
	b, _ := os.ReadFile(path)
	for i := off; i < off+size; i += 4 {
		binary.LittleEndian.PutUint32(b[i:], math.Float32bits(float32(math.NaN())))
	}
	return b
}
