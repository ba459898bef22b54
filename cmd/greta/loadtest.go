package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"
)

func init() {
	register("loadtest", "drive an OpenAI-compatible server (greta serve, llama-server, vLLM) and report throughput and latency", cmdLoadtest)
}

type loadConfig struct {
	url, model, key, endpoint string
	requests, promptTokens    int
	maxTokens                 int
	stream, ignoreEOS         bool
	duration, timeout         time.Duration
	seed                      uint64
	verify                    int
}

// loadResult is one request's measurements.
type loadResult struct {
	err          error
	index        int    // the request's number: its prompt
	text         string // the answer's text
	retried      bool   // sent again after the server closed an idle connection
	start        time.Time
	ttft         time.Duration // first text; 0 when none came
	gaps         []time.Duration
	outTokens    int
	promptTokens int
	total        time.Duration
}

// levelReport is one concurrency level's figures.
type levelReport struct {
	Concurrency    int      `json:"concurrency"`
	Requests       int      `json:"requests"`
	Errors         int      `json:"errors"`
	Retried        int      `json:"retried,omitempty"` // sent twice: the server closed the idle connection the first went out on
	FirstError     string   `json:"first_error,omitempty"`
	Seconds        float64  `json:"seconds"`
	RequestsPerSec float64  `json:"requests_per_s"`
	OutputTokens   int      `json:"output_tokens"`
	OutputTokPerS  float64  `json:"output_tokens_per_s"`
	PromptTokens   float64  `json:"prompt_tokens_mean"`
	TTFTms         []string `json:"-"`
	TTFT           pcts     `json:"ttft_ms"`
	ITL            pcts     `json:"itl_ms"`
	Latency        pcts     `json:"latency_ms"`
	// Verified answers were asked again alone (one request at a time, after
	// the level); Mismatches of them differed from the answer under load.
	Verified      int    `json:"verified,omitempty"`
	Mismatches    int    `json:"mismatches,omitempty"`
	FirstMismatch string `json:"first_mismatch,omitempty"`
}

type pcts struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	N   int     `json:"n"`
}

func percentiles(d []time.Duration) pcts {
	if len(d) == 0 {
		return pcts{}
	}
	slices.Sort(d)
	at := func(p float64) float64 {
		i := int(p*float64(len(d)-1) + 0.5)
		return float64(d[i].Microseconds()) / 1000
	}
	return pcts{P50: at(0.5), P90: at(0.9), P99: at(0.99), N: len(d)}
}

