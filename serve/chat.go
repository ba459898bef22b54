package serve

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"greta/engine"
)

// Chat completion answers, as OpenAI defines them.
type chatLogprob struct {
	Token       string       `json:"token"`
	Logprob     float64      `json:"logprob"`
	Bytes       []int        `json:"bytes"`
	TopLogprobs []topLogprob `json:"top_logprobs"`
}

type topLogprob struct {
	Token   string  `json:"token"`
	Logprob float64 `json:"logprob"`
	Bytes   []int   `json:"bytes"`
}

type chatLogprobs struct {
	Content []chatLogprob `json:"content"`
}

type chatMessageOut struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type chatChoice struct {
	Index        int            `json:"index"`
	Message      chatMessageOut `json:"message"`
	Logprobs     *chatLogprobs  `json:"logprobs"`
	FinishReason string         `json:"finish_reason"`
}

type chatCompletion struct {
	ID                string       `json:"id"`
	Object            string       `json:"object"`
	Created           int64        `json:"created"`
	Model             string       `json:"model"`
	SystemFingerprint string       `json:"system_fingerprint"`
	Choices           []chatChoice `json:"choices"`
	Usage             usage        `json:"usage"`
}

type chatDelta struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
}

type chatChunkChoice struct {
	Index        int           `json:"index"`
	Delta        chatDelta     `json:"delta"`
	Logprobs     *chatLogprobs `json:"logprobs"`
	FinishReason *string       `json:"finish_reason"`
}

type chatChunk struct {
	ID                string            `json:"id"`
	Object            string            `json:"object"`
	Created           int64             `json:"created"`
	Model             string            `json:"model"`
	SystemFingerprint string            `json:"system_fingerprint"`
	Choices           []chatChunkChoice `json:"choices"`
	Usage             any               `json:"usage,omitempty"`
}

var jsonNull = json.RawMessage("null")

func (st *ready) chatLogprob(ev engine.Event, top int) chatLogprob {
	text, b := st.tokenText(ev.Token)
	lp := chatLogprob{Token: text, Logprob: ev.Logprob, Bytes: b, TopLogprobs: []topLogprob{}}
	for _, c := range ev.Top[:min(top, len(ev.Top))] {
		t, tb := st.tokenText(c.ID)
		lp.TopLogprobs = append(lp.TopLogprobs, topLogprob{Token: t, Logprob: c.P, Bytes: tb})
	}
	return lp
}

