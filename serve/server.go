// Package serve answers OpenAI's HTTP API (chat completions, completions,
// models) and llama-server's tokenize and detokenize on top of an engine,
// with Prometheus metrics and the limits a server facing many clients
// needs: a body size limit, an API key, a bounded queue (429), header and
// idle timeouts, and a graceful shutdown.
package serve

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"greta/engine"
	"greta/tokenizer/template"
)

// Options configure a Server. Zero values take the defaults.
type Options struct {
	// ModelID is the model's name in /v1/models and in answers; requests
	// naming another model get 404 (an empty model field is accepted).
	ModelID string
	// APIKey, if set, is required as "Authorization: Bearer KEY" on every
	// endpoint but /health and /metrics.
	APIKey string
	// MaxBodyBytes limits a request body (default 8 MiB); more is a 413.
	MaxBodyBytes int64
	// ReadHeaderTimeout, ReadTimeout and IdleTimeout are the HTTP server's
	// (defaults 10 s, 60 s and 120 s). There is no write timeout: a stream
	// lasts as long as its generation.
	ReadHeaderTimeout, ReadTimeout, IdleTimeout time.Duration
	// Logger gets the access and error logs (default slog.Default()).
	Logger *slog.Logger
}

// Server is the HTTP front of one engine. It answers /health (503) and
// /metrics while the model loads; Ready makes it serve the rest.
type Server struct {
	o       Options
	state   atomic.Pointer[ready]
	metrics *metrics
	log     *slog.Logger
	created int64
	handler http.Handler
}

// Model is what Ready serves.
type Model struct {
	Engine *engine.Engine
	// Template renders chat prompts (default:
	// template.FromTokenizer(Engine.Tokenizer())).
	Template *template.Template
	// Fingerprint is the answers' system_fingerprint: it should change
	// when the model, the device or the build does.
	Fingerprint string
	// NewConstraint builds the decoding constraint of a response_format
	// of type json_object (schema nil) or json_schema, one per choice
	// (default: GrammarConstraints of the engine's tokenizer).
	NewConstraint func(schema json.RawMessage) (engine.Constraint, error)
}

type ready struct {
	e             *engine.Engine
	tmpl          *template.Template
	fp            string
	newConstraint func(schema json.RawMessage) (engine.Constraint, error)
}

// New returns a server that is loading: call Ready when the engine is up.
func New(o Options) *Server {
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 8 << 20
	}
	if o.ReadHeaderTimeout <= 0 {
		o.ReadHeaderTimeout = 10 * time.Second
	}
	if o.ReadTimeout <= 0 {
		o.ReadTimeout = 60 * time.Second
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 120 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.ModelID == "" {
		o.ModelID = "greta"
	}
	s := &Server{o: o, log: o.Logger, created: time.Now().Unix()}
	s.metrics = newMetrics(s)
	s.handler = s.routes()
	return s
}

// Ready starts serving generations on m.Engine.
func (s *Server) Ready(m Model) {
	if m.Template == nil {
		m.Template = template.FromTokenizer(m.Engine.Tokenizer())
	}
	if m.NewConstraint == nil {
		m.NewConstraint = GrammarConstraints(m.Engine.Tokenizer())
	}
	s.state.Store(&ready{e: m.Engine, tmpl: m.Template, fp: m.Fingerprint, newConstraint: m.NewConstraint})
}

// Handler returns the server's HTTP handler.
func (s *Server) Handler() http.Handler { return s.handler }

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	gen := func(h func(http.ResponseWriter, *http.Request, *ready)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			st := s.state.Load()
			if st == nil {
				s.fail(w, r, &apiError{Status: http.StatusServiceUnavailable, Type: "unavailable_error", Code: "loading", Message: "the model is loading", RetryAfter: "5"})
				return
			}
			h(w, r, st)
		}
	}
	handle := func(pattern, endpoint string, h http.Handler, auth bool) {
		if auth {
			h = s.authorize(h)
		}
		mux.Handle(pattern, s.observe(endpoint, h))
	}
	for _, prefix := range []string{"/v1", ""} {
		handle("POST "+prefix+"/chat/completions", "chat", gen(s.chat), true)
		handle("POST "+prefix+"/completions", "completions", gen(s.completions), true)
		handle("GET "+prefix+"/models", "models", http.HandlerFunc(s.models), true)
		handle("GET "+prefix+"/models/{id}", "models", http.HandlerFunc(s.model), true)
	}
	handle("POST /tokenize", "tokenize", gen(s.tokenize), true)
	handle("POST /detokenize", "detokenize", gen(s.detokenize), true)
	handle("GET /health", "health", http.HandlerFunc(s.health), false)
	handle("GET /metrics", "metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}), false)
	handle("/", "other", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, r, &apiError{Status: http.StatusNotFound, Type: "invalid_request_error", Code: "not_found", Message: fmt.Sprintf("no endpoint %s %s", r.Method, r.URL.Path)})
	}), false)
	return mux
}

