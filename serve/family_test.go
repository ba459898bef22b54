package serve_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"greta/backend/cpu"
	"greta/engine"
	"greta/internal/testmodels"
	"greta/ml"
	"greta/model/llama"
	"greta/serve"
	"greta/tokenizer"
	"greta/tokenizer/template"
)

// A small random-weight file of each family: dims 64, 2 layers. A weight
// spread of 0.1 makes the logits depend visibly on every prompt token.
func familyOptions(arch string, seed uint64) llama.SynthOptions {
	return llama.SynthOptions{Arch: arch, Dim: 64, Layers: 2, Heads: 4, KVHeads: 2, FFN: 128, Context: 512, Vocab: 600,
		Type: "f32", WeightStd: 0.1, Seed: seed}
}

// Meta's Llama 3 Instruct template, as in Meta-Llama-3-8B-Instruct (the
// llama synth file has none of its own).
const llama3Template = `{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>

'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>

' }}{% endif %}`

// The conversation every family gets: system, user, assistant, user (the
// last with spaces that the Gemma and Llama 3 formats trim).
var familyConversation = []template.Message{
	{Role: "system", Content: "You are terse."},
	{Role: "user", Content: "Hi there"},
	{Role: "assistant", Content: "Hello. How can I help?"},
	{Role: "user", Content: "  What is 2+2?  "},
}

const chatMLRendering = "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n" +
	"<|im_start|>assistant\nHello. How can I help?<|im_end|>\n<|im_start|>user\n  What is 2+2?  <|im_end|>\n<|im_start|>assistant\n"

// Gemma has no system role: the synth template (as Gemma 3's own, and
// llama.cpp's built-in gemma format) puts the system text before the
// first user turn with a blank line. llama.cpp renders it so too: the
// template shows the system text, so minja finds it supports the system
// role and applies no polyfill.
const gemmaRendering = "<start_of_turn>user\nYou are terse.\n\nHi there<end_of_turn>\n<start_of_turn>model\n" +
	"Hello. How can I help?<end_of_turn>\n<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n"

// TestFamilyChatTemplates: greta serve renders each family's chat template
// as llama.cpp's --jinja would, and feeds the model exactly that prompt.
//
// The rendering is written out by hand per family (the Jinja engine of
// package template must give the same text), BOS left out as llama.cpp
// does; the prompt is its encoding with BOS and special tokens, as
// llama-server tokenizes a chat prompt. The server does not expose the
// prompt it renders (it has no /apply-template), so the test proves it
// three ways, after a greedy multi-turn chat completion:
//   - usage.prompt_tokens is the count of the expected tokens;
//   - /v1/completions fed those token ids reuses every full KV page of
//     the chat's prompt (prompt_tokens_details.cached_tokens): the cache
//     is keyed by the tokens themselves, so all but the last partial page
//     are the same ids;
//   - that completion gives the chat's text, tokens and logprobs bit for
//     bit (the engine is batch invariant, also across the prefix cache:
//     docs/ENGINE.md), which one token changed in the middle of the prompt
//     breaks (checked too, so the comparison can fail).
func TestFamilyChatTemplates(t *testing.T) {
	for _, c := range []struct {
		name     string
		o        llama.SynthOptions
		src      string // the file's chat template ("": the one greta synth writes)
		tmplName string // what /v1/models reports
		want     string // the rendering of familyConversation
	}{
		// No template in the file: chatml stands in, as in llama.cpp.
		{"llama", familyOptions("llama", 1), "", "chatml", chatMLRendering},
		{"llama/llama3", familyOptions("llama", 1), llama3Template, "jinja",
			"<|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>" +
				"<|start_header_id|>assistant<|end_header_id|>\n\nHello. How can I help?<|eot_id|>" +
				"<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
		{"qwen2", familyOptions("qwen2", 2), "", "jinja", chatMLRendering},
		{"qwen3", familyOptions("qwen3", 3), "", "jinja", chatMLRendering},
		{"gemma2", familyOptions("gemma2", 4), "", "jinja", gemmaRendering},
		{"gemma3", familyOptions("gemma3", 5), "", "jinja", gemmaRendering},
		{"phi3", familyOptions("phi3", 6), "", "jinja",
			"<|system|>\nYou are terse.<|end|>\n<|user|>\nHi there<|end|>\n<|assistant|>\nHello. How can I help?<|end|>\n" +
				"<|user|>\n  What is 2+2?  <|end|>\n<|assistant|>\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ts, tk := serveFamily(t, c.o, c.src)
			if got := ts.chatTemplateName(t); got != c.tmplName {
				t.Fatalf("/v1/models says chat template %q, want %q", got, c.tmplName)
			}
			// The same Jinja engine, on the file's own template, renders
			// the text written above.
			src := tk.ChatTemplateText()
			if (src == "") != (c.tmplName != "jinja") {
				t.Fatalf("the file's tokenizer.chat_template is %q", src)
			}
			if src != "" {
				tm, err := template.Compile(src, tk.TokenText(tk.BOS()), tk.TokenText(tk.EOS()))
				if err != nil {
					t.Fatal(err)
				}
				got, err := tm.Apply(familyConversation, true)
				if err != nil {
					t.Fatal(err)
				}
				if got != c.want {
					t.Fatalf("the Jinja engine renders\n%q\nwant\n%q", got, c.want)
				}
			}
			ts.checkChatPrompt(t, tk, c.o.Arch, familyConversation, c.want)
		})
	}
}

