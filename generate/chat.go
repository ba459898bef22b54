package generate

import (
	"context"
	"errors"
	"fmt"

	"greta/tokenizer"
	"greta/tokenizer/template"
)

// ErrTemplate wraps a chat template's refusal to render a conversation
// (its raise_exception: roles out of order, a role it does not support).
// The conversation is unchanged.
var ErrTemplate = errors.New("the chat template refuses the conversation")

// Chat is a conversation with a chat model: the messages so far, rendered
// with a chat template (the model's own Jinja template, or a built-in
// format), on a Session whose KV cache holds them. Each Send renders the
// whole conversation and tokenizes it, as a fresh request would be, then
// keeps the cached tokens that the new rendering starts with and feeds only
// the rest: the cache always holds exactly the rendered conversation, even
// where the template writes a past reply differently from how it was
// generated (trimmed, or tokenized otherwise).
type Chat struct {
	Template *template.Template
	sess     *Session
	tok      *tokenizer.Tokenizer
	system   string
	msgs     []template.Message
}

// NewChat starts a conversation on sess (emptied) with an optional system
// message.
func NewChat(sess *Session, tok *tokenizer.Tokenizer, tmpl *template.Template, system string) *Chat {
	c := &Chat{Template: tmpl, sess: sess, tok: tok, system: system}
	c.Reset()
	return c
}

// Reset forgets every turn but the system message.
func (c *Chat) Reset() {
	c.sess.Reset()
	c.msgs = nil
	if c.system != "" {
		c.msgs = []template.Message{{Role: "system", Content: c.system}}
	}
}

// Messages returns the conversation so far.
func (c *Chat) Messages() []template.Message { return c.msgs }

// Session returns the session the conversation runs on.
func (c *Chat) Session() *Session { return c.sess }

// Prompt returns the tokens of the conversation with user's message added,
// rendered with the generation prompt: what a fresh request for the next
// reply would feed.
func (c *Chat) Prompt(user string) ([]int32, error) {
	msgs := append(append([]template.Message{}, c.msgs...), template.Message{Role: "user", Content: user})
	text, err := c.Template.Apply(msgs, true)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrTemplate, err)
	}
	// Apply leaves BOS out; the vocabulary's add_bos_token puts it back.
	return c.tok.Encode(text, true, true), nil
}

// Turn returns what Send(user) would do: keep the first reuse tokens of
// the session and feed the tokens after them.
func (c *Chat) Turn(user string) (reuse int, feed []int32, err error) {
	ids, err := c.Prompt(user)
	if err != nil {
		return 0, nil, err
	}
	have := c.sess.Tokens()
	for reuse < len(have) && reuse < len(ids) && have[reuse] == ids[reuse] {
		reuse++
	}
	if reuse == len(ids) {
		reuse-- // the last token must be fed, for the logits after it
	}
	return reuse, ids[reuse:], nil
}

// Send adds a user message, generates the assistant's reply (streamed
// through o.OnText) and adds it to the conversation. A reply cut short (a
// cancelled ctx, max tokens) is kept as far as it went; a turn cancelled
// before its first token is not kept. When the turn does not fit the
// context, the error wraps ErrContext, and when the template refuses it,
// ErrTemplate; the conversation is unchanged either way.
func (c *Chat) Send(ctx context.Context, user string, o Options) (*Result, error) {
	reuse, feed, err := c.Turn(user)
	if err != nil {
		return nil, err
	}
	if n := reuse + len(feed); n >= c.sess.Context() {
		return nil, fmt.Errorf("%w: the conversation would take %d of the context's %d tokens", ErrContext, n, c.sess.Context())
	}
	c.sess.Rewind(reuse)
	o.StopAtContext = true
	r, err := c.sess.Generate(ctx, feed, o)
	if err != nil {
		return r, err
	}
	if r.StopReason == "cancelled" && len(r.Generated) == 0 {
		return r, nil
	}
	c.msgs = append(c.msgs, template.Message{Role: "user", Content: user}, template.Message{Role: "assistant", Content: r.Text})
	return r, nil
}
