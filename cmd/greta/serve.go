package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	gengine "greta/engine"
	"greta/serve"
	"greta/tokenizer"
	"greta/tokenizer/template"
)

func init() {
	register("serve", "an OpenAI-compatible HTTP server: chat, completions, metrics", cmdServe)
}

func cmdServe(args []string) error {
	fs := newFlags("serve", "--model M [--host H] [--port P] [--parallel N] [flags]")
	ef := addEngineFlags(fs, false)
	host := fs.String("host", "127.0.0.1", "address to listen on (0.0.0.0: every interface)")
	port := fs.Int("port", 8080, "TCP port (0: any free one, printed in the ready line)")
	parallel := fs.Int("parallel", 8, "sequences generated at once (slots)")
	kvBudget := fs.String("kv-budget", "", "KV cache pool: a size (512MiB, 2GiB) or a fraction of the memory free after loading (0.9, 90%). Default: --parallel sequences of --ctx tokens, within 90% of the GPU's free memory, or 1 GiB of RAM on the CPU")
	queue := fs.Int("queue", 256, "requests waiting beyond the running ones; more get 429")
	apiKey := fs.String("api-key", "", "require Authorization: Bearer KEY (default: $GRETA_API_KEY, else none)")
	alias := fs.String("alias", "", "the model's id in the API (default: the file's name without .gguf)")
	logFormat := fs.String("log-format", "text", "log lines: text or json")
	grace := fs.Duration("shutdown-timeout", 30*time.Second, "on SIGINT/SIGTERM, how long requests in flight may run on before they are cancelled")
	maxBody := fs.String("max-body", "8MiB", "largest request body; more gets 413")
	pprofAddr := fs.String("pprof", "", "also serve Go's runtime profiles (net/http/pprof: heap, goroutines, CPU) on this address, e.g. 127.0.0.1:6060; for debugging, never expose it")
	chatTmpl := fs.String("chat-template", "", "a built-in chat format by name ("+strings.Join(tokenizer.ChatTemplateNames, ", ")+") instead of the model's template")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := ef.check(fs); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("unexpected arguments %q", strings.Join(fs.Args(), " "))
	}
	if *port < 0 || *port > 65535 {
		return usageError("--port %d: want 0 to 65535", *port)
	}
	if *parallel < 1 || *parallel > 4096 {
		return usageError("--parallel %d: want 1 to 4096", *parallel)
	}
	if *queue < 1 {
		return usageError("--queue %d: want at least 1", *queue)
	}
	if _, _, err := parseKVBudget(*kvBudget); err != nil {
		return usageError("--kv-budget: %v", err)
	}
	bodyLimit, err := parseSize(*maxBody)
	if err != nil || bodyLimit < 1 {
		return usageError("--max-body %q: want a size such as 8MiB", *maxBody)
	}
	if *grace < 0 {
		return usageError("--shutdown-timeout %v: want a duration ≥ 0", *grace)
	}
	var h slog.Handler
	switch *logFormat {
	case "text":
		h = slog.NewTextHandler(os.Stderr, nil)
	case "json":
		h = slog.NewJSONHandler(os.Stderr, nil)
	default:
		return usageError("--log-format %q: want text or json", *logFormat)
	}
	log := slog.New(h)
	key := *apiKey
	if key == "" {
		key = os.Getenv("GRETA_API_KEY")
	}
	id := *alias
	if id == "" {
		id = strings.TrimSuffix(filepath.Base(*ef.model), ".gguf")
	}

	if _, err := os.Stat(*ef.model); err != nil {
		return err // before listening: a wrong path is one line, not a server that starts and stops
	}
	// Listen first, so that /health says 503 while the model loads.
	ln, err := net.Listen("tcp", net.JoinHostPort(*host, strconv.Itoa(*port)))
	if err != nil {
		return err
	}
	if *pprofAddr != "" {
		pl, err := net.Listen("tcp", *pprofAddr)
		if err != nil {
			return fmt.Errorf("--pprof: %w", err)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		go (&http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}).Serve(pl)
		defer pl.Close()
		fmt.Fprintf(os.Stderr, "greta serve: runtime profiles at http://%s/debug/pprof/\n", pl.Addr())
	}
	srv := serve.New(serve.Options{ModelID: id, APIKey: key, MaxBodyBytes: bodyLimit, Logger: log})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln, *grace) }()
	url := "http://" + ln.Addr().String()
	log.Info("loading the model", "model", *ef.model, "listening", url)

	e, err := ef.load()
	if err != nil {
		stop()
		<-served
		return err
	}
	defer e.closeInto(&err)
	var eng *gengine.Engine
	cacheType := kvCacheType(e, *ef.cache)
	pages, err := kvPages(e, *kvBudget, *parallel, e.ctx, cacheType)
	if err == nil {
		eng, err = gengine.New(e.model, e.tok, gengine.Options{Parallel: *parallel, Context: e.ctx, Pages: pages,
			CacheType: cacheType, PrefillBudget: *ef.batch, QueueSize: *queue})
	}
	if err != nil {
		stop()
		<-served
		return err
	}
	defer eng.Close()
	var tmpl *template.Template
	if *chatTmpl != "" {
		if tmpl, err = template.ByName(e.tok, *chatTmpl); err != nil {
			stop()
			<-served
			return usageError("--chat-template: %v", err)
		}
	} else {
		tmpl = template.FromTokenizer(e.tok)
		if tmpl.Fallback {
			log.Warn("chat template", "using", tmpl.Name, "why", tmpl.Why)
		}
	}
	// Structured output (response_format) is package grammar's, by
	// default (serve.GrammarConstraints).
	srv.Ready(serve.Model{Engine: eng, Template: tmpl,
		Fingerprint: fmt.Sprintf("%s-%s-%s", strings.ReplaceAll(version, " ", "-"), e.backend.Name(), shortHash(*ef.model))})
	o, st := eng.Options(), eng.Stats()
	fmt.Fprintf(stdout, "greta serve: ready at %s (model %s, device %s, context %d, %d parallel slots, KV %d pages × %d = %d tokens, chat template %s, loaded in %.1fs)\n",
		url, id, e.backend.Name(), o.Context, o.Parallel, st.Pages, st.PageSize, st.Pages*st.PageSize, tmpl.Name, e.loadDur.Seconds())
	if f, ok := stdout.w.(*os.File); ok {
		f.Sync()
	}
	if err := <-served; err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	log.Info("stopped")
	return nil
}

// shortHash is a short stable hash of s, for system_fingerprint.
func shortHash(s string) string {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h = (h ^ uint32(s[i])) * 16777619
	}
	return fmt.Sprintf("%08x", h)
}
