// Package template renders a chat conversation into a model's prompt text
// with the model's own Jinja chat template (the GGUF's
// tokenizer.chat_template), as the model's publisher wrote it, and falls
// back to the built-in formats of package tokenizer for files that have no
// template or one the Jinja engine cannot run.
//
// The Jinja engine is github.com/ardanlabs/jinja: pure Go, no
// dependencies, written for LLM chat templates and tested on the templates
// of the Llama 3, Qwen 3, Gemma 4, Mistral 3, GPT-OSS and DeepSeek families
// (this package's tests render four of them). The other Go engines
// (pongo2, gonja) are general Django/Jinja ports that lack pieces chat
// templates use (namespace, loop controls, Python string methods such as
// .strip() and .startswith()).
package template

import (
	"fmt"
	"strings"

	"github.com/ardanlabs/jinja"

	"greta/tokenizer"
)

// Message is one chat turn. Role is "system", "user", "assistant" or
// "tool"; the optional fields go to templates that use them.
type Message struct {
	Role       string
	Content    string
	Name       string // the speaker's or the tool's name
	ToolCallID string // a tool result's call id
	// ToolCalls are an assistant turn's calls, as decoded JSON
	// ([]any of map[string]any), given to the template as they are.
	ToolCalls any
}

// Template renders conversations for one model.
type Template struct {
	// Name is "jinja" for the model's own template, else the built-in
	// format's name (tokenizer.ChatTemplateNames).
	Name string
	// Fallback is set when a built-in format stands in for the model's
	// template; Why says why (no template, or the Jinja engine refused it).
	Fallback bool
	Why      string

	jt       *jinja.Template
	builtin  *tokenizer.ChatTemplate
	bos, eos string
	// foldSystem: the template has no system role (it raises on one, as
	// Gemma's do, or drops it), so system turns are folded into the next
	// user turn, as llama.cpp's minja does (polyfill_system_role).
	foldSystem bool
}

// FromTokenizer returns the model's chat template: its Jinja source when
// the file has one that compiles and renders a one-turn conversation, else
// the built-in format tokenizer.ChatTemplate recognises (or chatml), with
// Fallback and Why set. It never fails.
func FromTokenizer(tok *tokenizer.Tokenizer) *Template {
	bos, eos := specialText(tok, tok.BOS()), specialText(tok, tok.EOS())
	src := tok.ChatTemplateText()
	var why string
	if src != "" {
		t, err := Compile(src, bos, eos)
		if err == nil {
			return t
		}
		why = err.Error()
	}
	ct, _ := tok.ChatTemplate() // never fails; chatml when unrecognised
	t := &Template{Name: ct.Name, builtin: ct, bos: bos, eos: eos}
	switch {
	case why != "":
		t.Fallback, t.Why = true, fmt.Sprintf("the model's chat template cannot be used (%s); the built-in %s format stands in", why, ct.Name)
	case ct.Fallback:
		t.Fallback, t.Why = true, ct.Why
	}
	return t
}

// ByName returns a built-in format (tokenizer.ChatTemplateNames) with the
// vocabulary's BOS and EOS texts.
func ByName(tok *tokenizer.Tokenizer, name string) (*Template, error) {
	ct, err := tok.ChatTemplateByName(name)
	if err != nil {
		return nil, err
	}
	return &Template{Name: ct.Name, builtin: ct, bos: specialText(tok, tok.BOS()), eos: specialText(tok, tok.EOS())}, nil
}

// Compile returns the template for a Jinja source, with the texts the
// template gets as bos_token and eos_token. It checks that a one-turn
// conversation renders, so that a template the engine cannot run fails
// here, at load, rather than on every request.
func Compile(src, bos, eos string) (*Template, error) {
	jt, err := jinja.Compile(src)
	if err != nil {
		return nil, err
	}
	t := &Template{Name: "jinja", jt: jt, bos: bos, eos: eos}
	if _, err := t.Apply([]Message{{Role: "user", Content: "hello"}}, true); err != nil {
		return nil, err
	}
	const probe = "<<system probe>>"
	out, err := t.Apply([]Message{{Role: "system", Content: probe}, {Role: "user", Content: "hello"}}, true)
	t.foldSystem = err != nil || !strings.Contains(out, probe)
	return t, nil
}

// foldSystem joins each run of system turns into the next user turn:
// "system\nuser" (the system texts joined by "\n"), as minja does for
// templates without a system role. System turns with no user turn after
// them are dropped, as there.
func foldSystem(messages []Message) []Message {
	out := make([]Message, 0, len(messages))
	pending := ""
	for _, m := range messages {
		switch {
		case m.Role == "system":
			if pending != "" {
				pending += "\n"
			}
			pending += m.Content
			continue
		case m.Role == "user" && pending != "":
			if m.Content != "" {
				m.Content = pending + "\n" + m.Content
			} else {
				m.Content = pending
			}
			pending = ""
		}
		out = append(out, m)
	}
	return out
}

// Apply renders messages. With addGenerationPrompt the text ends with what
// makes the model answer as the assistant. The result does not start with
// BOS, even when the template writes bos_token: encode it with
// tokenizer.Encode(text, true, true), so that BOS comes once, from the
// vocabulary's add_bos_token, and the markers parse as special tokens.
// An error is the template's own refusal (raise_exception: roles out of
// order, a role it does not support) or a failure of the engine.
func (t *Template) Apply(messages []Message, addGenerationPrompt bool) (string, error) {
	if t.jt == nil {
		msgs := make([]tokenizer.Message, len(messages))
		for i, m := range messages {
			msgs[i] = tokenizer.Message{Role: m.Role, Content: m.Content}
		}
		return t.builtin.Apply(msgs, addGenerationPrompt), nil
	}
	if t.foldSystem {
		messages = foldSystem(messages)
	}
	msgs := make([]any, len(messages))
	for i, m := range messages {
		mm := map[string]any{"role": m.Role, "content": m.Content}
		if m.Name != "" {
			mm["name"] = m.Name
		}
		if m.ToolCallID != "" {
			mm["tool_call_id"] = m.ToolCallID
		}
		if m.ToolCalls != nil {
			mm["tool_calls"] = m.ToolCalls
		}
		msgs[i] = mm
	}
	out, err := t.jt.Render(map[string]any{
		"messages":              msgs,
		"add_generation_prompt": addGenerationPrompt,
		"bos_token":             t.bos,
		"eos_token":             t.eos,
	})
	if err != nil {
		return "", fmt.Errorf("chat template: %w", err)
	}
	if t.bos != "" {
		out = strings.TrimPrefix(out, t.bos)
	}
	return out, nil
}

// specialText is a special token's text ("" when the vocabulary has none).
func specialText(tok *tokenizer.Tokenizer, id int32) string {
	if id < 0 {
		return ""
	}
	return tok.TokenText(id)
}
