package template

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"greta/gguf"
	"greta/internal/testmodels"
	"greta/model/llama"
	"greta/tokenizer"
)

// Meta's Llama 3 Instruct template, as in Meta-Llama-3-8B-Instruct.
const llama3 = `{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>

'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>

' }}{% endif %}`

// ChatML as Qwen 2.5 and many fine-tunes write it (without a default
// system prompt).
const chatml = `{% for message in messages %}{{'<|im_start|>' + message['role'] + '
' + message['content'] + '<|im_end|>' + '
'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant
' }}{% endif %}`

var conversation = []Message{
	{Role: "system", Content: "You are terse."},
	{Role: "user", Content: "Hi there"},
	{Role: "assistant", Content: "Hello."},
	{Role: "user", Content: "What is 2+2?"},
}

func toTok(ms []Message) []tokenizer.Message {
	out := make([]tokenizer.Message, len(ms))
	for i, m := range ms {
		out[i] = tokenizer.Message{Role: m.Role, Content: m.Content}
	}
	return out
}

// The Jinja rendering of a family's template is the built-in format's
// text, BOS left out.
func TestJinjaMatchesBuiltin(t *testing.T) {
	for _, c := range []struct{ name, src string }{{"llama3", llama3}, {"chatml", chatml}} {
		tm, err := Compile(c.src, "<|begin_of_text|>", "<|eot_id|>")
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		ct, err := tokenizer.NewChatTemplate(c.name)
		if err != nil {
			t.Fatal(err)
		}
		for _, gen := range []bool{false, true} {
			got, err := tm.Apply(conversation, gen)
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			if want := ct.Apply(toTok(conversation), gen); got != want {
				t.Errorf("%s (generation prompt %v):\n got %q\nwant %q", c.name, gen, got, want)
			}
		}
	}
}

// Publishers' templates for four families render a conversation with
// their markers in place and the generation prompt at the end.
func TestPublishedTemplates(t *testing.T) {
	for _, c := range []struct {
		file, bos, eos string
		want           []string
		end            string
	}{
		{"Llama-3.2-1B-Instruct-GGUF.jinja", "<|begin_of_text|>", "<|eot_id|>",
			[]string{"<|start_header_id|>system<|end_header_id|>", "You are terse.", "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"},
			"<|start_header_id|>assistant<|end_header_id|>\n\n"},
		{"Qwen3-8B-Q8_0.jinja", "", "<|im_end|>",
			[]string{"<|im_start|>system\nYou are terse.<|im_end|>", "<|im_start|>user\nWhat is 2+2?<|im_end|>"},
			"<|im_start|>assistant\n"},
		{"gemma-4-26B-A4B-it-UD-Q8_K_XL.jinja", "<bos>", "<eos>",
			[]string{"You are terse.", "What is 2+2?"}, ""},
		{"Ministral-3-14B-Instruct-2512-Q4_0.jinja", "<s>", "</s>",
			[]string{"[SYSTEM_PROMPT]You are terse.[/SYSTEM_PROMPT]", "[INST]What is 2+2?[/INST]"}, ""},
	} {
		src, err := os.ReadFile(filepath.Join("testdata", c.file))
		if err != nil {
			t.Fatal(err)
		}
		tm, err := Compile(string(src), c.bos, c.eos)
		if err != nil {
			t.Errorf("%s: %v", c.file, err)
			continue
		}
		got, err := tm.Apply(conversation, true)
		if err != nil {
			t.Errorf("%s: %v", c.file, err)
			continue
		}
		if c.bos != "" && strings.HasPrefix(got, c.bos) {
			t.Errorf("%s: the output starts with BOS %q", c.file, c.bos)
		}
		for _, w := range c.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: %q is not in\n%s", c.file, w, got)
			}
		}
		if !strings.HasSuffix(got, c.end) {
			t.Errorf("%s: does not end with %q:\n%s", c.file, c.end, got)
		}
	}
}