// Serve answers on ln until ctx ends, then shuts down: it stops accepting,
// lets the requests in flight finish for up to grace, then cancels them
// (the engine ends each within a step) and closes every connection.
func (s *Server) Serve(ctx context.Context, ln net.Listener, grace time.Duration) error {
	base, cancelAll := context.WithCancel(context.Background())
	defer cancelAll()
	hs := s.HTTPServer()
	hs.BaseContext = func(net.Listener) context.Context { return base }
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	s.log.Info("shutting down: no new connections; waiting for the requests in flight", "grace", grace)
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	err := hs.Shutdown(sctx)
	cancel()
	if err != nil {
		s.log.Warn("the grace period ended: cancelling the requests still running")
		cancelAll()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if hs.Shutdown(sctx) != nil {
			hs.Close()
		}
		cancel()
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// HTTPServer returns an http.Server with the handler and timeouts.
func (s *Server) HTTPServer() *http.Server {
	return &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: s.o.ReadHeaderTimeout,
		ReadTimeout:       s.o.ReadTimeout,
		IdleTimeout:       s.o.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}

// recorder keeps the status and size of an answer for the logs and
// metrics; it passes Flush through for streams.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// observe logs each request and counts it by endpoint and status.
func (s *Server) observe(endpoint string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &recorder{ResponseWriter: w}
		h.ServeHTTP(rec, r)
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
		d := time.Since(start)
		s.metrics.requests.WithLabelValues(endpoint, fmt.Sprint(rec.status)).Inc()
		s.metrics.duration.WithLabelValues(endpoint).Observe(d.Seconds())
		level := slog.LevelInfo
		if rec.status >= 500 {
			level = slog.LevelError
		}
		if endpoint == "health" || endpoint == "metrics" {
			level = slog.LevelDebug
		}
		s.log.Log(r.Context(), level, "request", "method", r.Method, "path", r.URL.Path, "status", rec.status,
			"bytes", rec.bytes, "duration_ms", float64(d.Microseconds())/1000, "remote", r.RemoteAddr)
	})
}