// TestFamilyPublishedTemplates: the publishers' templates of Qwen2.5,
// Qwen3, Gemma 2 and Phi-3.5, on files of their family, serve the prompt
// that llama.cpp's llama-server --jinja renders for the same conversation
// (../tokenizer/template/testdata/llamacpp-render.json, from
// llamacpp_render.py there).
func TestFamilyPublishedTemplates(t *testing.T) {
	dir := filepath.Join("..", "tokenizer", "template", "testdata")
	b, err := os.ReadFile(filepath.Join(dir, "llamacpp-render.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ref struct {
		Cases []struct {
			Template, Arch, Bos, Eos, Prompt string
			Messages                         []template.Message
		}
	}
	if err := json.Unmarshal(b, &ref); err != nil {
		t.Fatal(err)
	}
	if len(ref.Cases) == 0 {
		t.Fatal("no cases")
	}
	for i, c := range ref.Cases {
		t.Run(fmt.Sprintf("%d-%s", i, c.Arch), func(t *testing.T) {
			src, err := os.ReadFile(filepath.Join(dir, c.Template))
			if err != nil {
				t.Fatal(err)
			}
			ts, tk := serveFamily(t, familyOptions(c.Arch, uint64(10+i)), string(src))
			// llama.cpp saw the same vocabulary (greta synth --vocab 600).
			if bos, eos := tk.TokenText(tk.BOS()), tk.TokenText(tk.EOS()); bos != c.Bos || eos != c.Eos {
				t.Fatalf("bos %q eos %q, llama.cpp had %q %q", bos, eos, c.Bos, c.Eos)
			}
			if got := ts.chatTemplateName(t); got != "jinja" {
				t.Fatalf("chat template %q, want the file's own", got)
			}
			ts.checkChatPrompt(t, tk, c.Arch, c.Messages, c.Prompt)
		})
	}
}

// TestFamilySystemRole: Gemma 2's published template has no system role
// and raises on one. As llama.cpp's minja does, the system text is folded
// into the first user turn ("system\nuser"); roles out of order are still
// the template's own refusal, a 400 with its words. With openai-go and
// with curl.
func TestFamilySystemRole(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("..", "tokenizer", "template", "testdata", "google-gemma-2-2b-it.jinja"))
	if err != nil {
		t.Fatal(err)
	}
	ts, tk := serveFamily(t, familyOptions("gemma2", 20), string(src))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := ts.client()
	// A system turn is folded into the first user turn, as llama.cpp's
	// minja does for templates without a system role (Gemma 2's raises).
	ts.checkChatPrompt(t, tk, "gemma2", familyConversation, "<start_of_turn>user\nYou are terse.\nHi there<end_of_turn>\n<start_of_turn>model\n"+
		"Hello. How can I help?<end_of_turn>\n<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n")
	// Without the system turn it serves, the prompt as written by hand.
	ts.checkChatPrompt(t, tk, "gemma2", familyConversation[1:], "<start_of_turn>user\n"+gemmaRendering[strings.Index(gemmaRendering, "Hi there"):])
	var apiErr *openai.Error
	// Roles out of order are the template's refusal too.
	_, err = c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "gemma2",
		Messages:  chatParams([]template.Message{{Role: "user", Content: "a"}, {Role: "user", Content: "b"}}),
		MaxTokens: openai.Int(4), Temperature: openai.Float(0)})
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || !strings.Contains(apiErr.Message, "must alternate") {
		t.Fatalf("two user turns on Gemma 2's template: got %v, want a 400 with the template's words", err)
	}

	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Log("curl is not installed: the curl checks are skipped")
		return
	}
	run := func(body string) (int, []byte) {
		t.Helper()
		cctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		out, err := exec.CommandContext(cctx, curl, "-sS", "--max-time", "15", "-H", "Content-Type: application/json",
			"-w", "\n%{http_code}", "-d", body, ts.url+"/v1/chat/completions").Output()
		if err != nil {
			t.Fatalf("curl: %v: %s", err, out)
		}
		i := strings.LastIndexByte(string(out), '\n')
		var code int
		if _, err := fmt.Sscan(string(out[i+1:]), &code); err != nil {
			t.Fatalf("curl printed no status: %q", out)
		}
		return code, out[:i]
	}
	code, body := run(`{"messages":[{"role":"user","content":"a"},{"role":"user","content":"b"}],"max_tokens":4,"temperature":0}`)
	wantError(t, "curl, two user turns", code, body, 400, "messages", "")
	code, body = run(`{"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Hi there"}],"max_tokens":4,"temperature":0}`)
	var ok struct {
		Choices []struct {
			Message      struct{ Role, Content string }
			FinishReason string `json:"finish_reason"`
		}
		Usage struct {
			PromptTokens int `json:"prompt_tokens"`
		}
	}
	if code != 200 || json.Unmarshal(body, &ok) != nil || len(ok.Choices) != 1 || ok.Choices[0].Message.Role != "assistant" || ok.Choices[0].FinishReason == "" {
		t.Fatalf("curl, a system and a user turn: %d %s", code, body)
	}
	if want := len(tk.Encode("<start_of_turn>user\nYou are terse.\nHi there<end_of_turn>\n<start_of_turn>model\n", true, true)); ok.Usage.PromptTokens != want {
		t.Fatalf("curl, a system and a user turn: prompt_tokens %d, want %d", ok.Usage.PromptTokens, want)
	}
}

