package serve_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"greta/backend/cpu"
	"greta/engine"
	"greta/gguf"
	"greta/internal/testmodels"
	"greta/model/llama"
	"greta/sample"
	"greta/serve"
	"greta/tokenizer"
)

// The model is loaded once per test binary; each test starts its own
// engine and server on it, one at a time.
var (
	loadOnce sync.Once
	model    *llama.Model
	tok      *tokenizer.Tokenizer
	loadErr  error
)

func loadModel(t *testing.T) (*llama.Model, *tokenizer.Tokenizer) {
	t.Helper()
	path := filepath.Join(testmodels.SharedDir(t, 1), "models", "stories260K.gguf")
	loadOnce.Do(func() {
		f, err := gguf.Open(path)
		if err != nil {
			loadErr = err
			return
		}
		if model, loadErr = llama.Load(f, cpu.New(2), llama.LoadOptions{}); loadErr != nil {
			return
		}
		tok, loadErr = tokenizer.FromGGUF(f)
	})
	if loadErr != nil {
		t.Fatal(loadErr)
	}
	return model, tok
}

type testServer struct {
	url  string
	e    *engine.Engine
	srv  *serve.Server
	stop context.CancelFunc
	done chan error
}

// start serves the model on 127.0.0.1 with the given options.
func start(t *testing.T, o serve.Options, eo engine.Options) *testServer {
	t.Helper()
	m, tk := loadModel(t)
	if eo.Context == 0 {
		eo.Context = 256
	}
	if eo.Parallel == 0 {
		eo.Parallel = 8
	}
	if eo.Pages == 0 {
		eo.Pages = eo.Parallel * eo.Context / 16
	}
	e, err := engine.New(m, tk, eo)
	if err != nil {
		t.Fatal(err)
	}
	if o.ModelID == "" {
		o.ModelID = "stories260K"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s := serve.New(o)
	s.Ready(serve.Model{Engine: e, Fingerprint: "fp-test"})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{url: "http://" + ln.Addr().String(), e: e, srv: s, stop: cancel, done: make(chan error, 1)}
	go func() { ts.done <- s.Serve(ctx, ln, 15*time.Second) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-ts.done:
		case <-time.After(20 * time.Second):
			t.Error("the server did not stop")
		}
		e.Close()
	})
	return ts
}

func (ts *testServer) client(opts ...option.RequestOption) openai.Client {
	return openai.NewClient(append([]option.RequestOption{option.WithBaseURL(ts.url + "/v1/"), option.WithAPIKey("k"),
		option.WithMaxRetries(0), option.WithRequestTimeout(30 * time.Second)}, opts...)...)
}

