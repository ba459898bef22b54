package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"greta/internal/testmodels"
)

// gretaWithin runs the CLI like greta, but kills it after limit: a hang is
// a failure, not a stuck test.
func gretaWithin(t *testing.T, limit time.Duration, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, gretaBin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("greta %s: still running after %v", strings.Join(clipArgs(args), " "), limit)
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

func clipArgs(args []string) []string {
	var out []string
	for _, a := range args {
		if len(a) > 80 {
			a = a[:80] + "…"
		}
		out = append(out, a)
	}
	return out
}

// Every hostile file, through every command that must refuse it: exit
// non-zero with one short line on stderr that names the problem; no panic,
// no hang past 10 s, no exit 0. Commands refuse what they read: tokenize
// reads the file and the vocabulary, run and inspect the model too, and
// only inspect --check reads every weight.
func TestHostileFilesThroughTheCLI(t *testing.T) {
	const limit = 10 * time.Second
	for _, c := range testmodels.HostileCorpus(t, t.TempDir()) {
		t.Run(c.Name, func(t *testing.T) {
			inspectArgs := []string{"inspect", c.Path}
			if c.Layer == testmodels.LayerWeights {
				inspectArgs = append(inspectArgs, "--check")
				// Without --check the file is valid: the scan is what finds it.
				if _, stderr, code := gretaWithin(t, limit, "inspect", c.Path); code != 0 {
					t.Errorf("inspect without --check: exit %d: %s", code, stderr)
				}
			}
			runs := [][]string{inspectArgs, append([]string{"inspect", "--check", "-m"}, c.Path)}
			if c.Layer != testmodels.LayerWeights {
				runs = append(runs, []string{"run", "-m", c.Path, "-p", "Once upon a time", "-n", "2", "--device", "cpu"})
			}
			if c.Layer == testmodels.LayerFile || c.Layer == testmodels.LayerVocab {
				runs = append(runs, []string{"tokenize", "-m", c.Path, "Once upon a time"})
			}
			for _, args := range runs {
				stdout, stderr, code := gretaWithin(t, limit, args...)
				for _, l := range strings.Split(stdout, "\n") {
					if len(l) > 600 {
						t.Errorf("%s: a %d-byte line on stdout: %.200q", args[0], len(l), l)
						break
					}
				}
				if code == 0 || (args[0] == "inspect" && code != 1) {
					t.Errorf("%s: exit %d (stderr %.300q)", args[0], code, stderr)
				}
				if strings.Count(stderr, "\n") != 1 || strings.Contains(stderr, "panic") || strings.Contains(stderr, "goroutine") || len(stderr) > 600 {
					t.Errorf("%s: stderr is not one short clean line: %.600q", args[0], stderr)
				}
				if !strings.Contains(stderr, c.WantErr) {
					t.Errorf("%s: stderr %.600q lacks %q", args[0], stderr, c.WantErr)
				}
			}
			stdout, _, code := gretaWithin(t, limit, append(inspectArgs, "--json")...)
			var rep struct {
				Valid  bool     `json:"valid"`
				Errors []string `json:"errors"`
			}
			if err := json.Unmarshal([]byte(stdout), &rep); err != nil || rep.Valid || len(rep.Errors) == 0 || code != 1 || !strings.Contains(rep.Errors[0], c.WantErr) {
				t.Errorf("--json gave exit %d, %.300v, err %v", code, rep, err)
			}
		})
	}
}

// Sizes from flags are checked before anything is allocated: before, the
// first panicked in the CPU attention and the others died out of memory
// with a goroutine dump. Flags past 2^24 tokens are refused as out of
// range; within it, what does not fit in memory is refused by the memory
// check (4 layers × 256 KV values × 2^24 positions × 8 bytes = 128 GiB).
func TestHugeContextsOneLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.gguf")
	if _, stderr, code := greta(t, nil, "synth", "-o", path, "--dim", "256", "--layers", "4", "--heads", "4", "--kv-heads", "4", "--ffn", "256", "--vocab", "300"); code != 0 {
		t.Fatalf("synth: %s", stderr)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "-m", path, "--device", "cpu", "-p", "hi", "-n", "2", "--ctx", "4611686018427387904"}, "out of range"},
		{[]string{"run", "-m", path, "--device", "cpu", "-p", "hi", "-n", "2", "--ctx", "1099511627776"}, "out of range"},
		{[]string{"run", "-m", path, "--device", "cpu", "-p", "hi", "-n", "2", "--ctx", "16777216"}, "of memory is available"},
		{[]string{"bench", "-m", path, "--device", "cpu", "-p", "1", "-n", "1", "-d", "1000000000000"}, "want a token count"},
		{[]string{"bench", "-m", path, "--device", "cpu", "-p", "1", "-n", "1", "-d", "16000000"}, "of memory is available"},
	} {
		_, stderr, code := gretaWithin(t, 10*time.Second, c.args...)
		// The context is past the trained one: a warning line may come first.
		if w, rest, ok := strings.Cut(stderr, "\n"); ok && strings.HasPrefix(w, "warning: --ctx") {
			stderr = rest
		}
		if code == 0 || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, c.want) || strings.Contains(stderr, "goroutine") {
			t.Errorf("%s: exit %d, stderr %q, want one line with %q", strings.Join(c.args[4:], " "), code, stderr, c.want)
		}
	}
}