func cmdLoadtest(args []string) error {
	fs := newFlags("loadtest", "--url URL [--concurrency 1,16,64] [--requests N] [flags]")
	url := fs.String("url", "", "the server's base URL, e.g. http://127.0.0.1:8080 (required)")
	conc := fs.String("concurrency", "1,16,64", "comma-separated client counts; one run at each")
	requests := fs.Int("requests", 64, "requests at each concurrency level")
	promptTokens := fs.Int("prompt-tokens", 128, "prompt length, in words of about one token each")
	maxTokens := fs.Int("max-tokens", 128, "max_tokens of each request")
	stream := fs.Bool("stream", true, "stream the answers (TTFT and inter-token latency need it)")
	asJSON := fs.Bool("json", false, "print the results as JSON")
	duration := fs.Duration("duration", 5*time.Minute, "each level starts no request after this long; those running finish (each within --timeout)")
	model := fs.String("model", "", "model name to send (default: the server's first in /v1/models)")
	key := fs.String("api-key", "", "bearer key (default: $OPENAI_API_KEY)")
	endpoint := fs.String("endpoint", "completions", "completions or chat")
	ignoreEOS := fs.Bool("ignore-eos", true, "ask for max_tokens exactly (llama.cpp's and GRETA's ignore_eos; other servers ignore it)")
	timeout := fs.Duration("timeout", 5*time.Minute, "limit of one request")
	seed := fs.Uint64("seed", 1, "seed of the prompts' words")
	verify := fs.Int("verify", 0, "after each level, ask this many of its answered requests again one at a time (-1: all) and count the answers that differ (the requests are greedy: on a batch-invariant server, none should)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *url == "" {
		return usageError("--url is required")
	}
	levels, err := parseInts(*conc)
	if err != nil {
		return usageError("--concurrency %q: %v", *conc, err)
	}
	for _, v := range levels {
		if v < 1 || v > 4096 {
			return usageError("--concurrency %d: want 1 to 4096", v)
		}
	}
	if *requests < 1 || *promptTokens < 1 || *maxTokens < 1 {
		return usageError("--requests, --prompt-tokens and --max-tokens must be at least 1")
	}
	if *endpoint != "completions" && *endpoint != "chat" {
		return usageError("--endpoint %q: want completions or chat", *endpoint)
	}
	if *duration <= 0 || *timeout <= 0 {
		return usageError("--duration and --timeout must be positive")
	}
	if *verify < -1 {
		return usageError("--verify %d: want -1 (all), 0 (none) or a count", *verify)
	}
	cfg := loadConfig{url: strings.TrimRight(*url, "/"), model: *model, key: *key, endpoint: *endpoint, requests: *requests,
		promptTokens: *promptTokens, maxTokens: *maxTokens, stream: *stream, ignoreEOS: *ignoreEOS, duration: *duration, timeout: *timeout, seed: *seed, verify: *verify}
	if cfg.key == "" {
		cfg.key = os.Getenv("OPENAI_API_KEY")
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: slices.Max(levels), MaxIdleConns: slices.Max(levels),
		IdleConnTimeout: 30 * time.Second}}
	if cfg.model == "" {
		if cfg.model, err = firstModel(client, cfg); err != nil {
			return err
		}
	}
	var reports []levelReport
	for _, c := range levels {
		if !*asJSON {
			fmt.Fprintf(os.Stderr, "concurrency %d: up to %d requests, for at most %v ...\n", c, cfg.requests, cfg.duration)
		}
		reports = append(reports, runLevel(client, cfg, c))
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"url": cfg.url, "model": cfg.model, "endpoint": cfg.endpoint, "stream": cfg.stream,
			"prompt_tokens": cfg.promptTokens, "max_tokens": cfg.maxTokens, "levels": reports})
	}
	fmt.Fprintf(stdout, "%s, model %s, %s, prompt ≈%d tokens, max_tokens %d, stream %v\n", cfg.url, cfg.model, cfg.endpoint, cfg.promptTokens, cfg.maxTokens, cfg.stream)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "conc\treqs\terrors\treq/s\tout tok/s\tTTFT p50\tp90\tp99 ms\tITL p50\tp90\tp99 ms\tlatency p50\tp99 ms\tprompt tok\t")
	for _, r := range reports {
		fmt.Fprintf(tw, "%d\t%d\t%d\t%.2f\t%.1f\t%.1f\t%.1f\t%.1f\t%.2f\t%.2f\t%.2f\t%.0f\t%.0f\t%.0f\t\n", r.Concurrency, r.Requests, r.Errors, r.RequestsPerSec,
			r.OutputTokPerS, r.TTFT.P50, r.TTFT.P90, r.TTFT.P99, r.ITL.P50, r.ITL.P90, r.ITL.P99, r.Latency.P50, r.Latency.P99, r.PromptTokens)
	}
	tw.Flush()
	for _, r := range reports {
		if r.Errors > 0 {
			fmt.Fprintf(stdout, "concurrency %d: %d errors; the first: %s\n", r.Concurrency, r.Errors, r.FirstError)
		}
		if r.Verified > 0 {
			fmt.Fprintf(stdout, "concurrency %d: %d answers asked again alone, %d differ", r.Concurrency, r.Verified, r.Mismatches)
			if r.Mismatches > 0 {
				fmt.Fprintf(stdout, "; the first: %s", r.FirstMismatch)
			}
			fmt.Fprintln(stdout)
		}
	}
	return nil
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("%q is not a number", f)
		}
		out = append(out, v)
	}
	return out, nil
}

func (c loadConfig) request(ctx context.Context, method, path string, body []byte) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.url+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	return req, nil
}