// authorize checks the bearer key.
func (s *Server) authorize(h http.Handler) http.Handler {
	if s.o.APIKey == "" {
		return h
	}
	want := []byte("Bearer " + s.o.APIKey)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get("Authorization"))
		if subtle.ConstantTimeCompare(got, want) != 1 {
			msg := "missing API key: send Authorization: Bearer KEY"
			if len(got) > 0 {
				msg = "incorrect API key"
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="greta"`)
			s.fail(w, r, &apiError{Status: http.StatusUnauthorized, Type: "invalid_request_error", Code: "invalid_api_key", Message: msg})
			return
		}
		h.ServeHTTP(w, r)
	})
}

// fail writes an error answer.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, e *apiError) {
	if e.RetryAfter != "" {
		w.Header().Set("Retry-After", e.RetryAfter)
	}
	if e.Status >= 500 {
		s.log.Error("request failed", "path", r.URL.Path, "status", e.Status, "error", e.Message)
	}
	writeJSON(w, e.Status, e.body())
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}

// readBody reads a request body within the size limit.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, *apiError) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.o.MaxBodyBytes))
	if err != nil {
		var me *http.MaxBytesError
		if errors.As(err, &me) {
			return nil, &apiError{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request_error", Code: "request_too_large",
				Message: fmt.Sprintf("the request body exceeds the limit of %d bytes", me.Limit)}
		}
		return nil, badRequest("", "reading the request body: %v", err)
	}
	return body, nil
}

// checkModel refuses a request for a model this server does not serve.
func (s *Server) checkModel(model string) *apiError {
	if model == "" || model == s.o.ModelID {
		return nil
	}
	return &apiError{Status: http.StatusNotFound, Type: "invalid_request_error", Param: "model", Code: "model_not_found",
		Message: fmt.Sprintf("the model %q does not exist: this server serves %q", model, s.o.ModelID)}
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	if s.state.Load() == nil {
		w.Header().Set("Retry-After", "5")
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "loading"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

type modelInfo struct {
	ID      string         `json:"id"`
	Object  string         `json:"object"`
	Created int64          `json:"created"`
	OwnedBy string         `json:"owned_by"`
	Meta    map[string]any `json:"meta,omitempty"`
}

func (s *Server) modelInfo() modelInfo {
	m := modelInfo{ID: s.o.ModelID, Object: "model", Created: s.created, OwnedBy: "greta"}
	if st := s.state.Load(); st != nil {
		o := st.e.Options()
		m.Meta = map[string]any{"n_ctx": o.Context, "parallel": o.Parallel, "n_vocab": st.e.Tokenizer().NumTokens(), "chat_template": st.tmpl.Name}
	}
	return m
}

func (s *Server) models(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": []modelInfo{s.modelInfo()}})
}

func (s *Server) model(w http.ResponseWriter, r *http.Request) {
	if e := s.checkModel(r.PathValue("id")); e != nil {
		s.fail(w, r, e)
		return
	}
	writeJSON(w, http.StatusOK, s.modelInfo())
}

// tokenize is llama-server's POST /tokenize: {"content", "add_special"
// (false), "parse_special" (true), "with_pieces" (false)} → {"tokens"}.
func (s *Server) tokenize(w http.ResponseWriter, r *http.Request, st *ready) {
	body, e := s.readBody(w, r)
	if e != nil {
		s.fail(w, r, e)
		return
	}
	var req struct {
		Content      *string `json:"content"`
		AddSpecial   *bool   `json:"add_special"`
		ParseSpecial *bool   `json:"parse_special"`
		WithPieces   *bool   `json:"with_pieces"`
	}
	if e := decode(body, &req); e != nil {
		s.fail(w, r, e)
		return
	}
	if req.Content == nil {
		s.fail(w, r, badRequest("content", "content is required"))
		return
	}
	add := req.AddSpecial != nil && *req.AddSpecial
	parseSpecial := req.ParseSpecial == nil || *req.ParseSpecial
	tok := st.e.Tokenizer()
	ids := tok.Encode(*req.Content, add, parseSpecial)
	if req.WithPieces == nil || !*req.WithPieces {
		writeJSON(w, http.StatusOK, map[string]any{"tokens": ids})
		return
	}
	type piece struct {
		ID    int32 `json:"id"`
		Piece any   `json:"piece"` // a string, or the bytes when not valid UTF-8
	}
	out := make([]piece, len(ids))
	for i, id := range ids {
		p := tok.Piece(id)
		out[i] = piece{ID: id, Piece: p}
		if !utf8.ValidString(p) {
			out[i].Piece = byteList(p)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"tokens": out})
}

// detokenize is llama-server's POST /detokenize: {"tokens"} → {"content"}.
func (s *Server) detokenize(w http.ResponseWriter, r *http.Request, st *ready) {
	body, e := s.readBody(w, r)
	if e != nil {
		s.fail(w, r, e)
		return
	}
	var req struct {
		Tokens []int32 `json:"tokens"`
	}
	if e := decode(body, &req); e != nil {
		s.fail(w, r, e)
		return
	}
	n := st.e.Tokenizer().NumTokens()
	for i, t := range req.Tokens {
		if t < 0 || int(t) >= n {
			s.fail(w, r, badRequest("tokens", "tokens[%d] = %d is outside the vocabulary (0..%d)", i, t, n-1))
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"content": st.e.Tokenizer().Decode(req.Tokens)})
}

// newID returns a random id with a prefix, as OpenAI's chatcmpl-….
func newID(prefix string) string {
	var b [12]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

func byteList(s string) []int {
	out := make([]int, len(s))
	for i := 0; i < len(s); i++ {
		out[i] = int(s[i])
	}
	return out
}
