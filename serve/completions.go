package serve

import (
	"context"
	"net/http"
	"strings"
	"time"

	"greta/engine"
)

// Completion answers (OpenAI's legacy completions API).
type completionLogprobs struct {
	Tokens        []string             `json:"tokens"`
	TokenLogprobs []float64            `json:"token_logprobs"`
	TopLogprobs   []map[string]float64 `json:"top_logprobs"`
	TextOffset    []int                `json:"text_offset"`
}

type completionChoice struct {
	Index        int                 `json:"index"`
	Text         string              `json:"text"`
	Logprobs     *completionLogprobs `json:"logprobs"`
	FinishReason *string             `json:"finish_reason"`
}

type completion struct {
	ID                string             `json:"id"`
	Object            string             `json:"object"`
	Created           int64              `json:"created"`
	Model             string             `json:"model"`
	SystemFingerprint string             `json:"system_fingerprint"`
	Choices           []completionChoice `json:"choices"`
	Usage             any                `json:"usage,omitempty"`
}

// add appends one token's log-probabilities; offset is the text's length
// before the token.
func (l *completionLogprobs) add(st *ready, ev engine.Event, top, offset int) {
	text, _ := st.tokenText(ev.Token)
	l.Tokens = append(l.Tokens, text)
	l.TokenLogprobs = append(l.TokenLogprobs, ev.Logprob)
	m := map[string]float64{}
	for _, c := range ev.Top[:min(top, len(ev.Top))] {
		t, _ := st.tokenText(c.ID)
		if _, ok := m[t]; !ok {
			m[t] = c.P
		}
	}
	l.TopLogprobs = append(l.TopLogprobs, m)
	l.TextOffset = append(l.TextOffset, offset)
}

func (s *Server) completions(w http.ResponseWriter, r *http.Request, st *ready) {
	start := time.Now()
	var req completionRequest
	set, e := s.parseRequest(w, r, &req)
	if e != nil {
		s.fail(w, r, e)
		return
	}
	prompts, e := parsePrompt(req.Prompt)
	if e != nil {
		s.fail(w, r, e)
		return
	}
	if len(prompts)*set.n > maxChoices {
		s.fail(w, r, badRequest("n", "%d prompts × n %d: at most %d choices in one request", len(prompts), set.n, maxChoices))
		return
	}
	top, withLogprobs := 0, req.Logprobs != nil
	if withLogprobs {
		top = *req.Logprobs
		if top < 0 || top > 20 {
			s.fail(w, r, badRequest("logprobs", "logprobs %d: want 0 to 20", top))
			return
		}
	}
	var reqs []engine.Request
	for _, p := range prompts {
		ids := p.tokens
		if p.isText {
			ids = st.e.Tokenizer().Encode(p.text, true, true)
		}
		rs, e := s.requests(st, set, ids, set.n, map[bool]int{true: max(top, 1)}[withLogprobs])
		if e != nil {
			s.fail(w, r, e)
			return
		}
		reqs = append(reqs, rs...)
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	events, e := s.submit(ctx, cancel, st, reqs)
	if e != nil {
		if e.Code == "context_length_exceeded" {
			e.Param = "prompt"
		}
		s.fail(w, r, e)
		return
	}
	id, created := newID("cmpl-"), time.Now().Unix()
	tr := s.newTracker(start, len(reqs))
	choices := make([]completionChoice, len(reqs))
	texts := make([]strings.Builder, len(reqs))
	var u usage
	var failed *engine.Result
	var out *sse
	if set.stream {
		out = startSSE(w)
	}
	chunk := func(c completionChoice) completion {
		ch := completion{ID: id, Object: "text_completion", Created: created, Model: s.o.ModelID, SystemFingerprint: st.fp,
			Choices: []completionChoice{c}}
		if set.includeUsage {
			ch.Usage = jsonNull
		}
		return ch
	}
	for ce := range events {
		i, ev := ce.idx, ce.ev
		c := &choices[i]
		c.Index = i
		var lp *completionLogprobs
		if !ev.Done {
			tr.token(i)
			if withLogprobs {
				if c.Logprobs == nil {
					c.Logprobs = &completionLogprobs{}
				}
				lp = &completionLogprobs{}
				lp.add(st, ev, top, texts[i].Len())
				c.Logprobs.add(st, ev, top, texts[i].Len())
			}
		} else {
			res := ev.Result
			tr.done(res, i%set.n == 0)
			if i%set.n == 0 {
				u.PromptTokens += res.PromptTokens
				u.PromptTokensDetails.CachedTokens += res.PrefixHit
			}
			u.CompletionTokens += len(res.Generated)
			if res.Err != nil && failed == nil {
				failed = res
			}
			fr := finishReason(res)
			c.FinishReason = &fr
		}
		texts[i].WriteString(ev.Text)
		if out == nil || out.err != nil {
			continue
		}
		if ev.Text != "" || lp != nil {
			if out.send(chunk(completionChoice{Index: i, Text: ev.Text, Logprobs: lp})) != nil {
				cancel()
				continue
			}
		}
		if ev.Done && ev.Result.Err == nil {
			if out.send(chunk(completionChoice{Index: i, FinishReason: c.FinishReason})) != nil {
				cancel()
			}
		}
	}
	if r.Context().Err() != nil || ctx.Err() != nil && failed == nil {
		return // the client is gone
	}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	if out != nil {
		if out.err != nil {
			return
		}
		if failed != nil {
			out.send(resultError(failed).body())
		} else if set.includeUsage {
			out.send(completion{ID: id, Object: "text_completion", Created: created, Model: s.o.ModelID, SystemFingerprint: st.fp,
				Choices: []completionChoice{}, Usage: u})
		}
		out.done()
		return
	}
	if failed != nil {
		s.fail(w, r, resultError(failed))
		return
	}
	for i := range choices {
		choices[i].Text = texts[i].String()
	}
	writeJSON(w, http.StatusOK, completion{ID: id, Object: "text_completion", Created: created, Model: s.o.ModelID,
		SystemFingerprint: st.fp, Choices: choices, Usage: u})
}
