package generate

import (
	"context"
	"fmt"
	"strings"

	"greta/tokenizer"
)

// Chat is a conversation with a chat model: the messages so far, rendered
// with a chat template, on a Session whose KV cache holds them. Each Send
// feeds only the text the new turn adds to the rendered conversation.
type Chat struct {
	Template *tokenizer.ChatTemplate
	sess     *Session
	tok      *tokenizer.Tokenizer
	system   string
	msgs     []tokenizer.Message
	// fed is the text whose tokens are in the session: the conversation
	// rendered up to the last reply's header, then the reply as generated.
	fed string
	// lastEOG is the end-of-generation token that ended the last reply
	// (not fed), or -1.
	lastEOG int32
	// stale is set when the cache no longer matches fed (a turn cancelled
	// in its prefill): the next Send renders and feeds everything again.
	stale bool
}

// NewChat starts a conversation on sess (emptied) with an optional system
// message.
func NewChat(sess *Session, tok *tokenizer.Tokenizer, tmpl *tokenizer.ChatTemplate, system string) *Chat {
	c := &Chat{Template: tmpl, sess: sess, tok: tok, system: system}
	c.Reset()
	return c
}

// Reset forgets every turn but the system message.
func (c *Chat) Reset() {
	c.sess.Reset()
	c.msgs = nil
	if c.system != "" {
		c.msgs = []tokenizer.Message{{Role: "system", Content: c.system}}
	}
	c.fed, c.lastEOG, c.stale = "", -1, false
}

// Messages returns the conversation so far.
func (c *Chat) Messages() []tokenizer.Message { return c.msgs }

// Session returns the session the conversation runs on.
func (c *Chat) Session() *Session { return c.sess }

// Turn returns the tokens that Send(user) would feed: the whole rendered
// conversation on the first turn, and after that only what the new user
// message adds to it.
func (c *Chat) Turn(user string) []int32 {
	msgs := append(append([]tokenizer.Message{}, c.msgs...), tokenizer.Message{Role: "user", Content: user})
	full := c.Template.Apply(msgs, true)
	if c.sess.Len() == 0 || c.stale {
		// A template that writes BOS itself must not get a second one.
		addBOS := true
		if bos := c.tok.BOS(); bos >= 0 && strings.HasPrefix(full, c.tok.Piece(bos)) {
			addBOS = false
		}
		return c.tok.Encode(full, addBOS, true)
	}
	if strings.HasPrefix(full, c.fed) {
		// The usual case: what is cached is a prefix of the new rendering
		// (the reply's end marker, then the new user turn, follow).
		return c.tok.Encode(full[len(c.fed):], false, true)
	}
	// The template changed the reply as it renders it (trimmed spaces):
	// as llama.cpp does, feed the end token the model chose and what the
	// new message adds to the conversation as rendered.
	prev := c.Template.Apply(c.msgs, false)
	var ids []int32
	if c.lastEOG >= 0 {
		ids = append(ids, c.lastEOG)
	}
	return append(ids, c.tok.Encode(strings.TrimPrefix(full, prev), false, true)...)
}

// Send adds a user message, generates the assistant's reply (streamed
// through o.OnText) and adds it to the conversation. A reply cut short (a
// cancelled ctx, max tokens) is kept as far as it went. When the turn does
// not fit the context, the error wraps ErrContext and the conversation is
// unchanged: Reset it, or start a new one.
func (c *Chat) Send(ctx context.Context, user string, o Options) (*Result, error) {
	if c.stale {
		c.sess.Reset()
	}
	tokens := c.Turn(user)
	if n := c.sess.Len() + len(tokens); n >= c.sess.Context() {
		return nil, fmt.Errorf("%w: the conversation would take %d of the context's %d tokens", ErrContext, n, c.sess.Context())
	}
	msgs := append(append([]tokenizer.Message{}, c.msgs...), tokenizer.Message{Role: "user", Content: user})
	full := c.Template.Apply(msgs, true)
	o.StopAtContext = true
	r, err := c.sess.Generate(ctx, tokens, o)
	if err != nil {
		return r, err
	}
	if r.StopReason == "cancelled" && len(r.Generated) == 0 {
		// Cancelled in the prefill: the cache holds part of the turn.
		c.stale = true
		return r, nil
	}
	var gen strings.Builder
	for _, id := range r.Generated {
		gen.WriteString(c.tok.Piece(id))
	}
	c.msgs = append(msgs, tokenizer.Message{Role: "assistant", Content: r.Text})
	c.fed, c.lastEOG, c.stale = full+gen.String(), r.StopToken, false
	return r, nil
}
