package main

import (
	"strings"

	"greta/tokenizer"
	"greta/tokenizer/template"
)

// chatFormat returns the chat template run --chat renders a prompt with:
// the built-in format --chat-template names, else the model's own Jinja
// template (as greta serve renders it), else a built-in stand-in, with a
// warning saying why.
func (g *genFlags) chatFormat(tok *tokenizer.Tokenizer) (*template.Template, error) {
	if *g.chatTemplate != "" {
		t, err := template.ByName(tok, *g.chatTemplate)
		if err != nil {
			return nil, usageError("--chat-template: %v", err)
		}
		return t, nil
	}
	t := template.FromTokenizer(tok)
	if t.Fallback {
		warnf("%s: using %s", strings.TrimSuffix(t.Why, "; choose one by name ("+strings.Join(tokenizer.ChatTemplateNames, ", ")+")"), t.Name)
	}
	return t, nil
}