// A template's own refusal is an error of Apply, not a panic or a silent
// prompt.
func TestRaiseException(t *testing.T) {
	src := `{% for m in messages %}{% if m.role == 'assistant' and loop.index0 == 2 %}{{ raise_exception('Roles must alternate') }}{% endif %}{{ m.content }}{% endfor %}`
	tm, err := Compile(src, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tm.Apply(conversation, true); err == nil || !strings.Contains(err.Error(), "Roles must alternate") {
		t.Fatalf("got %v, want the template's exception", err)
	}
	if _, err := Compile("{% for %}", "", ""); err == nil {
		t.Fatal("a broken template compiled")
	}
}

// A file without a template gets the built-in chatml format, marked as a
// fallback; one whose template the engine refuses gets a built-in one too,
// saying why.
func TestFromTokenizerFallback(t *testing.T) {
	dir := testmodels.SharedDir(t, 2)
	f, err := gguf.Open(filepath.Join(dir, "models", "stories260K.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tok, err := tokenizer.FromGGUF(f)
	if err != nil {
		t.Fatal(err)
	}
	tm := FromTokenizer(tok)
	if tm.Name != "chatml" || !tm.Fallback || tm.Why == "" {
		t.Fatalf("got %+v, want the chatml fallback with a reason", tm)
	}
	got, err := tm.Apply([]Message{{Role: "user", Content: "hi"}}, true)
	if err != nil || got != "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n" {
		t.Fatalf("got %q, %v", got, err)
	}
	if _, err := ByName(tok, "llama3"); err != nil {
		t.Fatal(err)
	}
	if _, err := ByName(tok, "nope"); err == nil {
		t.Fatal("an unknown name was accepted")
	}
}

// TestLlamaCppRender: the chat templates of the families GRETA runs
// (Qwen2.5, Qwen3, Gemma 2, Phi-3.5, as llama.cpp ships them in
// models/templates) render multi-turn conversations, with and without a
// system turn, to exactly the text llama.cpp's --jinja renders
// (testdata/llamacpp-render.json, made by llamacpp_render.py; llama.cpp
// also leaves out a leading BOS).
func TestLlamaCppRender(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "llamacpp-render.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ref struct {
		Cases []struct {
			Template, Bos, Eos, Prompt string
			Messages                   []struct{ Role, Content string }
		}
	}
	if err := json.Unmarshal(b, &ref); err != nil {
		t.Fatal(err)
	}
	if len(ref.Cases) == 0 {
		t.Fatal("no cases")
	}
	for i, c := range ref.Cases {
		src, err := os.ReadFile(filepath.Join("testdata", c.Template))
		if err != nil {
			t.Fatal(err)
		}
		tm, err := Compile(string(src), c.Bos, c.Eos)
		if err != nil {
			t.Fatalf("%s: %v", c.Template, err)
		}
		var msgs []Message
		for _, m := range c.Messages {
			msgs = append(msgs, Message{Role: m.Role, Content: m.Content})
		}
		got, err := tm.Apply(msgs, true)
		if err != nil {
			t.Fatalf("%s: %v", c.Template, err)
		}
		if got != c.Prompt {
			t.Errorf("case %d %s (%d turns):\n got %q\nwant %q", i, c.Template, len(msgs), got, c.Prompt)
		}
		// The built-in format that DetectChatTemplate picks for the
		// template writes the same text (the files without a template of
		// their own, greta chat). Qwen2.5's default system prompt is the
		// template's, not chatml's.
		ct, err := tokenizer.DetectChatTemplate(string(src))
		if err != nil {
			t.Fatalf("%s: %v", c.Template, err)
		}
		if msgs[0].Role != "system" && ct.Name == "chatml" {
			continue
		}
		if b := ct.Apply(toTok(msgs), true); b != c.Prompt {
			t.Errorf("case %d %s, built-in %s:\n got %q\nwant %q", i, c.Template, ct.Name, b, c.Prompt)
		}
	}
}

// TestSynthTemplates: the chat templates greta synth writes for each
// family render through the Jinja engine to the family's built-in format
// (which TestLlamaCppRender holds to llama.cpp's rendering of the
// publishers' templates).
func TestSynthTemplates(t *testing.T) {
	for _, c := range []struct{ arch, builtin string }{{"qwen2", "chatml"}, {"qwen3", "chatml"}, {"gemma2", "gemma"}, {"gemma3", "gemma"}, {"phi3", "phi3"}} {
		kv, err := llama.SynthMetadata(llama.SynthOptions{Arch: c.arch, Dim: 64, Layers: 1, Heads: 4, FFN: 64, Context: 256, Vocab: 600, Type: "f32"})
		if err != nil {
			t.Fatal(err)
		}
		f, err := gguf.FromMetadata(kv)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := tokenizer.FromGGUF(f)
		if err != nil {
			t.Fatal(err)
		}
		tm := FromTokenizer(tok)
		if tm.Name != "jinja" || tm.Fallback {
			t.Fatalf("%s: template %+v", c.arch, tm)
		}
		ct, err := tok.ChatTemplate()
		if err != nil || ct.Name != c.builtin || ct.Fallback {
			t.Fatalf("%s: detected %+v, %v; want %s", c.arch, ct, err, c.builtin)
		}
		for _, msgs := range [][]Message{conversation, conversation[1:]} {
			got, err := tm.Apply(msgs, true)
			if err != nil {
				t.Fatal(err)
			}
			if want := ct.Apply(toTok(msgs), true); got != want {
				t.Errorf("%s (%d turns):\n got %q\nwant %q", c.arch, len(msgs), got, want)
			}
		}
	}
}

// TestFoldSystem: a template without a system role (Gemma 2's raises on
// one) gets the system text joined into the next user turn, as llama.cpp's
// minja does; one with a system role renders it itself.
func TestFoldSystem(t *testing.T) {
	src := `{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}`
	tm, err := Compile(src, "", "")
	if err != nil {
		t.Fatal(err)
	}
	got, err := tm.Apply([]Message{{Role: "system", Content: "S1"}, {Role: "system", Content: "S2"}, {Role: "user", Content: "U"}, {Role: "assistant", Content: "A"}, {Role: "user", Content: "V"}}, false)
	if want := "<user>S1\nS2\nU<assistant>A<user>V"; err != nil || got != want {
		t.Fatalf("folded: %q, %v; want %q", got, err, want)
	}
	with, err := Compile(`{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}`, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := with.Apply([]Message{{Role: "system", Content: "S"}, {Role: "user", Content: "U"}}, false); got != "<system>S<user>U" {
		t.Fatalf("a template with a system role: %q", got)
	}
}