// serveFamily synthesizes a family's file (with chatTemplate as its
// tokenizer.chat_template unless empty), loads it on the CPU and serves
// it on 127.0.0.1 as greta serve does: the chat template is the file's
// own (template.FromTokenizer, Ready's default).
func serveFamily(t *testing.T, o llama.SynthOptions, chatTemplate string) (*testServer, *tokenizer.Tokenizer) {
	t.Helper()
	dir := t.TempDir()
	var path string
	if chatTemplate == "" {
		path = testmodels.Synth(t, dir, o.Arch+".gguf", o)
	} else {
		path = testmodels.SynthChat(t, dir, o.Arch+".gguf", o, chatTemplate)
	}
	m, tk := testmodels.Load(t, path, cpu.New(2))
	e, err := engine.New(m, tk, engine.Options{Parallel: 2, Context: 512, Pages: 64})
	if err != nil {
		t.Fatal(err)
	}
	s := serve.New(serve.Options{ModelID: o.Arch, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	s.Ready(serve.Model{Engine: e, Fingerprint: "fp-" + o.Arch})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{url: "http://" + ln.Addr().String(), e: e, srv: s, stop: cancel, done: make(chan error, 1)}
	go func() { ts.done <- s.Serve(ctx, ln, 5*time.Second) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-ts.done:
		case <-time.After(10 * time.Second):
			t.Error("the server did not stop")
		}
		e.Close()
	})
	return ts, tk
}

