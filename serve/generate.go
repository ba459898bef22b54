package serve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"greta/engine"
	"greta/sample"
)

// choiceEvent is one engine event of choice idx.
type choiceEvent struct {
	idx int
	ev  engine.Event
}

// submit queues one engine request per choice and merges their streams.
// If one cannot be queued, the others are cancelled (through ctx's
// cancel, which the caller holds) and the error is returned as an answer.
func (s *Server) submit(ctx context.Context, cancel context.CancelFunc, st *ready, reqs []engine.Request) (<-chan choiceEvent, *apiError) {
	chans := make([]<-chan engine.Event, len(reqs))
	for i := range reqs {
		ch, err := st.e.Submit(ctx, reqs[i])
		if err != nil {
			cancel()
			return nil, submitError(err, st.e.Options().Context)
		}
		chans[i] = ch
	}
	out := make(chan choiceEvent, 16)
	var wg sync.WaitGroup
	for i, ch := range chans {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ev := range ch {
				select {
				case out <- choiceEvent{i, ev}:
				case <-ctx.Done():
					// The reader is gone; the engine ends the stream within
					// a step: drain it.
				}
			}
		}()
	}
	go func() {
		wg.Wait()
		close(out)
	}()
	return out, nil
}

// submitError maps an engine refusal to an answer.
func submitError(err error, ctxLen int) *apiError {
	switch {
	case errors.Is(err, engine.ErrContext):
		return &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Param: "messages", Code: "context_length_exceeded",
			Message: fmt.Sprintf("this model's context is %d tokens: %v", ctxLen, err)}
	case errors.Is(err, engine.ErrQueueFull):
		return &apiError{Status: http.StatusTooManyRequests, Type: "rate_limit_error", Code: "queue_full", Message: err.Error(), RetryAfter: "1"}
	case errors.Is(err, engine.ErrClosed):
		return &apiError{Status: http.StatusServiceUnavailable, Type: "unavailable_error", Code: "shutting_down", Message: "the server is shutting down"}
	}
	return badRequest("", "%v", err)
}

// resultError maps a generation that ended in error to an answer.
func resultError(r *engine.Result) *apiError {
	if errors.Is(r.Err, engine.ErrClosed) {
		return &apiError{Status: http.StatusServiceUnavailable, Type: "unavailable_error", Code: "shutting_down", Message: "the server is shutting down"}
	}
	return &apiError{Status: http.StatusInternalServerError, Type: "server_error", Message: fmt.Sprintf("generation failed: %v", r.Err)}
}

// finishReason is OpenAI's name for a stop reason.
func finishReason(r *engine.Result) string {
	switch r.StopReason {
	case engine.StopLength, engine.StopContext:
		return "length"
	}
	return "stop"
}

// requests builds one engine request per choice: seeds differ between
// choices (seed, seed+1, …) so that n > 1 gives n samples, and each gets
// its own constraint.
func (s *Server) requests(st *ready, set *settings, prompt []int32, n, topLogprobs int) ([]engine.Request, *apiError) {
	reqs := make([]engine.Request, n)
	for i := range reqs {
		p := set.sampling
		if set.seeded {
			p.Seed += uint64(i)
		} else {
			p.Seed = sample.RandomSeed()
		}
		reqs[i] = engine.Request{Prompt: prompt, MaxTokens: set.maxTokens, Sampling: p, Stop: set.stop, IgnoreEOS: set.ignoreEOS, TopLogprobs: topLogprobs}
		if set.format != "" {
			var schema json.RawMessage
			if set.format == "json_schema" {
				schema = set.schema
			}
			c, err := st.newConstraint(schema)
			if err != nil {
				return nil, badRequest("response_format", "response_format: %v", err)
			}
			reqs[i].Constraint = c
		}
	}
	return reqs, nil
}

// tracker times the tokens of each choice for the metrics and counts
// what the finished ones computed.
type tracker struct {
	s     *Server
	start time.Time
	last  []time.Time
}

func (s *Server) newTracker(start time.Time, n int) *tracker {
	return &tracker{s: s, start: start, last: make([]time.Time, n)}
}

func (t *tracker) token(idx int) {
	now := time.Now()
	if t.last[idx].IsZero() {
		t.s.metrics.ttft.Observe(now.Sub(t.start).Seconds())
	} else {
		t.s.metrics.itl.Observe(now.Sub(t.last[idx]).Seconds())
	}
	t.last[idx] = now
}

func (t *tracker) done(r *engine.Result, countPrompt bool) {
	if countPrompt {
		t.s.metrics.promptTokens.Add(float64(r.PromptTokens))
	}
	t.s.metrics.genTokens.Add(float64(len(r.Generated)))
}

// sse writes a stream of server-sent events.
type sse struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	err error
}

func startSSE(w http.ResponseWriter) *sse {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("Connection", "keep-alive")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	return &sse{w: w, rc: http.NewResponseController(w)}
}

func (s *sse) send(v any) error {
	if s.err != nil {
		return s.err
	}
	b, err := json.Marshal(v)
	if err != nil {
		s.err = err
		return err
	}
	if _, s.err = fmt.Fprintf(s.w, "data: %s\n\n", b); s.err == nil {
		s.err = s.rc.Flush()
	}
	return s.err
}

func (s *sse) done() {
	if s.err == nil {
		if _, s.err = fmt.Fprint(s.w, "data: [DONE]\n\n"); s.err == nil {
			s.err = s.rc.Flush()
		}
	}
}

// usage is OpenAI's token count of an answer.
type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
	// PromptTokensDetails.CachedTokens is the prefix taken from the cache.
	PromptTokensDetails struct {
		CachedTokens int `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
}

// tokenText is a token's text for logprobs, and its bytes.
func (st *ready) tokenText(id int32) (string, []int) {
	p := st.e.Tokenizer().Piece(id)
	return p, byteList(p)
}
