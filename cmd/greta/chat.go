package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"

	flag "github.com/spf13/pflag"

	"greta/generate"
	"greta/tokenizer/template"
)

func init() {
	register("chat", "talk with a chat model: multi-turn, its template, Ctrl-C stops a reply", cmdChat)
}

func cmdChat(args []string) error {
	fs := newFlags("chat", "--model M [--system TEXT] [flags]")
	ef := addEngineFlags(fs, true)
	g := addGenFlags(fs, -1)
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := ef.check(fs); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("unexpected arguments %q: chat reads its turns from standard input", cut(strings.Join(fs.Args(), " "), 60))
	}
	return runChat(fs, ef, g, os.Stdin, stdout)
}

// runChat loads the model and talks on in/out until EOF, /exit or Ctrl-C
// at the prompt.
func runChat(fs *flag.FlagSet, ef *engineFlags, g *genFlags, in io.Reader, out io.Writer) (err error) {
	if !fs.Changed("max-tokens") {
		*g.maxTokens = -1 // a reply runs to its end of turn
	}
	o, err := g.options(fs)
	if err != nil {
		return err
	}
	e, err := ef.load()
	if err != nil {
		return err
	}
	defer e.closeInto(&err)
	g.logSettings(o)
	ct, err := g.chatFormat(e.tok)
	if err != nil {
		return err
	}
	if *g.system != "" {
		// A template that takes no system message says so now, not at the
		// first turn.
		if _, err := ct.Apply([]template.Message{{Role: "system", Content: *g.system}, {Role: "user", Content: "hello"}}, true); err != nil {
			return usageError("--system: %v", err)
		}
	}
	st, err := e.model.NewState(e.ctx, *ef.batch, false)
	if err != nil {
		return err
	}
	if *g.debugTop > 0 {
		o.OnDebug = debugPrinter(e.tok)
	}
	c := generate.NewChat(generate.NewSession(e.model, e.tok, st), e.tok, ct, *g.system)
	fmt.Fprintf(os.Stderr, "chatting with %s (%s, context %d tokens). Ctrl-C stops a reply; /clear forgets the conversation; /exit or Ctrl-D ends.\n",
		ef.modelName(), templateLabel(ct), e.ctx)
	interrupts := make(chan os.Signal, 1)
	signal.Notify(interrupts, os.Interrupt)
	defer signal.Stop(interrupts)
	return chatLoop(c, in, out, o, interrupts, *g.verbose)
}

// chatLoop reads one user turn per line from in and streams each reply to
// out. An interrupt during a reply stops the reply and the chat goes on;
// one at the prompt ends the chat. It returns on EOF, /exit or a write
// error.
func chatLoop(c *generate.Chat, in io.Reader, out io.Writer, o generate.Options, interrupts <-chan os.Signal, verbose bool) error {
	lines := make(chan string)
	readErr := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(in)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			lines <- sc.Text()
		}
		readErr <- sc.Err()
		close(lines)
	}()
	o.OnText = func(s string) error {
		_, err := io.WriteString(out, s)
		return err
	}
	for {
		if _, err := io.WriteString(out, "> "); err != nil {
			return err
		}
		var line string
		select {
		case l, ok := <-lines:
			if !ok {
				io.WriteString(out, "\n")
				if err := <-readErr; err != nil {
					return fmt.Errorf("reading standard input: %w", err)
				}
				return nil
			}
			line = l
		case <-interrupts:
			_, err := io.WriteString(out, "\n")
			return err
		}
		switch strings.TrimSpace(line) {
		case "":
			continue
		case "/exit", "/quit":
			return nil
		case "/clear":
			c.Reset()
			fmt.Fprintln(os.Stderr, "[the conversation is cleared]")
			continue
		case "/help":
			fmt.Fprintln(os.Stderr, "/clear forgets the conversation, /exit ends; Ctrl-C stops a reply")
			continue
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			select {
			case <-interrupts:
				cancel()
			case <-done:
			}
		}()
		reuse, _, _ := c.Turn(line)
		r, err := c.Send(ctx, line, o)
		if errors.Is(err, generate.ErrContext) && c.Session().Len() > 0 {
			fmt.Fprintf(os.Stderr, "[context full (%d tokens): the conversation is cleared]\n", c.Session().Context())
			c.Reset()
			reuse = 0
			r, err = c.Send(ctx, line, o)
		}
		close(done)
		cancel()
		if errors.Is(err, generate.ErrTemplate) {
			fmt.Fprintf(os.Stderr, "[%v: the turn is dropped]\n", err)
			continue
		}
		if err != nil {
			return err
		}
		if _, err := io.WriteString(out, "\n"); err != nil {
			return err
		}
		switch {
		case r.StopReason == "cancelled":
			fmt.Fprintln(os.Stderr, "[stopped]")
		case r.StopReason == "context":
			fmt.Fprintln(os.Stderr, "[the context is full: /clear to go on]")
		case verbose:
			fmt.Fprintf(os.Stderr, "[prompt %d new tokens at %.1f tok/s (%d reused from the cache), %s (%s); %d of %d context tokens used]\n",
				len(r.PromptTokens), r.PromptTPS(), reuse, genSummary(r), r.StopReason, c.Session().Len(), c.Session().Context())
		}
	}
}

// templateLabel names the chat template in a status line.
func templateLabel(t *template.Template) string {
	if t.Name == "jinja" {
		return "the model's chat template"
	}
	return "the built-in " + t.Name + " chat format"
}

// genSummary says how many tokens a chat turn gave and, when any took a
// decode step, how fast.
func genSummary(r *generate.Result) string {
	switch {
	case len(r.Generated) == 0:
		return "generated 0 tokens"
	case r.Decoded() == 0:
		return "generated 1 token (from the prompt's pass: no decode speed)"
	}
	return fmt.Sprintf("generated %d tokens at %.1f tok/s", len(r.Generated), r.GenTPS())
}