// chatTemplateName is the template /v1/models names in its meta.
func (ts *testServer) chatTemplateName(t *testing.T) string {
	t.Helper()
	resp, err := http.Get(ts.url + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list struct {
		Data []struct {
			Meta struct {
				ChatTemplate string `json:"chat_template"`
			}
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil || len(list.Data) != 1 {
		t.Fatalf("/v1/models: %v %+v", err, list)
	}
	return list.Data[0].Meta.ChatTemplate
}

func chatParams(msgs []template.Message) []openai.ChatCompletionMessageParamUnion {
	out := make([]openai.ChatCompletionMessageParamUnion, len(msgs))
	for i, m := range msgs {
		switch m.Role {
		case "system":
			out[i] = openai.SystemMessage(m.Content)
		case "user":
			out[i] = openai.UserMessage(m.Content)
		case "assistant":
			out[i] = openai.AssistantMessage(m.Content)
		default:
			panic("role " + m.Role)
		}
	}
	return out
}

// checkChatPrompt sends msgs as a greedy chat completion on a fresh
// server and checks that the prompt the model got is rendering, encoded
// with BOS and special tokens (see TestFamilyChatTemplates for how).
func (ts *testServer) checkChatPrompt(t *testing.T, tk *tokenizer.Tokenizer, model string, msgs []template.Message, rendering string) {
	t.Helper()
	const maxTokens = 6
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := ts.client()
	ids := tk.Encode(rendering, true, true)
	if len(ids) <= ml.PageSize {
		t.Fatalf("the prompt has %d tokens: too short to fill a KV page of %d", len(ids), ml.PageSize)
	}
	// The server's tokenizer encodes the rendering so too.
	b, _ := json.Marshal(map[string]any{"content": rendering, "add_special": true})
	status, _, body := ts.post(t, "/tokenize", string(b))
	var toks struct{ Tokens []int32 }
	if status != 200 || json.Unmarshal(body, &toks) != nil || !slices.Equal(toks.Tokens, ids) {
		t.Fatalf("/tokenize: %d %s, want %v", status, body, ids)
	}

	chat, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: model, Messages: chatParams(msgs),
		MaxCompletionTokens: openai.Int(maxTokens), Temperature: openai.Float(0), Seed: openai.Int(1),
		Logprobs: openai.Bool(true), TopLogprobs: openai.Int(3)})
	if err != nil {
		t.Fatalf("chat of a %d-token prompt: %v", len(ids), err)
	}
	if len(chat.Choices) != 1 {
		t.Fatalf("%d choices", len(chat.Choices))
	}
	ch := chat.Choices[0]
	u := chat.Usage
	if ch.Message.Role != "assistant" || ch.Message.Content == "" || u.CompletionTokens == 0 {
		t.Fatalf("an empty answer: role %q, content %q, %d tokens", ch.Message.Role, ch.Message.Content, u.CompletionTokens)
	}
	switch ch.FinishReason {
	case "length":
		if u.CompletionTokens != maxTokens {
			t.Fatalf("finish_reason length after %d tokens, max %d", u.CompletionTokens, maxTokens)
		}
	case "stop":
	default:
		t.Fatalf("finish_reason %q", ch.FinishReason)
	}
	if u.PromptTokens != int64(len(ids)) || u.TotalTokens != u.PromptTokens+u.CompletionTokens {
		t.Fatalf("usage: %d prompt + %d completion = %d tokens; the rendering is %d tokens", u.PromptTokens, u.CompletionTokens, u.TotalTokens, len(ids))
	}
	if u.PromptTokensDetails.CachedTokens != 0 {
		t.Fatalf("a fresh server took %d prompt tokens from its cache", u.PromptTokensDetails.CachedTokens)
	}
	lp := ch.Logprobs.Content
	if int64(len(lp)) != u.CompletionTokens {
		t.Fatalf("%d logprobs for %d tokens", len(lp), u.CompletionTokens)
	}

	complete := func(ids []int32) *openai.Completion {
		t.Helper()
		p := make([]int64, len(ids))
		for i, id := range ids {
			p[i] = int64(id)
		}
		r, err := c.Completions.New(ctx, openai.CompletionNewParams{Model: openai.CompletionNewParamsModel(model),
			Prompt:    openai.CompletionNewParamsPromptUnion{OfArrayOfTokens: p},
			MaxTokens: openai.Int(maxTokens), Temperature: openai.Float(0), Seed: openai.Int(1), Logprobs: openai.Int(3)})
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Choices) != 1 || len(r.Choices[0].Logprobs.TokenLogprobs) == 0 {
			t.Fatalf("completion: %d choices, no logprobs", len(r.Choices))
		}
		return r
	}
	comp := complete(ids)
	cc := comp.Choices[0]
	if cc.Text != ch.Message.Content || string(cc.FinishReason) != ch.FinishReason || comp.Usage.PromptTokens != u.PromptTokens ||
		comp.Usage.CompletionTokens != u.CompletionTokens {
		t.Fatalf("the completion of the expected prompt: %q (%s, %d+%d tokens); the chat: %q (%s, %d+%d tokens)",
			cc.Text, cc.FinishReason, comp.Usage.PromptTokens, comp.Usage.CompletionTokens, ch.Message.Content, ch.FinishReason, u.PromptTokens, u.CompletionTokens)
	}
	// The engine caches full pages of prompt tokens and computes at least
	// the last prompt token (engine's lookupPrefix).
	if got, want := comp.Usage.PromptTokensDetails.CachedTokens, int64((len(ids)-1)/ml.PageSize*ml.PageSize); got != want {
		t.Fatalf("the completion of the expected prompt took %d tokens from the chat's pages, want %d: the chat's prompt differs", got, want)
	}
	for i, x := range lp {
		if cc.Logprobs.Tokens[i] != x.Token || cc.Logprobs.TokenLogprobs[i] != x.Logprob {
			t.Fatalf("token %d: completion %q %v, chat %q %v", i, cc.Logprobs.Tokens[i], cc.Logprobs.TokenLogprobs[i], x.Token, x.Logprob)
		}
	}

	// One token changed in the middle changes the first logprob: the
	// comparison above can tell prompts apart.
	other := slices.Clone(ids)
	k := len(other) / 2
	for _, s := range []string{"x", "y"} {
		if id := tk.Encode(s, false, false)[0]; id != other[k] {
			other[k] = id
			break
		}
	}
	if got := complete(other).Choices[0].Logprobs.TokenLogprobs[0]; got == lp[0].Logprob {
		t.Fatalf("changing token %d of %d left the first logprob at %v: the check cannot see the prompt", k, len(ids), got)
	}
}