// firstModel asks /v1/models for the served model's name.
func firstModel(client *http.Client, c loadConfig) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := c.request(ctx, "GET", "/v1/models", nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", fmt.Errorf("%s: %w", c.url, err)
	}
	defer resp.Body.Close()
	var list struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&list) != nil || len(list.Data) == 0 {
		return "", fmt.Errorf("%s/v1/models: status %d, no model listed (give --model)", c.url, resp.StatusCode)
	}
	return list.Data[0].ID, nil
}

// loadWords make prompts of about one token per word on Llama-family
// vocabularies.
var loadWords = strings.Fields("the a of and to in is was that for on with as at by from it he she they we you this an be are or his her one all there their which when time day way man people little big good new old long great small large next young early place world house school story girl boy dog cat tree park sun water friend mother father happy play went saw said looked found made")

func loadPrompt(c loadConfig, i int) string {
	r := rand.New(rand.NewPCG(c.seed, uint64(i)))
	w := make([]string, c.promptTokens)
	for j := range w {
		w[j] = loadWords[r.IntN(len(loadWords))]
	}
	return strings.Join(w, " ")
}

func runLevel(client *http.Client, c loadConfig, conc int) levelReport {
	var mu sync.Mutex
	var results []loadResult // in the order they end
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(c.duration)
	for w := 0; w < min(conc, c.requests); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				i := int(next.Add(1)) - 1
				if i >= c.requests {
					return
				}
				r := oneRequest(context.Background(), client, c, i)
				r.index = i
				mu.Lock()
				results = append(results, r)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	rep := levelReport{Concurrency: conc, Seconds: wall.Seconds()}
	var ttft, gaps, lat []time.Duration
	prompt := 0
	for _, r := range results {
		rep.Requests++
		if r.retried {
			rep.Retried++
		}
		if r.err != nil {
			rep.Errors++
			if rep.FirstError == "" {
				rep.FirstError = oneLine(r.err.Error())
			}
			continue
		}
		rep.OutputTokens += r.outTokens
		prompt += r.promptTokens
		if r.ttft > 0 {
			ttft = append(ttft, r.ttft)
		}
		gaps = append(gaps, r.gaps...)
		lat = append(lat, r.total)
	}
	if ok := rep.Requests - rep.Errors; ok > 0 {
		rep.PromptTokens = float64(prompt) / float64(ok)
	}
	rep.RequestsPerSec = float64(rep.Requests-rep.Errors) / wall.Seconds()
	rep.OutputTokPerS = float64(rep.OutputTokens) / wall.Seconds()
	rep.TTFT, rep.ITL, rep.Latency = percentiles(ttft), percentiles(gaps), percentiles(lat)
	if c.verify != 0 {
		verifyAlone(client, c, results, &rep)
	}
	return rep
}

// verifyAlone asks c.verify of the answered requests (in the order of
// their numbers; all with -1) again, one at a time, and counts those whose
// text differs from the answer they got under load.
func verifyAlone(client *http.Client, c loadConfig, results []loadResult, rep *levelReport) {
	var ok []loadResult
	for _, r := range results {
		if r.err == nil {
			ok = append(ok, r)
		}
	}
	slices.SortFunc(ok, func(a, b loadResult) int { return a.index - b.index })
	if c.verify > 0 && len(ok) > c.verify {
		ok = ok[:c.verify]
	}
	for _, r := range ok {
		again := oneRequest(context.Background(), client, c, r.index)
		rep.Verified++
		switch {
		case again.err != nil:
			rep.Mismatches++
			if rep.FirstMismatch == "" {
				rep.FirstMismatch = fmt.Sprintf("request %d failed alone: %s", r.index, oneLine(again.err.Error()))
			}
		case again.text != r.text:
			rep.Mismatches++
			if rep.FirstMismatch == "" {
				rep.FirstMismatch = fmt.Sprintf("request %d: under load %q, alone %q", r.index, cut(r.text, 80), cut(again.text, 80))
			}
		}
	}
}

