package generate_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"greta/generate"
	"greta/tokenizer/template"
)

// Jinja templates for the chat tests: ChatML, and one in Llama 3's style
// that trims contents and writes BOS itself, so that a past reply renders
// differently from how it was generated (a leading space is dropped).
const (
	jinjaChatML = `{% for message in messages %}{{'<|im_start|>' + message['role'] + '
' + message['content'] + '<|im_end|>' + '
'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant
' }}{% endif %}`
	jinjaTrim   = `{% for message in messages %}{% set content = '[' + message['role'] + ']' + message['content'] | trim + '</s>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '[assistant]' }}{% endif %}`
	jinjaRefuse = `{% for message in messages %}{% if message['content'] == 'forbidden' %}{{ raise_exception('no such word') }}{% endif %}{{ message['role'] + ': ' + message['content'] + '
' }}{% endfor %}{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}`
)

// Each turn of a chat leaves in the cache exactly the tokens of the whole
// conversation rendered afresh, its reply is the one a fresh run on those
// tokens gives, and from the second turn on the earlier turns' tokens are
// kept in the cache rather than fed again; with the model's own Jinja
// templates as with a built-in format.
func TestChatRendersWholeConversation(t *testing.T) {
	l := tiny(t)
	bos, eos := l.tok.TokenText(l.tok.BOS()), l.tok.TokenText(l.tok.EOS())
	builtin, err := template.ByName(l.tok, "chatml")
	if err != nil {
		t.Fatal(err)
	}
	tmpls := map[string]*template.Template{"built-in chatml": builtin}
	for name, src := range map[string]string{"jinja chatml": jinjaChatML, "jinja trim": jinjaTrim} {
		if tmpls[name], err = template.Compile(src, bos, eos); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	for name, tm := range tmpls {
		st, _ := l.m.NewState(512, 16, false)
		c := generate.NewChat(generate.NewSession(l.m, l.tok, st), l.tok, tm, "be brief")
		prev := 0
		for i, user := range []string{"hello there", "  and again ", "one more"} {
			want, err := c.Prompt(user)
			if err != nil {
				t.Fatalf("%s turn %d: %v", name, i, err)
			}
			reuse, feed, err := c.Turn(user)
			if err != nil || reuse+len(feed) != len(want) || !slices.Equal(feed, want[reuse:]) {
				t.Fatalf("%s turn %d: reuse %d, feed %d, want %d tokens: %v", name, i, reuse, len(feed), len(want), err)
			}
			if i > 0 && reuse < prev {
				t.Errorf("%s turn %d: %d tokens reused, fewer than the %d of the last turn's prompt", name, i, reuse, prev)
			}
			r, err := c.Send(context.Background(), user, greedy(12))
			if err != nil {
				t.Fatalf("%s turn %d: %v", name, i, err)
			}
			if got := c.Session().Tokens(); len(got) < len(want) || !slices.Equal(got[:len(want)], want) {
				t.Fatalf("%s turn %d: the cache does not hold the rendered conversation", name, i)
			}
			fresh, _ := l.m.NewState(512, 16, false)
			f, err := generate.Run(l.m, l.tok, fresh, want, greedy(12))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(r.Generated, f.Generated) {
				t.Fatalf("%s turn %d: the chat's reply %v, a fresh run's %v", name, i, r.Generated, f.Generated)
			}
			prev = len(want)
		}
		if n := len(c.Messages()); n != 7 {
			t.Errorf("%s: %d messages after three turns, want 7", name, n)
		}
	}
}

// A turn the template refuses is an ErrTemplate and leaves the
// conversation as it was; the next turn goes on from it.
func TestChatTemplateRefusal(t *testing.T) {
	l := tiny(t)
	tm, err := template.Compile(jinjaRefuse, "", "")
	if err != nil {
		t.Fatal(err)
	}
	st, _ := l.m.NewState(256, 16, false)
	c := generate.NewChat(generate.NewSession(l.m, l.tok, st), l.tok, tm, "")
	if _, err := c.Send(context.Background(), "hi", greedy(4)); err != nil {
		t.Fatal(err)
	}
	before := slices.Clone(c.Session().Tokens())
	if _, err := c.Send(context.Background(), "forbidden", greedy(4)); !errors.Is(err, generate.ErrTemplate) {
		t.Fatalf("got %v, want ErrTemplate", err)
	}
	if len(c.Messages()) != 2 || !slices.Equal(c.Session().Tokens(), before) {
		t.Fatalf("a refused turn changed the conversation: %d messages", len(c.Messages()))
	}
	if _, err := c.Send(context.Background(), "fine", greedy(4)); err != nil || len(c.Messages()) != 4 {
		t.Fatalf("%v, %d messages", err, len(c.Messages()))
	}
}

// Rewind forgets the tail of a session: generating after it gives what a
// fresh run on the kept tokens and the new ones gives, whether the cut
// falls in the cache or on the pending last token.
func TestSessionRewind(t *testing.T) {
	l := tiny(t)
	for _, back := range []int{0, 1, 4} {
		st, _ := l.m.NewState(128, 8, false)
		ss := generate.NewSession(l.m, l.tok, st)
		if _, err := ss.Generate(context.Background(), []int32{1, 10, 11, 12, 13}, greedy(6)); err != nil {
			t.Fatal(err)
		}
		held := slices.Clone(ss.Tokens())
		keep := len(held) - back
		ss.Rewind(keep)
		if !slices.Equal(ss.Tokens(), held[:keep]) {
			t.Fatalf("back %d: tokens %v, want %v", back, ss.Tokens(), held[:keep])
		}
		r, err := ss.Generate(context.Background(), []int32{30, 31}, greedy(6))
		if err != nil {
			t.Fatal(err)
		}
		fresh, _ := l.m.NewState(128, 8, false)
		f, err := generate.Run(l.m, l.tok, fresh, append(slices.Clone(held[:keep]), 30, 31), greedy(6))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(r.Generated, f.Generated) {
			t.Fatalf("back %d: after the rewind %v, fresh %v", back, r.Generated, f.Generated)
		}
	}
}
