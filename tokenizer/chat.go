package tokenizer

import (
	"fmt"
	"strings"
)

// Message is one chat turn. Role is "system", "user" or "assistant".
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// ChatTemplate renders a conversation into the prompt text a chat model was
// trained on. It is not a Jinja interpreter: it recognises the template
// families below (as llama.cpp's llm_chat_detect_template does) and writes
// their format directly.
//
// The output does not start with BOS: encode it with
// Encode(prompt, true, true) so that BOS comes from the vocabulary's
// add_bos_token and the markers (<|eot_id|>, </s>, ...) are parsed as
// special tokens.
type ChatTemplate struct {
	// Name is "llama3", "llama2", "zephyr", "chatml" (Qwen), "gemma"
	// (Gemma 2 and 3) or "phi3".
	Name string
	// Fallback is set when the model's own template was missing or not
	// recognised and chatml stands in for it (Why says which).
	Fallback bool
	Why      string
	// BOS and EOS are the texts of the begin and end tokens the format
	// writes inside the conversation (Llama 2 and Zephyr use them).
	BOS, EOS string
}

// ChatTemplateNames lists the names NewChatTemplate accepts.
var ChatTemplateNames = []string{"llama3", "llama2", "zephyr", "chatml", "gemma", "phi3"}

// NewChatTemplate returns the template with the given name, with </s> and
// <s> as the end and begin texts.
func NewChatTemplate(name string) (*ChatTemplate, error) {
	switch name {
	case "llama3", "llama2", "zephyr", "chatml", "gemma", "phi3":
		return &ChatTemplate{Name: name, BOS: "<s>", EOS: "</s>"}, nil
	}
	return nil, fmt.Errorf("unknown chat template %q (known: %s)", name, strings.Join(ChatTemplateNames, ", "))
}

// DetectChatTemplate recognises a template from the text of
// tokenizer.chat_template (a Jinja source), or from one of the names.
func DetectChatTemplate(tmpl string) (*ChatTemplate, error) {
	if ct, err := NewChatTemplate(tmpl); err == nil {
		return ct, nil
	}
	has := func(s string) bool { return strings.Contains(tmpl, s) }
	switch {
	case has("<|start_header_id|>") && has("<|end_header_id|>"):
		return NewChatTemplate("llama3")
	case has("[INST]"):
		return NewChatTemplate("llama2")
	case has("<|im_start|>") && has("<|im_end|>"):
		return NewChatTemplate("chatml")
	case has("<start_of_turn>"):
		return NewChatTemplate("gemma")
	case has("<|assistant|>") && has("<|end|>"):
		return NewChatTemplate("phi3") // before zephyr, whose markers Phi-3 shares
	case has("<|user|>") && has("<|assistant|>"):
		// Zephyr and TinyLlama-Chat. (llama.cpp files TinyLlama's template,
		// which writes eos_token rather than a literal </s>, under GLM-Edge.)
		return NewChatTemplate("zephyr")
	case tmpl == "":
		return nil, fmt.Errorf("no chat template: the model has no tokenizer.chat_template; choose one by name (%s)", strings.Join(ChatTemplateNames, ", "))
	}
	return nil, fmt.Errorf("chat template not recognised (known families: %s); choose one by name", strings.Join(ChatTemplateNames, ", "))
}

// ChatTemplate returns the template named by the model's
// tokenizer.chat_template, with the vocabulary's own BOS and EOS texts.
// When the file has none, or one not recognised, it returns chatml (as
// llama.cpp falls back to) with Fallback set and Why saying what was
// wrong, so that the caller can warn. It never fails; the error is there
// for templates that may one day be refused.
func (t *Tokenizer) ChatTemplate() (*ChatTemplate, error) {
	ct, err := DetectChatTemplate(t.chatTemplate)
	if err != nil {
		ct, _ = NewChatTemplate("chatml")
		ct.Fallback, ct.Why = true, err.Error()
	}
	t.adopt(ct)
	return ct, nil
}

// ChatTemplateByName returns the named template with the vocabulary's own
// BOS and EOS texts.
func (t *Tokenizer) ChatTemplateByName(name string) (*ChatTemplate, error) {
	ct, err := NewChatTemplate(name)
	if err != nil {
		return nil, err
	}
	t.adopt(ct)
	return ct, nil
}

