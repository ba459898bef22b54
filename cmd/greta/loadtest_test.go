package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fakeOpenAI streams max_tokens one-token chunks as llama-server does,
// without usage, and refuses models other than fake and flaky; flaky's
// answers differ every time; drop's first request has its connection
// closed without an answer.
func fakeOpenAI(t *testing.T) *httptest.Server {
	var served, dropped atomic.Int64
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/models":
			fmt.Fprint(w, `{"object":"list","data":[{"id":"fake"}]}`)
			return
		case "/v1/completions":
		default:
			http.NotFound(w, r)
			return
		}
		var req struct {
			Model     string `json:"model"`
			MaxTokens int    `json:"max_tokens"`
			Stream    bool   `json:"stream"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Model != "fake" && req.Model != "flaky" && req.Model != "drop" {
			http.Error(w, `{"error":{"message":"bad"}}`, 400)
			return
		}
		if req.Model == "drop" && dropped.Add(1) == 1 {
			// Close the connection without an answer, once.
			c, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				c.Close()
			}
			return
		}
		if !req.Stream {
			fmt.Fprintf(w, `{"choices":[{"text":"%s"}],"usage":{"prompt_tokens":3,"completion_tokens":%d}}`, strings.Repeat("a", req.MaxTokens), req.MaxTokens)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		n := served.Add(1)
		for i := 0; i < req.MaxTokens; i++ {
			if req.Model == "flaky" && i == 0 {
				fmt.Fprintf(w, "data: {\"choices\":[{\"text\":\"%d\"}]}\n\n", n)
			}
			fmt.Fprintf(w, "data: {\"choices\":[{\"text\":\"t%d\"}]}\n\n", i)
			w.(http.Flusher).Flush()
			time.Sleep(time.Millisecond)
		}
		fmt.Fprint(w, "data: [DONE]\n\n")
	}))
}

func TestLoadtestAgainstAnyServer(t *testing.T) {
	srv := fakeOpenAI(t)
	defer srv.Close()
	out, stderr, code := gretaWithin(t, 60*time.Second, "loadtest", "--url", srv.URL, "--concurrency", "1,4", "--requests", "8",
		"--max-tokens", "5", "--prompt-tokens", "16", "--json", "--duration", "30s", "--verify", "-1")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var rep struct {
		Model  string `json:"model"`
		Levels []struct {
			C    int            `json:"concurrency"`
			R    int            `json:"requests"`
			E    int            `json:"errors"`
			O    int            `json:"output_tokens"`
			TTFT map[string]any `json:"ttft_ms"`
			ITL  map[string]any `json:"itl_ms"`
			V    int            `json:"verified"`
			M    int            `json:"mismatches"`
		} `json:"levels"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if rep.Model != "fake" || len(rep.Levels) != 2 {
		t.Fatalf("report: %s", out)
	}
	for _, l := range rep.Levels {
		if l.R != 8 || l.E != 0 || l.O != 40 || l.TTFT["n"].(float64) != 8 || l.ITL["n"].(float64) != 32 || l.V != 8 || l.M != 0 {
			t.Errorf("concurrency %d: %+v", l.C, l)
		}
	}
	// The table, and errors counted with the first one shown.
	out, _, code = gretaWithin(t, 60*time.Second, "loadtest", "--url", srv.URL, "--model", "other", "--concurrency", "2", "--requests", "3", "--max-tokens", "2")
	if code != 0 || !strings.Contains(out, "3 errors; the first: status 400") {
		t.Fatalf("exit %d: %s", code, out)
	}
	// Answers that differ when asked again alone are counted.
	out, _, code = gretaWithin(t, 60*time.Second, "loadtest", "--url", srv.URL, "--model", "flaky", "--concurrency", "2", "--requests", "3", "--max-tokens", "2", "--verify", "2")
	if code != 0 || !strings.Contains(out, "2 answers asked again alone, 2 differ; the first: request 0") {
		t.Fatalf("exit %d: %s", code, out)
	}
	// A request whose connection the server closes before answering is
	// sent again, once.
	out, _, code = gretaWithin(t, 60*time.Second, "loadtest", "--url", srv.URL, "--model", "drop", "--concurrency", "1", "--requests", "2", "--max-tokens", "2", "--json")
	if code != 0 || !strings.Contains(out, `"errors": 0`) || !strings.Contains(out, `"retried": 1`) {
		t.Fatalf("exit %d: %s", code, out)
	}
	if _, _, code := gretaWithin(t, 10*time.Second, "loadtest", "--url", srv.URL, "--concurrency", "0"); code != 2 {
		t.Fatalf("--concurrency 0: exit %d, want 2", code)
	}
}