func (s *Server) chat(w http.ResponseWriter, r *http.Request, st *ready) {
	start := time.Now()
	var req chatRequest
	set, e := s.parseRequest(w, r, &req)
	if e != nil {
		s.fail(w, r, e)
		return
	}
	msgs, e := parseMessages(req.Messages)
	if e != nil {
		s.fail(w, r, e)
		return
	}
	logprobs, top := req.Logprobs != nil && *req.Logprobs, 0
	if req.TopLogprobs != nil {
		top = *req.TopLogprobs
		if top < 0 || top > 20 {
			s.fail(w, r, badRequest("top_logprobs", "top_logprobs %d: want 0 to 20", top))
			return
		}
		if top > 0 && !logprobs {
			s.fail(w, r, badRequest("top_logprobs", "top_logprobs needs logprobs: true"))
			return
		}
	}
	text, err := st.tmpl.Apply(msgs, true)
	if err != nil {
		s.fail(w, r, badRequest("messages", "%v", err))
		return
	}
	prompt := st.e.Tokenizer().Encode(text, true, true)
	engineTop := 0
	if logprobs {
		engineTop = max(top, 1) // the engine gives the chosen token's logprob with the top ones
	}
	reqs, e := s.requests(st, set, prompt, set.n, engineTop)
	if e != nil {
		s.fail(w, r, e)
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	events, e := s.submit(ctx, cancel, st, reqs)
	if e != nil {
		s.fail(w, r, e)
		return
	}
	id, created := newID("chatcmpl-"), time.Now().Unix()
	tr := s.newTracker(start, set.n)
	if set.stream {
		s.chatStream(w, ctx, cancel, st, set, events, tr, id, created, logprobs, top)
		return
	}
	choices := make([]chatChoice, set.n)
	texts := make([]strings.Builder, set.n)
	var u usage
	var failed *engine.Result
	for ce := range events {
		c, ev := &choices[ce.idx], ce.ev
		texts[ce.idx].WriteString(ev.Text)
		if !ev.Done {
			tr.token(ce.idx)
			if logprobs {
				if c.Logprobs == nil {
					c.Logprobs = &chatLogprobs{Content: []chatLogprob{}}
				}
				c.Logprobs.Content = append(c.Logprobs.Content, st.chatLogprob(ev, top))
			}
			continue
		}
		res := ev.Result
		tr.done(res, ce.idx == 0)
		if res.Err != nil && failed == nil {
			failed = res
		}
		c.Index, c.FinishReason = ce.idx, finishReason(res)
		u.PromptTokens, u.PromptTokensDetails.CachedTokens = res.PromptTokens, res.PrefixHit
		u.CompletionTokens += len(res.Generated)
	}
	if r.Context().Err() != nil {
		return // the client is gone
	}
	if failed != nil {
		s.fail(w, r, resultError(failed))
		return
	}
	for i := range choices {
		choices[i].Message = chatMessageOut{Role: "assistant", Content: texts[i].String()}
	}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	writeJSON(w, http.StatusOK, chatCompletion{ID: id, Object: "chat.completion", Created: created, Model: s.o.ModelID,
		SystemFingerprint: st.fp, Choices: choices, Usage: u})
}

func (s *Server) chatStream(w http.ResponseWriter, ctx context.Context, cancel context.CancelFunc, st *ready, set *settings,
	events <-chan choiceEvent, tr *tracker, id string, created int64, logprobs bool, top int) {
	out := startSSE(w)
	chunk := func(c chatChunkChoice) chatChunk {
		ch := chatChunk{ID: id, Object: "chat.completion.chunk", Created: created, Model: s.o.ModelID, SystemFingerprint: st.fp,
			Choices: []chatChunkChoice{c}}
		if set.includeUsage {
			ch.Usage = jsonNull
		}
		return ch
	}
	empty := ""
	for i := 0; i < set.n; i++ {
		if out.send(chunk(chatChunkChoice{Index: i, Delta: chatDelta{Role: "assistant", Content: &empty}})) != nil {
			cancel()
		}
	}
	var u usage
	var failed *engine.Result
	for ce := range events {
		ev := ce.ev
		if !ev.Done {
			tr.token(ce.idx)
		} else {
			tr.done(ev.Result, ce.idx == 0)
			u.PromptTokens, u.PromptTokensDetails.CachedTokens = ev.Result.PromptTokens, ev.Result.PrefixHit
			u.CompletionTokens += len(ev.Result.Generated)
			if ev.Result.Err != nil && failed == nil {
				failed = ev.Result
			}
		}
		if out.err != nil {
			continue // the client is gone: drain until the engine ends
		}
		c := chatChunkChoice{Index: ce.idx}
		if ev.Text != "" {
			text := ev.Text
			c.Delta.Content = &text
		}
		if logprobs && !ev.Done {
			c.Logprobs = &chatLogprobs{Content: []chatLogprob{st.chatLogprob(ev, top)}}
		}
		if c.Delta.Content != nil || c.Logprobs != nil {
			if out.send(chunk(c)) != nil {
				cancel()
				continue
			}
		}
		if ev.Done && ev.Result.Err == nil {
			fr := finishReason(ev.Result)
			if out.send(chunk(chatChunkChoice{Index: ce.idx, FinishReason: &fr})) != nil {
				cancel()
			}
		}
	}
	if out.err != nil || ctx.Err() != nil {
		return
	}
	if failed != nil {
		out.send(resultError(failed).body())
		out.done()
		return
	}
	if set.includeUsage {
		u.TotalTokens = u.PromptTokens + u.CompletionTokens
		out.send(chatChunk{ID: id, Object: "chat.completion.chunk", Created: created, Model: s.o.ModelID, SystemFingerprint: st.fp,
			Choices: []chatChunkChoice{}, Usage: u})
	}
	out.done()
}
