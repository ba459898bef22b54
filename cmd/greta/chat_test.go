package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"greta/backend/cpu"
	"greta/generate"
	"greta/gguf"
	"greta/internal/testmodels"
	"greta/model/llama"
	"greta/sample"
	"greta/tokenizer"
	"greta/tokenizer/template"
)

// signalWriter collects the chat's output and sends an interrupt the first
// time a reply's text arrives after the given number of prompts.
type signalWriter struct {
	mu       sync.Mutex
	b        strings.Builder
	prompts  int
	at       int
	sent     bool
	sig      chan os.Signal
	afterSig strings.Builder
}

func (w *signalWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := string(p)
	w.b.WriteString(s)
	if s == "> " {
		w.prompts++
		return len(p), nil
	}
	if w.prompts == w.at && !w.sent && s != "\n" {
		w.sent = true
		w.sig <- os.Interrupt
	}
	return len(p), nil
}

func chatFixture(t *testing.T) (*generate.Chat, *llama.Model) {
	path := testmodels.Synth(t, t.TempDir(), "tiny.gguf", testmodels.Tiny)
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	b := cpu.New(1)
	t.Cleanup(func() { b.Close() })
	m, err := llama.Load(f, b, llama.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.FromGGUF(f)
	if err != nil {
		t.Fatal(err)
	}
	ct := template.FromTokenizer(tok)
	if !ct.Fallback || ct.Name != "chatml" {
		t.Fatalf("a model without a template gets chatml: %+v", ct)
	}
	st, err := m.NewState(256, 32, false)
	if err != nil {
		t.Fatal(err)
	}
	return generate.NewChat(generate.NewSession(m, tok, st), tok, ct, "be brief"), m
}

// The chat keeps its context between turns (each turn feeds only its own
// tokens), an interrupt stops a reply and the chat goes on, and EOF ends it.
func TestChatLoop(t *testing.T) {
	c, _ := chatFixture(t)
	o := generate.Options{MaxTokens: 80, StopAtContext: true, Sampling: sample.Params{Greedy: true}}
	in, inW := io.Pipe()
	sig := make(chan os.Signal, 1)
	out := &signalWriter{sig: sig, at: 1}
	done := make(chan error, 1)
	go func() { done <- chatLoop(c, in, out, o, sig, false) }()

	inW.Write([]byte("first question\n"))
	// Wait for the second prompt: the first reply was interrupted.
	waitFor(t, func() bool { out.mu.Lock(); defer out.mu.Unlock(); return out.prompts == 2 })
	lenAfterFirst := c.Session().Len()
	msgs := c.Messages()
	if len(msgs) != 3 || msgs[0].Role != "system" || msgs[2].Role != "assistant" {
		t.Fatalf("messages after one turn: %+v", msgs)
	}
	_, feed, err := c.Turn("x")
	if err != nil {
		t.Fatal(err)
	}
	firstTurn := len(feed) // what a second turn would feed
	inW.Write([]byte("second\n"))
	waitFor(t, func() bool { out.mu.Lock(); defer out.mu.Unlock(); return out.prompts == 3 })
	inW.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !out.sent {
		t.Fatal("no interrupt was sent")
	}
	if len(c.Messages()) != 5 {
		t.Errorf("messages after two turns: %d", len(c.Messages()))
	}
	// The second turn fed only its own tokens: far fewer than the whole
	// conversation rendered again.
	all, _ := c.Template.Apply(c.Messages(), false)
	if firstTurn >= lenAfterFirst || c.Session().Len() <= lenAfterFirst {
		t.Errorf("turn of %d tokens after %d in the cache; now %d (whole text %d bytes)", firstTurn, lenAfterFirst, c.Session().Len(), len(all))
	}
	// The cache matches a run over the whole conversation's tokens.
	if got := c.Session().Tokens(); got[0] != 1 {
		t.Errorf("the conversation does not start with BOS: %v", got[:4])
	}
}

func waitFor(t *testing.T, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(time.Millisecond)
	}
}

// An interrupt at the prompt ends the chat.
func TestChatInterruptAtPrompt(t *testing.T) {
	c, _ := chatFixture(t)
	in, inW := io.Pipe()
	defer inW.Close()
	sig := make(chan os.Signal, 1)
	sig <- os.Interrupt
	var out strings.Builder
	if err := chatLoop(c, in, &out, generate.Options{MaxTokens: 4}, sig, false); err != nil || out.String() != "> \n" {
		t.Fatalf("%v, %q", err, out.String())
	}
}

// greta chat renders with the model's own Jinja template, keeps the
// conversation's tokens in the cache between turns, and refuses a --system
// that the template does not take, in one line.
func TestChatUsesModelTemplate(t *testing.T) {
	dir := t.TempDir()
	m := testmodels.SynthChat(t, dir, "jinja.gguf", testmodels.Tiny, `{% for m in messages %}{{ '<' + m['role'] + '>' + m['content'] + '</s>' }}{% endfor %}{% if add_generation_prompt %}{{ '<assistant>' }}{% endif %}`)
	_, stderr, code := greta(t, []byte("hello\nagain\n"), "chat", "-m", m, "--greedy", "-n", "6", "--verbose", "--device", "cpu")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stderr, "(the model's chat template, context") {
		t.Fatalf("the model's template was not used:\n%s", stderr)
	}
	var reused []int
	for _, l := range strings.Split(stderr, "\n") {
		var n, r int
		if i := strings.Index(l, "[prompt "); i >= 0 {
			if _, err := fmt.Sscanf(l[i:], "[prompt %d new tokens at", &n); err == nil {
				j := strings.Index(l, "tok/s (")
				fmt.Sscanf(l[j:], "tok/s (%d reused", &r)
				reused = append(reused, r)
			}
		}
	}
	if len(reused) != 2 || reused[0] != 0 || reused[1] < 8 {
		t.Fatalf("tokens reused from the cache per turn %v, want 0 then the first turn's:\n%s", reused, stderr)
	}

	noSystem := testmodels.SynthChat(t, dir, "nosys.gguf", testmodels.Tiny, `{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{{ m['content'] }}{% endfor %}`)
	// A template without a system role gets the system text folded into
	// the first user turn, as llama.cpp does (template.foldSystem).
	_, stderr, code = greta(t, []byte("hello\n"), "chat", "-m", noSystem, "--system", "be brief", "--device", "cpu", "-n", "4")
	if code != 0 || strings.Contains(stderr, "chat template: ") {
		t.Fatalf("--system on a template without a system role: exit %d: %s", code, stderr)
	}
}