// post sends a raw JSON body and returns the status, headers and body.
func (ts *testServer) post(t *testing.T, path, body string, hdr ...string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest("POST", ts.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

// wantError checks an answer's status and OpenAI error shape.
func wantError(t *testing.T, what string, status int, body []byte, wantStatus int, wantParam, wantCode string) {
	t.Helper()
	if status != wantStatus {
		t.Fatalf("%s: status %d, want %d: %s", what, status, wantStatus, body)
	}
	var e struct {
		Error map[string]any `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Error == nil {
		t.Fatalf("%s: not OpenAI's error shape: %s", what, body)
	}
	for _, k := range []string{"message", "type", "param", "code"} {
		if _, ok := e.Error[k]; !ok {
			t.Errorf("%s: the error has no %q: %s", what, k, body)
		}
	}
	if msg, _ := e.Error["message"].(string); msg == "" {
		t.Errorf("%s: empty message: %s", what, body)
	}
	if p, _ := e.Error["param"].(string); wantParam != "" && p != wantParam {
		t.Errorf("%s: param %q, want %q", what, p, wantParam)
	}
	if c, _ := e.Error["code"].(string); wantCode != "" && c != wantCode {
		t.Errorf("%s: code %q, want %q", what, c, wantCode)
	}
}

// stillServes checks that a small completion works.
func (ts *testServer) stillServes(t *testing.T, hdr ...string) {
	t.Helper()
	status, _, body := ts.post(t, "/v1/completions", `{"prompt":"Once upon a time","max_tokens":4,"temperature":0}`, hdr...)
	if status != 200 {
		t.Fatalf("the server no longer serves: %d %s", status, body)
	}
}

const story = "Once upon a time"

func TestChatAndCompletions(t *testing.T) {
	ts := start(t, serve.Options{}, engine.Options{})
	c := ts.client()
	ctx := context.Background()

	// A greedy completion equals the engine's own greedy generation.
	comp, err := c.Completions.New(ctx, openai.CompletionNewParams{Model: "stories260K",
		Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String(story)}, MaxTokens: openai.Int(24), Temperature: openai.Float(0)})
	if err != nil {
		t.Fatal(err)
	}
	want, err := ts.e.Generate(ctx, engine.Request{Prompt: tok.Encode(story, true, true), MaxTokens: 24, Sampling: sample.Params{Greedy: true}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := comp.Choices[0].Text; got != tok.Decode(want.Generated) {
		t.Fatalf("completion %q, engine %q", got, tok.Decode(want.Generated))
	}
	if comp.Object != "text_completion" || comp.SystemFingerprint != "fp-test" || comp.Usage.PromptTokens != int64(len(tok.Encode(story, true, true))) ||
		comp.Usage.CompletionTokens != int64(len(want.Generated)) || comp.Usage.TotalTokens != comp.Usage.PromptTokens+comp.Usage.CompletionTokens {
		t.Fatalf("bad completion fields: %+v", comp)
	}
	if fr := comp.Choices[0].FinishReason; fr != "length" && fr != "stop" {
		t.Fatalf("finish_reason %q", fr)
	}

	// Streaming gives the same text, chunk by chunk, and the usage last.
	st := c.Completions.NewStreaming(ctx, openai.CompletionNewParams{Model: "stories260K",
		Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String(story)}, MaxTokens: openai.Int(24), Temperature: openai.Float(0),
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}})
	var text strings.Builder
	chunks, usage := 0, int64(0)
	for st.Next() {
		ch := st.Current()
		for _, x := range ch.Choices {
			text.WriteString(x.Text)
		}
		chunks++
		if ch.Usage.TotalTokens > 0 {
			usage = ch.Usage.CompletionTokens
		}
	}
	if err := st.Err(); err != nil {
		t.Fatal(err)
	}
	if text.String() != comp.Choices[0].Text || chunks < 3 || usage != comp.Usage.CompletionTokens {
		t.Fatalf("stream %q in %d chunks (usage %d), want %q (%d)", text.String(), chunks, usage, comp.Choices[0].Text, comp.Usage.CompletionTokens)
	}

	// Chat, not streaming and streaming, agree.
	msgs := []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("You tell stories."), openai.UserMessage("Tell me one.")}
	chat, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "stories260K", Messages: msgs,
		MaxCompletionTokens: openai.Int(16), Temperature: openai.Float(0)})
	if err != nil {
		t.Fatal(err)
	}
	if chat.Object != "chat.completion" || len(chat.Choices) != 1 || chat.Choices[0].Message.Role != "assistant" || chat.Usage.CompletionTokens == 0 {
		t.Fatalf("bad chat answer: %+v", chat)
	}
	cs := c.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{Model: "stories260K", Messages: msgs,
		MaxCompletionTokens: openai.Int(16), Temperature: openai.Float(0), StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}})
	var acc openai.ChatCompletionAccumulator
	for cs.Next() {
		acc.AddChunk(cs.Current())
	}
	if err := cs.Err(); err != nil {
		t.Fatal(err)
	}
	if got := acc.Choices[0].Message.Content; got != chat.Choices[0].Message.Content {
		t.Fatalf("chat stream %q, chat %q", got, chat.Choices[0].Message.Content)
	}
	if acc.Choices[0].FinishReason != chat.Choices[0].FinishReason || acc.Usage.CompletionTokens != chat.Usage.CompletionTokens {
		t.Fatalf("stream finish %q usage %d, want %q %d", acc.Choices[0].FinishReason, acc.Usage.CompletionTokens, chat.Choices[0].FinishReason, chat.Usage.CompletionTokens)
	}

	// Models, health, tokenize and detokenize.
	models, err := c.Models.List(ctx)
	if err != nil || len(models.Data) != 1 || models.Data[0].ID != "stories260K" {
		t.Fatalf("models: %+v %v", models, err)
	}
	resp, err := http.Get(ts.url + "/health")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("health: %v %v", resp, err)
	}
	resp.Body.Close()
	status, _, body := ts.post(t, "/tokenize", `{"content":"Once upon a time"}`)
	var toks struct{ Tokens []int32 }
	if status != 200 || json.Unmarshal(body, &toks) != nil || fmt.Sprint(toks.Tokens) != fmt.Sprint(tok.Encode(story, false, true)) {
		t.Fatalf("tokenize: %d %s", status, body)
	}
	b, _ := json.Marshal(map[string]any{"tokens": toks.Tokens})
	status, _, body = ts.post(t, "/detokenize", string(b))
	if status != 200 || !strings.Contains(string(body), `"content":"Once upon a time"`) {
		t.Fatalf("detokenize: %d %s", status, body)
	}
}

func TestStopSeedLogprobsN(t *testing.T) {
	ts := start(t, serve.Options{}, engine.Options{})
	c := ts.client()
	ctx := context.Background()
	prompt := openai.CompletionNewParamsPromptUnion{OfString: openai.String(story)}
	full, err := c.Completions.New(ctx, openai.CompletionNewParams{Model: "stories260K", Prompt: prompt, MaxTokens: openai.Int(40), Temperature: openai.Float(0)})
	if err != nil {
		t.Fatal(err)
	}
	text := full.Choices[0].Text
	// Stop at a word in the middle: the text ends just before it.
	words := strings.Fields(text)
	if len(words) < 6 {
		t.Fatalf("the greedy text is too short: %q", text)
	}
	stopAt := " " + words[4]
	cut, err := c.Completions.New(ctx, openai.CompletionNewParams{Model: "stories260K", Prompt: prompt, MaxTokens: openai.Int(40), Temperature: openai.Float(0),
		Stop: openai.CompletionNewParamsStopUnion{OfStringArray: []string{"zzz", stopAt}}})
	if err != nil {
		t.Fatal(err)
	}
	if want := text[:strings.Index(text, stopAt)]; cut.Choices[0].Text != want || cut.Choices[0].FinishReason != "stop" {
		t.Fatalf("stop %q: got %q (%s), want %q", stopAt, cut.Choices[0].Text, cut.Choices[0].FinishReason, want)
	}

	// A frequency penalty changes even a greedy answer.
	pen, err := c.Completions.New(ctx, openai.CompletionNewParams{Model: "stories260K", Prompt: prompt, MaxTokens: openai.Int(40), Temperature: openai.Float(0),
		FrequencyPenalty: openai.Float(2)})
	if err != nil {
		t.Fatal(err)
	}
	if pen.Choices[0].Text == text {
		t.Fatalf("frequency_penalty 2 left the greedy text as it was: %q", text)
	}

	// The same seed gives the same sample, another seed another one; n
	// choices are n samples.
	sampled := func(seed int64, n int64) []string {
		r, err := c.Completions.New(ctx, openai.CompletionNewParams{Model: "stories260K", Prompt: prompt, MaxTokens: openai.Int(30),
			Temperature: openai.Float(1.5), Seed: openai.Int(seed), N: openai.Int(n)}, option.WithJSONSet("top_k", 0), option.WithJSONSet("min_p", 0))
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for i, ch := range r.Choices {
			if ch.Index != int64(i) {
				t.Fatalf("choice %d has index %d", i, ch.Index)
			}
			out = append(out, ch.Text)
		}
		return out
	}
	a, b, d := sampled(42, 1), sampled(42, 1), sampled(43, 1)
	if a[0] != b[0] {
		t.Fatalf("seed 42 gave %q then %q", a[0], b[0])
	}
	if a[0] == d[0] {
		t.Fatalf("seeds 42 and 43 gave the same text %q", a[0])
	}
	three := sampled(42, 3)
	if len(three) != 3 || three[0] != a[0] || three[1] == three[0] {
		t.Fatalf("n=3 gave %q", three)
	}

	// Chat logprobs: one entry per token, the greedy token first among
	// its top ones, probabilities that make sense.
	chat, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "stories260K",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Tell me a story.")}, MaxTokens: openai.Int(12),
		Temperature: openai.Float(0), Logprobs: openai.Bool(true), TopLogprobs: openai.Int(3)})
	if err != nil {
		t.Fatal(err)
	}
	lp := chat.Choices[0].Logprobs.Content
	if int64(len(lp)) != chat.Usage.CompletionTokens {
		t.Fatalf("%d logprobs for %d tokens", len(lp), chat.Usage.CompletionTokens)
	}
	var joined strings.Builder
	for i, x := range lp {
		if len(x.TopLogprobs) != 3 || x.Logprob > 0 || x.TopLogprobs[0].Token != x.Token || x.TopLogprobs[0].Logprob != x.Logprob ||
			x.TopLogprobs[1].Logprob > x.TopLogprobs[0].Logprob {
			t.Fatalf("token %d: bad logprobs %+v", i, x)
		}
		joined.WriteString(x.Token)
	}
	if strings.TrimSpace(joined.String()) != strings.TrimSpace(chat.Choices[0].Message.Content) {
		t.Errorf("logprob tokens %q, content %q", joined.String(), chat.Choices[0].Message.Content)
	}
	// Completions: logprobs N.
	lc, err := c.Completions.New(ctx, openai.CompletionNewParams{Model: "stories260K", Prompt: prompt, MaxTokens: openai.Int(8),
		Temperature: openai.Float(0), Logprobs: openai.Int(2)})
	if err != nil {
		t.Fatal(err)
	}
	l := lc.Choices[0].Logprobs
	if len(l.Tokens) != 8 || len(l.TokenLogprobs) != 8 || len(l.TopLogprobs) != 8 || len(l.TextOffset) != 8 || len(l.TopLogprobs[0]) != 2 {
		t.Fatalf("completion logprobs: %+v", l)
	}
}

func TestLimitsAndFaults(t *testing.T) {
	ts := start(t, serve.Options{MaxBodyBytes: 4096, ReadHeaderTimeout: 300 * time.Millisecond, IdleTimeout: 400 * time.Millisecond},
		engine.Options{Parallel: 1, QueueSize: 1, Context: 2048, Pages: 256})
	for _, c := range []struct {
		what, path, body string
		status           int
		param, code      string
	}{
		{"body too large", "/v1/completions", `{"prompt":"` + strings.Repeat("a", 5000) + `"}`, 413, "", "request_too_large"},
		{"bad JSON", "/v1/completions", `{"prompt": "x",`, 400, "", ""},
		{"not an object", "/v1/chat/completions", `[1,2]`, 400, "", ""},
		{"empty body", "/v1/chat/completions", ``, 400, "", ""},
		{"wrong type", "/v1/completions", `{"prompt":"x","temperature":"hot"}`, 400, "temperature", ""},
		{"wrong type, nested", "/v1/completions", `{"prompt":"x","stream_options":{"include_usage":3}}`, 400, "stream_options.include_usage", ""},
		{"wrong type, messages", "/v1/chat/completions", `{"messages":"hi"}`, 400, "messages", ""},
		{"bad role", "/v1/chat/completions", `{"messages":[{"role":"wizard","content":"hi"}]}`, 400, "messages[0].role", ""},
		{"image part", "/v1/chat/completions", `{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}`, 400, "messages[0].content[0]", ""},
		{"out of range", "/v1/completions", `{"prompt":"x","top_p":1.5}`, 400, "top_p", ""},
		{"too many stops", "/v1/completions", `{"prompt":"x","stop":["a","b","c","d","e"]}`, 400, "stop", ""},
		{"bad n", "/v1/completions", `{"prompt":"x","n":0}`, 400, "n", ""},
		{"token outside the vocabulary", "/v1/completions", `{"prompt":[1,99999]}`, 400, "", ""},
		{"unknown model", "/v1/completions", `{"model":"gpt-9","prompt":"x"}`, 404, "model", "model_not_found"},
		{"context", "/v1/completions", `{"prompt":"Once upon a time","max_tokens":5000}`, 400, "prompt", "context_length_exceeded"},
		{"context, chat", "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"max_tokens":5000}`, 400, "messages", "context_length_exceeded"},
		{"schema the grammar refuses", "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"string","pattern":"a+"}}}}`, 400, "response_format", ""},
		{"schema missing", "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_schema"}}`, 400, "response_format.json_schema", ""},
		{"bad format type", "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"response_format":{"type":"yaml"}}`, 400, "response_format.type", ""},
		{"unknown endpoint", "/v1/embeddings", `{}`, 404, "", "not_found"},
	} {
		status, _, body := ts.post(t, c.path, c.body)
		wantError(t, c.what, status, body, c.status, c.param, c.code)
	}
	// Unknown fields are ignored.
	if status, _, body := ts.post(t, "/v1/completions", `{"prompt":"x","max_tokens":2,"frobnicate":{"a":[1]},"user":"u"}`); status != 200 {
		t.Fatalf("unknown fields: %d %s", status, body)
	}
	ts.stillServes(t)

	// Queue full: one running (streaming, held open), one waiting, the
	// third refused with 429 and Retry-After.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	long := `{"prompt":"Once upon a time","max_tokens":2000,"ignore_eos":true,"stream":true}`
	first := openStream(t, ctx, ts.url+"/v1/completions", long)
	defer first.Body.Close()
	bufio.NewReader(first.Body).ReadString('\n') // it runs
	go func() {
		req, _ := http.NewRequestWithContext(ctx, "POST", ts.url+"/v1/completions", strings.NewReader(long))
		if resp, err := http.DefaultClient.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	waitFor(t, "a waiting request", func() bool { return ts.e.Stats().Waiting == 1 })
	status, hdr, body := ts.post(t, "/v1/completions", `{"prompt":"x","max_tokens":2}`)
	wantError(t, "queue full", status, body, 429, "", "queue_full")
	if hdr.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
	cancel()
	waitFor(t, "the pool to empty", func() bool { s := ts.e.Stats(); return s.Running == 0 && s.Waiting == 0 && s.PagesUsed == 0 })
	ts.stillServes(t)

	// Header timeout: a client that never finishes its headers is cut off.
	conn, err := net.Dial("tcp", strings.TrimPrefix(ts.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(conn, "POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(conn); err != nil {
		t.Fatalf("the slow client was not cut off: %v", err)
	}
	conn.Close()
	// Idle timeout: a kept-alive connection is closed when idle.
	conn, err = net.Dial("tcp", strings.TrimPrefix(ts.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(conn, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("health on a raw connection: %v %v", resp, err)
	}
	io.Copy(io.Discard, resp.Body)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	t0 := time.Now()
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("the idle connection was not closed: %v", err)
	}
	if d := time.Since(t0); d > 3*time.Second {
		t.Fatalf("the idle connection closed after %v", d)
	}
	conn.Close()
	ts.stillServes(t)
}

func TestAPIKey(t *testing.T) {
	ts := start(t, serve.Options{APIKey: "sesame"}, engine.Options{})
	status, hdr, body := ts.post(t, "/v1/completions", `{"prompt":"x"}`)
	wantError(t, "no key", status, body, 401, "", "invalid_api_key")
	if hdr.Get("WWW-Authenticate") == "" {
		t.Error("401 without WWW-Authenticate")
	}
	status, _, body = ts.post(t, "/v1/completions", `{"prompt":"x"}`, "Authorization", "Bearer wrong")
	wantError(t, "wrong key", status, body, 401, "", "invalid_api_key")
	// The official client sends the key as a bearer token.
	c := ts.client(option.WithAPIKey("sesame"))
	if _, err := c.Completions.New(context.Background(), openai.CompletionNewParams{Model: "stories260K",
		Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String(story)}, MaxTokens: openai.Int(3)}); err != nil {
		t.Fatal(err)
	}
	var apiErr *openai.Error
	wc := ts.client()
	_, err := wc.Completions.New(context.Background(), openai.CompletionNewParams{Model: "stories260K",
		Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String(story)}, MaxTokens: openai.Int(3)})
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 401 || apiErr.Code != "invalid_api_key" {
		t.Fatalf("wrong key through the client: %v", err)
	}
	// Health and metrics need no key.
	for _, p := range []string{"/health", "/metrics"} {
		resp, err := http.Get(ts.url + p)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s: %v %v", p, resp, err)
		}
		resp.Body.Close()
	}
	ts.stillServes(t, "Authorization", "Bearer sesame")
}

// Health says 503 and generation endpoints refuse until Ready.
func TestLoading(t *testing.T) {
	s := serve.New(serve.Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln, time.Second) }()
	defer func() { cancel(); <-done }()
	url := "http://" + ln.Addr().String()
	resp, err := http.Get(url + "/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Fatalf("health while loading: %d", resp.StatusCode)
	}
	resp, err = http.Post(url+"/v1/completions", "application/json", strings.NewReader(`{"prompt":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	wantError(t, "completion while loading", resp.StatusCode, b, 503, "", "loading")
}

func openStream(t *testing.T, ctx context.Context, url, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, "POST", url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("stream: %d %s", resp.StatusCode, b)
	}
	return resp
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// 32 streaming clients hang up mid-answer: every sequence ends and every
// KV page returns to the pool.
func TestDisconnectFreesPages(t *testing.T) {
	ts := start(t, serve.Options{}, engine.Options{Parallel: 32, Context: 1024, Pages: 1024})
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for i := 0; i < 32; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			path, body := "/v1/completions", fmt.Sprintf(`{"prompt":"Once upon a time %d","max_tokens":1000,"ignore_eos":true,"stream":true}`, i)
			if i%2 == 1 {
				path, body = "/v1/chat/completions", fmt.Sprintf(`{"messages":[{"role":"user","content":"story %d"}],"max_tokens":900,"ignore_eos":true,"stream":true}`, i)
			}
			req, _ := http.NewRequestWithContext(ctx, "POST", ts.url+path, strings.NewReader(body))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				errs <- err
				return
			}
			if resp.StatusCode != 200 {
				b, _ := io.ReadAll(resp.Body)
				errs <- fmt.Errorf("client %d: %d %s", i, resp.StatusCode, b)
				return
			}
			br := bufio.NewReader(resp.Body)
			for n := 0; n < 3; { // three events, then hang up
				line, err := br.ReadString('\n')
				if err != nil {
					errs <- fmt.Errorf("client %d: %v", i, err)
					return
				}
				if strings.HasPrefix(line, "data: ") {
					n++
				}
			}
			cancel()
			resp.Body.Close()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	waitFor(t, "every page back in the pool", func() bool {
		s := ts.e.Stats()
		return s.Running == 0 && s.Waiting == 0 && s.PagesUsed == 0
	})
	if s := ts.e.Stats(); s.GenTokens > 32*1000/2 {
		t.Fatalf("%d tokens generated: the clients were not cut mid-answer", s.GenTokens)
	}
	ts.stillServes(t)
}

// Metrics carry the request counts, token counters, latency histograms
// and vLLM's gauges.
func TestMetrics(t *testing.T) {
	ts := start(t, serve.Options{}, engine.Options{})
	ts.stillServes(t)
	ts.post(t, "/v1/completions", `{"prompt":"x","temperature":"hot"}`)
	// The engine publishes its stats after the step that ended the request.
	waitFor(t, "the engine to publish", func() bool { s := ts.e.Stats(); return s.Running == 0 && s.PagesUsed == 0 })
	resp, err := http.Get(ts.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	text := string(b)
	for _, want := range []string{
		`greta_http_requests_total{code="200",endpoint="completions"} 1`,
		`greta_http_requests_total{code="400",endpoint="completions"} 1`,
		"greta_generation_tokens_total 4", "greta_prompt_tokens_total 5",
		"greta_time_to_first_token_seconds_count 1", "greta_inter_token_latency_seconds_count 3",
		"greta_request_duration_seconds_bucket", "greta_requests_waiting 0", "greta_requests_running 0",
		"greta_kv_pages_used 0", "greta_kv_pages_free 128", "greta_prefix_hit_tokens_total",
		"vllm:num_requests_waiting 0", "vllm:num_requests_running 0", "vllm:kv_cache_usage_perc 0",
		`vllm:cache_config_info{block_size="16",num_gpu_blocks="128"} 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// On shutdown, a request in flight finishes within the grace period; new
// connections are refused.
func TestShutdownLetsRequestsFinish(t *testing.T) {
	ts := start(t, serve.Options{}, engine.Options{})
	resp := openStream(t, context.Background(), ts.url+"/v1/completions", `{"prompt":"Once upon a time","max_tokens":30,"ignore_eos":true,"stream":true}`)
	defer resp.Body.Close()
	ts.stop()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(b), "data: [DONE]\n\n") {
		t.Fatalf("the stream was cut at shutdown: %q", b[max(0, len(b)-200):])
	}
	select {
	case err := <-ts.done:
		if err != nil {
			t.Fatal(err)
		}
		ts.done <- nil
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not return")
	}
	if _, err := http.Get(ts.url + "/health"); err == nil {
		t.Fatal("the server still accepts connections after shutdown")
	}
}

// forced is a Constraint that allows only the tokens spelling out a fixed
// text: enough to check that response_format reaches the engine.
type forced struct {
	left string
	tok  *tokenizer.Tokenizer
}

func (f *forced) Mask(logits []float32) {
	for id := range logits {
		p := f.tok.Piece(int32(id))
		if p == "" || !strings.HasPrefix(f.left, p) {
			logits[id] = float32(math.Inf(-1))
		}
	}
}

func (f *forced) Accept(id int32) error {
	p := f.tok.Piece(id)
	if !strings.HasPrefix(f.left, p) {
		return fmt.Errorf("token %d (%q) does not continue %q", id, p, f.left)
	}
	f.left = f.left[len(p):]
	return nil
}

func (f *forced) Done() bool { return f.left == "" }

func TestResponseFormat(t *testing.T) {
	m, tk := loadModel(t)
	e, err := engine.New(m, tk, engine.Options{Parallel: 4, Context: 256, Pages: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	var mu sync.Mutex
	var schemas []string
	got := func() []string { mu.Lock(); defer mu.Unlock(); return slices.Clone(schemas) }
	s := serve.New(serve.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	s.Ready(serve.Model{Engine: e, NewConstraint: func(schema json.RawMessage) (engine.Constraint, error) {
		mu.Lock()
		schemas = append(schemas, string(schema))
		mu.Unlock()
		return &forced{left: `{"name":"Lily","age":3}`, tok: tk}, nil
	}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln, time.Second) }()
	defer func() { cancel(); <-done }()
	c := openai.NewClient(option.WithBaseURL("http://"+ln.Addr().String()+"/v1/"), option.WithAPIKey("k"), option.WithMaxRetries(0))
	schema := map[string]any{"type": "object", "properties": map[string]any{"name": map[string]any{"type": "string"}, "age": map[string]any{"type": "integer"}}}
	r, err := c.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{Model: "greta",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Who?")}, MaxTokens: openai.Int(100), N: openai.Int(2),
		ResponseFormat: openai.ChatCompletionNewParamsResponseFormatUnion{OfJSONSchema: &openai.ResponseFormatJSONSchemaParam{
			JSONSchema: openai.ResponseFormatJSONSchemaJSONSchemaParam{Name: "person", Schema: schema, Strict: openai.Bool(true)}}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range r.Choices {
		if ch.Message.Content != `{"name":"Lily","age":3}` || ch.FinishReason != "stop" {
			t.Fatalf("choice %d: %q (%s)", ch.Index, ch.Message.Content, ch.FinishReason)
		}
	}
	if g := got(); len(g) != 2 || !strings.Contains(g[0], `"age"`) {
		t.Fatalf("NewConstraint got %q, want the schema once per choice", g)
	}
	if _, err := c.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{Model: "greta",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Who?")}, MaxTokens: openai.Int(100),
		ResponseFormat: openai.ChatCompletionNewParamsResponseFormatUnion{OfJSONObject: &openai.ResponseFormatJSONObjectParam{}}}); err != nil {
		t.Fatal(err)
	}
	if g := got(); len(g) != 3 || g[2] != "" {
		t.Fatalf("json_object gave the schemas %q, want none last", g)
	}
}

// Past the grace period, shutdown cancels the requests still running: the
// engine ends them and frees their pages, and Serve returns.
func TestShutdownCancelsAfterGrace(t *testing.T) {
	m, tk := loadModel(t)
	e, err := engine.New(m, tk, engine.Options{Parallel: 1, Context: 2048, Pages: 128})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	s := serve.New(serve.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	s.Ready(serve.Model{Engine: e})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln, time.Millisecond) }()
	resp := openStream(t, context.Background(), "http://"+ln.Addr().String()+"/v1/completions",
		`{"prompt":"Once upon a time","max_tokens":2000,"ignore_eos":true,"stream":true}`)
	defer resp.Body.Close()
	bufio.NewReader(resp.Body).ReadString('\n')
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after the grace period")
	}
	io.Copy(io.Discard, resp.Body)
	waitFor(t, "the pool to empty", func() bool { st := e.Stats(); return st.Running == 0 && st.PagesUsed == 0 })
	if st := e.Stats(); st.GenTokens >= 2000 {
		t.Fatalf("%d tokens: the request was not cancelled", st.GenTokens)
	}
}

// json_schema and json_object through package grammar: every answer of a
// sampled model parses and validates against its schema.
func TestJSONSchema(t *testing.T) {
	ts := start(t, serve.Options{}, engine.Options{Parallel: 8, Context: 1024, Pages: 256})
	c := ts.client()
	schemas := []string{
		`{"type":"object","properties":{"name":{"type":"string","maxLength":12},"age":{"type":"integer"}},"required":["name","age"]}`,
		`{"type":"array","items":{"type":"string","enum":["red","green","blue"]},"minItems":1,"maxItems":4}`,
		`{"type":"object","properties":{"ok":{"type":"boolean"},"n":{"type":"number"},"tag":{"const":"x"},"v":{"anyOf":[{"type":"null"},{"type":"integer"}]}},"required":["ok","tag","v"]}`,
		`{"type":"object","properties":{"pet":{"type":"object","properties":{"kind":{"enum":["dog","cat"]},"legs":{"type":"integer"}},"required":["kind"]}},"required":["pet"]}`,
	}
	for i, src := range schemas {
		var schema map[string]any
		if err := json.Unmarshal([]byte(src), &schema); err != nil {
			t.Fatal(err)
		}
		doc, err := jsonschema.UnmarshalJSON(strings.NewReader(src))
		if err != nil {
			t.Fatal(err)
		}
		comp := jsonschema.NewCompiler()
		if err := comp.AddResource("schema.json", doc); err != nil {
			t.Fatal(err)
		}
		sch, err := comp.Compile("schema.json")
		if err != nil {
			t.Fatal(err)
		}
		r, err := c.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{Model: "stories260K",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Answer in JSON.")}, MaxTokens: openai.Int(600),
			Temperature: openai.Float(0.8), Seed: openai.Int(int64(i)), N: openai.Int(3),
			ResponseFormat: openai.ChatCompletionNewParamsResponseFormatUnion{OfJSONSchema: &openai.ResponseFormatJSONSchemaParam{
				JSONSchema: openai.ResponseFormatJSONSchemaJSONSchemaParam{Name: "s", Schema: schema, Strict: openai.Bool(true)}}}})
		if err != nil {
			t.Fatalf("schema %d: %v", i, err)
		}
		for _, ch := range r.Choices {
			v, err := jsonschema.UnmarshalJSON(strings.NewReader(ch.Message.Content))
			if err != nil {
				t.Fatalf("schema %d choice %d (%s): %q does not parse: %v", i, ch.Index, ch.FinishReason, ch.Message.Content, err)
			}
			if err := sch.Validate(v); err != nil {
				t.Fatalf("schema %d choice %d: %q does not validate: %v", i, ch.Index, ch.Message.Content, err)
			}
			if ch.FinishReason != "stop" {
				t.Fatalf("schema %d choice %d: finish_reason %q", i, ch.Index, ch.FinishReason)
			}
		}
	}
	r, err := c.Completions.New(context.Background(), openai.CompletionNewParams{Model: "stories260K",
		Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String(story)}, MaxTokens: openai.Int(600), Temperature: openai.Float(0)},
		option.WithJSONSet("response_format", map[string]any{"type": "json_object"}))
	if err != nil {
		t.Fatal(err)
	}
	var obj map[string]any
	if err := json.Unmarshal([]byte(r.Choices[0].Text), &obj); err != nil {
		t.Fatalf("json_object: %q (%s): %v", r.Choices[0].Text, r.Choices[0].FinishReason, err)
	}
}

// Greedy answers do not depend on what else runs: 24 requests at once,
// streamed and not, equal each served alone.
func TestConcurrentGreedyEqualsAlone(t *testing.T) {
	ts := start(t, serve.Options{}, engine.Options{Parallel: 8, Context: 256})
	c := ts.client()
	ctx := context.Background()
	const n = 24
	prompt := func(i int) openai.CompletionNewParams {
		return openai.CompletionNewParams{Model: "stories260K", MaxTokens: openai.Int(int64(20 + i%5*8)), Temperature: openai.Float(0),
			Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String(fmt.Sprintf("%s there was a %s named %c", story,
				[]string{"girl", "boy", "dog", "cat"}[i%4], 'A'+i))}}
	}
	alone := make([]string, n)
	for i := range alone {
		r, err := c.Completions.New(ctx, prompt(i))
		if err != nil {
			t.Fatal(err)
		}
		alone[i] = r.Choices[0].Text
	}
	together := make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range together {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%2 == 0 {
				r, err := c.Completions.New(ctx, prompt(i))
				if err != nil {
					errs <- err
					return
				}
				together[i] = r.Choices[0].Text
				return
			}
			st := c.Completions.NewStreaming(ctx, prompt(i))
			var b strings.Builder
			for st.Next() {
				for _, ch := range st.Current().Choices {
					b.WriteString(ch.Text)
				}
			}
			if err := st.Err(); err != nil {
				errs <- err
				return
			}
			together[i] = b.String()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i := range alone {
		if together[i] != alone[i] {
			t.Errorf("request %d: %q with others, %q alone", i, together[i], alone[i])
		}
	}
}