// freshClient sends each request on a new connection.
var freshClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// oneRequest sends request i and measures it.
func oneRequest(ctx context.Context, client *http.Client, c loadConfig, i int) (res loadResult) {
	res.start = time.Now()
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	body := map[string]any{"model": c.model, "max_tokens": c.maxTokens, "temperature": 0, "stream": c.stream}
	if c.ignoreEOS {
		body["ignore_eos"] = true
	}
	if c.stream {
		body["stream_options"] = map[string]any{"include_usage": true}
	}
	path := "/v1/completions"
	if c.endpoint == "chat" {
		path = "/v1/chat/completions"
		body["messages"] = []map[string]string{{"role": "user", "content": loadPrompt(c, i)}}
	} else {
		body["prompt"] = loadPrompt(c, i)
	}
	b, _ := json.Marshal(body)
	req, err := c.request(ctx, "POST", path, b)
	if err != nil {
		res.err = err
		return
	}
	resp, err := client.Do(req)
	if err != nil && ctx.Err() == nil && (strings.Contains(err.Error(), "server closed idle connection") || errors.Is(err, io.EOF)) {
		// The server closed a kept-alive connection as the request went out
		// on it, before any answer (llama-server at times closes one right
		// after a response; net/http retries only idempotent methods): the
		// request was not served, so send it again, once, on a connection
		// of its own (another kept-alive one may be just as stale).
		res.retried = true
		if req, err = c.request(ctx, "POST", path, b); err == nil {
			resp, err = freshClient.Do(req)
		}
	}
	if err != nil {
		res.err = err
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 500))
		res.err = fmt.Errorf("status %d: %s", resp.StatusCode, msg)
		return
	}
	type answer struct {
		Choices []struct {
			Text  string `json:"text"`
			Delta struct {
				Content string `json:"content"`
			} `json:"delta"`
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
		} `json:"choices"`
		Usage *struct {
			PromptTokens     int `json:"prompt_tokens"`
			CompletionTokens int `json:"completion_tokens"`
		} `json:"usage"`
		Error json.RawMessage `json:"error"`
	}
	if !c.stream {
		var a answer
		if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
			res.err = fmt.Errorf("reading the answer: %w", err)
			return
		}
		if a.Usage != nil {
			res.outTokens, res.promptTokens = a.Usage.CompletionTokens, a.Usage.PromptTokens
		}
		if len(a.Choices) > 0 {
			res.text = a.Choices[0].Text + a.Choices[0].Message.Content
		}
		res.total = time.Since(res.start)
		return
	}
	var text strings.Builder
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	var last time.Time
	chunks, done := 0, false
	for sc.Scan() {
		line := sc.Text()
		data, ok := strings.CutPrefix(line, "data:")
		if !ok {
			continue
		}
		data = strings.TrimSpace(data)
		if data == "[DONE]" {
			done = true
			break
		}
		var a answer
		if err := json.Unmarshal([]byte(data), &a); err != nil {
			res.err = fmt.Errorf("a stream event is not JSON: %q", cut(data, 100))
			return
		}
		if len(a.Error) > 0 && string(a.Error) != "null" {
			res.err = fmt.Errorf("stream error: %s", a.Error)
			return
		}
		if a.Usage != nil && a.Usage.CompletionTokens > 0 {
			res.outTokens, res.promptTokens = a.Usage.CompletionTokens, a.Usage.PromptTokens
		}
		got := false
		for _, ch := range a.Choices {
			got = got || ch.Text != "" || ch.Delta.Content != ""
			text.WriteString(ch.Text + ch.Delta.Content)
		}
		if !got {
			continue
		}
		now := time.Now()
		if chunks == 0 {
			res.ttft = now.Sub(res.start)
		} else {
			res.gaps = append(res.gaps, now.Sub(last))
		}
		last = now
		chunks++
	}
	if err := sc.Err(); err != nil {
		res.err = err
		return
	}
	if done {
		// Read the stream's end, so that the connection is kept for the
		// next request rather than closed with unread bytes.
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	}
	if !done {
		if ctx.Err() != nil {
			res.err = fmt.Errorf("cut by --timeout: %w", ctx.Err())
		} else {
			res.err = errors.New("the stream ended without data: [DONE]")
		}
		return
	}
	if res.outTokens == 0 {
		res.outTokens = chunks // a server that sends no usage: one chunk per token
	}
	res.text = text.String()
	res.total = time.Since(res.start)
	return
}