// inspect takes -m/--model like every other command, or the positional
// argument; --metadata prints every key as gguf-dump does; --check scans
// the weights of a valid model and finds nothing.
func TestInspectModelFlagMetadataCheck(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.gguf")
	if _, stderr, code := greta(t, nil, "synth", "-o", path, "--dim", "64", "--layers", "2", "--heads", "4", "--kv-heads", "2", "--ffn", "128", "--vocab", "300", "--type", "q8_0"); code != 0 {
		t.Fatalf("synth: %s", stderr)
	}
	plain, _, code := greta(t, nil, "inspect", path)
	for _, args := range [][]string{{"inspect", "-m", path}, {"inspect", "--model", path}, {"inspect", "--model=" + path}} {
		out, stderr, c := greta(t, nil, args...)
		if c != 0 || code != 0 || out != plain {
			t.Errorf("%v: exit %d, %s", args, c, stderr)
		}
	}
	if _, _, c := greta(t, nil, "inspect", "-m", path, path); c != 2 {
		t.Errorf("-m and an argument: exit %d, want 2", c)
	}
	out, _, code := greta(t, nil, "inspect", path, "--metadata")
	for _, want := range []string{
		"\n      1: UINT32     |        1 | GGUF.version = 3\n",
		"| GGUF.kv_count = ",
		"STRING     |        1 | general.architecture = 'llama'\n",
		"[STRING]   |      300 | tokenizer.ggml.tokens = ['<unk>', '<s>', '</s>', '<0x00>', '<0x01>', ...]\n",
		"[INT32]    |      300 | tokenizer.ggml.token_type = [2, 3, 3, 6, 6, 6, 6, ...]\n",
		"BOOL       |        1 | tokenizer.ggml.add_bos_token = True\n",
		"FLOAT32    |        1 | llama.attention.layer_norm_rms_epsilon = 1e-05\n",
	} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("--metadata lacks %q:\n%s", want, out)
		}
	}
	out, _, _ = greta(t, nil, "inspect", path, "--metadata", "--json")
	var rep struct {
		Metadata []struct {
			Key, Type, Value string
			Count            int
		}
		Checked bool
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || len(rep.Metadata) < 10 || rep.Metadata[0].Key != "GGUF.version" || rep.Checked {
		t.Errorf("--metadata --json: %v %+v", err, rep)
	}
	out, stderr, code := greta(t, nil, "inspect", path, "--check")
	if code != 0 || !strings.Contains(out, "weights:       every tensor scanned for NaN and Inf\n") || !strings.Contains(out, "verdict:       valid") {
		t.Errorf("--check on a valid model: exit %d %s\n%s", code, stderr, out)
	}
}
