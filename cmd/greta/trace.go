package main

import (
	"fmt"
	"os"
	"strings"

	"greta/trace"
)

func init() {
	register("trace", "compare LayerTraces: greta trace diff A.jsonl B.jsonl", cmdTrace)
}

func cmdTrace(args []string) error {
	if len(args) > 0 && args[0] == "record" {
		// greta trace record -o T.jsonl [run flags]: a run with tracing on.
		rest := []string{}
		out := ""
		for i := 1; i < len(args); i++ {
			switch a := args[i]; {
			case (a == "-o" || a == "--output") && i+1 < len(args):
				out = args[i+1]
				i++
			case strings.HasPrefix(a, "--output="):
				out = strings.TrimPrefix(a, "--output=")
			default:
				rest = append(rest, a)
			}
		}
		if out == "" {
			return &exitError{code: 2, err: fmt.Errorf("trace record needs -o OUT.jsonl")}
		}
		return cmdRun(append([]string{"--trace-out", out}, rest...))
	}
	if len(args) == 0 || args[0] != "diff" {
		fmt.Fprintln(os.Stderr, "usage: greta trace record -o T.jsonl --model M --prompt TEXT [run flags, --device cuda|cpu|ref]\n       greta trace diff A B [--tol 1e-4] [--html OUT.html]\n\nA and B are GRETA JSONL traces (trace record, run --trace-out, or GRETA_TRACE_LAYER=1)\nor llama.cpp llama-eval-callback logs. B is the reference. Exit 0: agree, 1: diverge, 2: bad input.")
		return &exitError{code: 2}
	}
	fs := newFlags("trace diff", "A B [--tol 1e-4] [--html OUT.html]")
	tol := fs.Float64("tol", 1e-4, "relative error past which two records diverge")
	htmlOut := fs.String("html", "", "write a self-contained heatmap page")
	if err := fs.Parse(args[1:]); err != nil {
		return &exitError{code: 2, err: err}
	}
	if fs.NArg() != 2 {
		fs.Usage()
		return &exitError{code: 2, err: fmt.Errorf("expected two trace files, got %d", fs.NArg())}
	}
	a, err := trace.ReadFile(fs.Arg(0))
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	b, err := trace.ReadFile(fs.Arg(1))
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	rep := trace.Diff(a, b, *tol)
	if len(rep.Entries) == 0 {
		return &exitError{code: 2, err: fmt.Errorf("%s and %s have no (step, layer, point) records in common", fs.Arg(0), fs.Arg(1))}
	}
	rep.WriteTable(os.Stdout)
	if *htmlOut != "" {
		f, err := os.Create(*htmlOut)
		if err != nil {
			return &exitError{code: 2, err: err}
		}
		err = rep.WriteHTML(f, a.Path+" ("+a.Header.Backend+")", b.Path+" ("+b.Header.Backend+")")
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return &exitError{code: 2, err: err}
		}
	}
	if rep.First != nil {
		return &exitError{code: 1}
	}
	return nil
}
