package main

import (
	"fmt"
	"math"
	"os"
	"strings"

	"greta/trace"
)

func init() {
	register("trace", "record and compare LayerTraces: greta trace record | diff", cmdTrace)
}

const traceUsage = `usage: greta trace record -o T.jsonl --model M --prompt TEXT [run flags, --device cuda|cpu|ref]
       greta trace diff A B [--tol 1e-4] [--html OUT.html]

A and B are GRETA JSONL traces (trace record, run --trace-out, or GRETA_TRACE_LAYER=1)
or llama.cpp llama-eval-callback logs. B is the reference. Exit 0: agree, 1: diverge, 2: bad input.
`

func isHelp(a string) bool { return a == "-h" || a == "--help" || a == "help" }

func cmdTrace(args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, traceUsage)
		return &exitError{code: 2}
	}
	switch args[0] {
	case "-h", "--help", "help":
		fmt.Fprint(stdout, traceUsage)
		return nil
	case "record":
		return traceRecord(args[1:])
	case "diff":
		return traceDiff(args[1:])
	}
	return usageError("unknown trace subcommand %q (expected record or diff; see greta trace --help)", cut(args[0], 40))
}

// traceRecord is greta trace record -o T.jsonl [run flags]: a run with
// tracing on.
func traceRecord(args []string) error {
	rest := []string{}
	out := ""
	for i := 0; i < len(args); i++ {
		switch a := args[i]; {
		case isHelp(a):
			fmt.Fprint(stdout, "usage: greta trace record -o T.jsonl [greta run's flags]\n\nRecords a LayerTrace of the run (greta run --trace-out T.jsonl). The run's flags:\n\n")
			return cmdRun([]string{"--help"})
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
		return usageError("trace record needs -o OUT.jsonl (see greta trace record --help)")
	}
	return cmdRun(append([]string{"--trace-out", out}, rest...))
}

func traceDiff(args []string) error {
	fs := newFlags("trace diff", "A B [--tol 1e-4] [--html OUT.html]")
	tol := fs.Float64("tol", 1e-4, "relative error past which two records diverge (finite, ≥ 0)")
	htmlOut := fs.String("html", "", "write a self-contained heatmap page")
	if err := parse(fs, args); err != nil {
		return err
	}
	if math.IsNaN(*tol) || math.IsInf(*tol, 0) || *tol < 0 {
		return usageError("--tol %v: want a finite relative error ≥ 0", *tol)
	}
	if fs.NArg() != 2 {
		return usageError("expected two trace files, got %d (see greta help trace)", fs.NArg())
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
	rep.WriteTable(stdout)
	if stdout.err != nil {
		return &exitError{code: 2, err: fmt.Errorf("writing standard output: %w", stdout.err)}
	}
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