func (t *Tokenizer) adopt(ct *ChatTemplate) {
	if t.bos >= 0 {
		ct.BOS = t.tokens[t.bos]
	}
	if t.eos >= 0 {
		ct.EOS = t.tokens[t.eos]
	}
}

// Apply renders messages. With addAssistantPrompt the text ends with the
// header that makes the model answer as the assistant (Llama 2's [/INST]
// already does that, so it adds nothing there).
func (ct *ChatTemplate) Apply(messages []Message, addAssistantPrompt bool) string {
	var b strings.Builder
	switch ct.Name {
	case "llama3":
		// Meta's Llama 3 instruct format; contents are trimmed as in its
		// template (and llama.cpp's).
		for _, m := range messages {
			b.WriteString("<|start_header_id|>" + m.Role + "<|end_header_id|>\n\n")
			b.WriteString(strings.TrimSpace(m.Content))
			b.WriteString("<|eot_id|>")
		}
		if addAssistantPrompt {
			b.WriteString("<|start_header_id|>assistant<|end_header_id|>\n\n")
		}
	case "llama2":
		// Meta's Llama 2 chat format:
		//   [INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {answer} </s><s>[INST] {user} [/INST]
		// A system message joins the first user message, contents are
		// stripped, and every turn after the first opens with BOS.
		system, haveSystem := "", false
		first := true
		for _, m := range messages {
			switch m.Role {
			case "system":
				system, haveSystem = m.Content, true
			case "user":
				content := m.Content
				if haveSystem {
					content = "<<SYS>>\n" + system + "\n<</SYS>>\n\n" + content
					haveSystem = false
				}
				if !first {
					b.WriteString(ct.BOS)
				}
				first = false
				b.WriteString("[INST] " + strings.TrimSpace(content) + " [/INST]")
			default:
				b.WriteString(" " + strings.TrimSpace(m.Content) + " " + ct.EOS)
			}
		}
		if haveSystem { // a system message with no user turn after it
			if !first {
				b.WriteString(ct.BOS)
			}
			b.WriteString("[INST] " + strings.TrimSpace("<<SYS>>\n"+system+"\n<</SYS>>\n\n") + " [/INST]")
		}
	case "chatml":
		// <|im_start|>{role}\n{content}<|im_end|>\n ... <|im_start|>assistant\n
		for _, m := range messages {
			b.WriteString("<|im_start|>" + m.Role + "\n" + m.Content + "<|im_end|>\n")
		}
		if addAssistantPrompt {
			b.WriteString("<|im_start|>assistant\n")
		}
	case "gemma":
		// Gemma 2 and 3: <start_of_turn>user\n{user}<end_of_turn>\n
		// <start_of_turn>model\n{answer}<end_of_turn>\n ... <start_of_turn>model\n,
		// contents trimmed. Gemma has no system role: as Gemma 3's template
		// (and llama.cpp's built-in format) does, a system message goes
		// before the first user message, followed by a blank line.
		prefix := ""
		for _, m := range messages {
			role, content := m.Role, strings.TrimSpace(m.Content)
			switch role {
			case "system":
				prefix += content + "\n\n"
				continue
			case "assistant":
				role = "model"
			}
			if role == "user" {
				content, prefix = prefix+content, ""
			}
			b.WriteString("<start_of_turn>" + role + "\n" + content + "<end_of_turn>\n")
		}
		if addAssistantPrompt {
			b.WriteString("<start_of_turn>model\n")
		}
	case "phi3":
		// <|system|>\n{system}<|end|>\n<|user|>\n{user}<|end|>\n<|assistant|>\n
		for _, m := range messages {
			b.WriteString("<|" + m.Role + "|>\n" + m.Content + "<|end|>\n")
		}
		if addAssistantPrompt {
			b.WriteString("<|assistant|>\n")
		}
	case "zephyr":
		// <|system|>\n{system}</s>\n<|user|>\n{user}</s>\n<|assistant|>\n
		for _, m := range messages {
			b.WriteString("<|" + m.Role + "|>\n" + m.Content + ct.EOS + "\n")
		}
		if addAssistantPrompt {
			b.WriteString("<|assistant|>\n")
		}
	}
	return b.String()
}
