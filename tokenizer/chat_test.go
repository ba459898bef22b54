package tokenizer

import (
	"slices"
	"strings"
	"testing"
)

// Template sources as published with the models (tokenizer.chat_template).
const (
	llama3Jinja    = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
	llama2Jinja    = "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
	tinyLlamaJinja = "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"
	chatMLJinja    = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
)

func TestDetectChatTemplate(t *testing.T) {
	for src, want := range map[string]string{
		llama3Jinja: "llama3", llama2Jinja: "llama2", tinyLlamaJinja: "zephyr",
		"llama3": "llama3", "llama2": "llama2", "zephyr": "zephyr", chatMLJinja: "chatml", "chatml": "chatml",
	} {
		ct, err := DetectChatTemplate(src)
		if err != nil || ct.Name != want {
			t.Errorf("%.40q: got %v, %v; want %s", src, ct, err, want)
		}
	}
	for _, src := range []string{"", "llama4"} {
		if ct, err := DetectChatTemplate(src); err == nil {
			t.Errorf("%.40q: want an error, got %s", src, ct.Name)
		}
	}
	if _, err := NewChatTemplate("vicuna"); err == nil || !strings.Contains(err.Error(), "llama3, llama2, zephyr, chatml") {
		t.Errorf("unknown name: %v", err)
	}
}

var conversation = []Message{
	{Role: "system", Content: "You are a helpful assistant."},
	{Role: "user", Content: " What is 2+2? "},
	{Role: "assistant", Content: "4."},
	{Role: "user", Content: "And 3+3?"},
}

func TestChatLlama3(t *testing.T) {
	bpe := withMetadata(t, "vocab/ggml-vocab-llama-bpe.gguf", map[string]any{"tokenizer.chat_template": llama3Jinja})
	ct, err := bpe.ChatTemplate()
	if err != nil {
		t.Fatal(err)
	}
	got := ct.Apply(conversation, true)
	want := "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|>" +
		"<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>" +
		"<|start_header_id|>assistant<|end_header_id|>\n\n4.<|eot_id|>" +
		"<|start_header_id|>user<|end_header_id|>\n\nAnd 3+3?<|eot_id|>" +
		"<|start_header_id|>assistant<|end_header_id|>\n\n"
	if got != want {
		t.Fatalf("Apply:\n got %q\nwant %q", got, want)
	}
	ids := bpe.Encode(got, true, true)
	// <|begin_of_text|> <|start_header_id|> system <|end_header_id|> \n\n
	if !slices.Equal(ids[:5], []int32{128000, 128006, 9125, 128007, 271}) {
		t.Errorf("prompt starts %v", ids[:5])
	}
	if n := count(ids, 128009); n != 4 {
		t.Errorf("%d <|eot_id|> tokens, want 4", n)
	}
	if !strings.HasSuffix(ct.Apply(conversation[:2], false), "What is 2+2?<|eot_id|>") {
		t.Error("without the assistant prompt the text must end after the last turn")
	}
}

func TestChatLlama2(t *testing.T) {
	spm := loadShared(t, "vocab/ggml-vocab-llama-spm.gguf")
	ct, err := spm.ChatTemplateByName("llama2")
	if err != nil {
		t.Fatal(err)
	}
	got := ct.Apply(conversation, true)
	// Meta's template strips the joined system+user text, so the user's
	// leading space stays.
	want := "[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\n What is 2+2? [/INST] 4. </s><s>[INST] And 3+3? [/INST]"
	if got != want {
		t.Fatalf("Apply:\n got %q\nwant %q", got, want)
	}
	ids := spm.Encode(got, true, true)
	if ids[0] != 1 || count(ids, 1) != 2 || count(ids, 2) != 1 {
		t.Errorf("BOS/EOS placement in %v", ids)
	}
	if got := ct.Apply([]Message{{Role: "user", Content: "Hi"}}, true); got != "[INST] Hi [/INST]" {
		t.Errorf("single turn: %q", got)
	}
}

func TestChatZephyr(t *testing.T) {
	stories := withMetadata(t, "models/stories260K.gguf", map[string]any{"tokenizer.chat_template": tinyLlamaJinja})
	ct, err := stories.ChatTemplate()
	if err != nil {
		t.Fatal(err)
	}
	got := ct.Apply(conversation[:2], true)
	want := "<|system|>\nYou are a helpful assistant.</s>\n<|user|>\n What is 2+2? </s>\n<|assistant|>\n"
	if got != want {
		t.Fatalf("Apply:\n got %q\nwant %q", got, want)
	}
	if ids := stories.Encode(got, true, true); count(ids, 2) != 2 {
		t.Errorf("want two </s> tokens in %v", ids)
	}
	// A vocabulary without tokenizer.chat_template gets chatml, marked as
	// a fallback with the reason, so that the CLI can warn.
	ct, err = loadShared(t, "vocab/ggml-vocab-llama-spm.gguf").ChatTemplate()
	if err != nil || ct.Name != "chatml" || !ct.Fallback || !strings.Contains(ct.Why, "no chat template") {
		t.Errorf("fallback: %+v, %v", ct, err)
	}
}

func TestChatML(t *testing.T) {
	ct, _ := NewChatTemplate("chatml")
	got := ct.Apply(conversation[:2], true)
	want := "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n What is 2+2? <|im_end|>\n<|im_start|>assistant\n"
	if got != want {
		t.Fatalf("Apply:\n got %q\nwant %q", got, want)
	}
	if got := ct.Apply(conversation[:3], false); !strings.HasSuffix(got, "<|im_start|>assistant\n4.<|im_end|>\n") {
		t.Errorf("with the answer: %q", got)
	}
}

func count(ids []int32, id int32) int {
	n := 0
	for _, x := range ids {
		if x == id {
			n++
		}
	}
	return n
}

// Gemma has no system role: the built-in format puts the system message
// before the first user message and a blank line, as Gemma 3's template
// does (first_user_prefix); Phi-3's markers are not taken for Zephyr's.
func TestGemmaAndPhi3Formats(t *testing.T) {
	msgs := []Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: " Hi "}, {Role: "assistant", Content: "Hello."}, {Role: "user", Content: "Bye"}}
	g, _ := NewChatTemplate("gemma")
	want := "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
	if got := g.Apply(msgs, true); got != want {
		t.Errorf("gemma:\n got %q\nwant %q", got, want)
	}
	ct, err := DetectChatTemplate("{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{{ '<|assistant|>\n' }}")
	if err != nil || ct.Name != "phi3" {
		t.Fatalf("a Phi-3 template detected as %v, %v", ct, err)
	}
	if got := ct.Apply(msgs[1:2], true); got != "<|user|>\n Hi <|end|>\n<|assistant|>\n" {
		t.Errorf("phi3: %q", got)
	}
}
