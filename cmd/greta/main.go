// Command greta is GRETA's one CLI: run, chat, tokenize, logits, inspect,
// bench, synth and trace.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"

	flag "github.com/spf13/pflag"

	"greta/sample"
)

// command is one subcommand. run gets the arguments after the subcommand's
// name; an error it returns is printed as one line on stderr.
type command struct {
	summary string
	run     func(args []string) error
}

// commands is filled by each subcommand's file in an init function.
var commands = map[string]command{}

func register(name, summary string, run func(args []string) error) {
	commands[name] = command{summary, run}
}

// exitError carries an exit status other than 1 (2 for bad usage, as
// trace diff's 2 for bad input). A nil err with a code only sets the status.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return ""
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// usageError is a bad flag or argument: exit status 2.
func usageError(format string, args ...any) error {
	return &exitError{code: 2, err: fmt.Errorf(format, args...)}
}

// errWriter remembers the first write error, so that output lost to a full
// disk or a closed file is a failure even where a command does not check
// each write.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(b []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(b)
	if err != nil {
		e.err = err
	}
	return n, err
}

// stdout is where every command writes its output; main fails the command
// if any write to it failed.
var stdout = &errWriter{w: os.Stdout}

func usage(w io.Writer) {
	fmt.Fprintf(w, "usage: greta COMMAND [flags]\n\ncommands:\n")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-9s %s\n", n, commands[n].summary)
	}
	fmt.Fprintf(w, "\nRun 'greta help COMMAND' or 'greta COMMAND --help' for a command's flags; 'greta --version' for the build.\n")
}

// versionText is the release, the commit (from the build's VCS stamp) and
// the Go version.
func versionText() string {
	commit, modified := "unknown", false
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	if modified {
		commit += " (modified)"
	}
	return fmt.Sprintf("%s\ncommit %s\n%s %s/%s\n", version, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func main() {
	os.Exit(mainArgs(os.Args[1:]))
}

func mainArgs(args []string) int {
	code := runArgs(args)
	if code == 0 && stdout.err != nil {
		fmt.Fprintf(os.Stderr, "greta: writing standard output: %v\n", stdout.err)
		return 1
	}
	return code
}

func runArgs(args []string) int {
	if len(args) == 0 {
		usage(os.Stderr)
		return 2
	}
	name := args[0]
	switch name {
	case "-h", "--help":
		usage(stdout)
		return 0
	case "--version", "-v", "version":
		fmt.Fprint(stdout, versionText())
		return 0
	case "help":
		if len(args) == 1 {
			usage(stdout)
			return 0
		}
		if _, ok := commands[args[1]]; !ok {
			fmt.Fprintf(os.Stderr, "greta help: unknown command %q\n", args[1])
			usage(os.Stderr)
			return 2
		}
		name, args = args[1], []string{args[1], "--help"}
	}
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "greta: unknown command %q\n", name)
		usage(os.Stderr)
		return 2
	}
	err := cmd.run(args[1:])
	if err == nil && stdout.err != nil {
		err = fmt.Errorf("writing standard output: %w", stdout.err)
	}
	if errors.Is(err, flag.ErrHelp) {
		io.WriteString(stdout, helpText.String())
		err = nil
		if stdout.err != nil {
			err = fmt.Errorf("writing standard output: %w", stdout.err)
		}
	}
	if err == nil {
		return 0
	}
	code := 1
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
	}
	var re *sample.RangeError
	if errors.As(err, &re) {
		code = 2
		if f, ok := flagOf[re.Field]; ok {
			err = fmt.Errorf("%s: %w", f, err)
		}
	}
	if msg := err.Error(); msg != "" {
		fmt.Fprintf(os.Stderr, "greta %s: %s\n", name, oneLine(msg))
	}
	return code
}

// flagOf names the flag that sets each API field, for range errors.
var flagOf = map[string]string{
	"temperature": "--temp", "top_k": "--top-k", "top_p": "--top-p", "min_p": "--min-p",
	"repeat_penalty": "--repeat-penalty", "repeat_last_n": "--repeat-last-n", "stop": "--stop",
	"max_tokens": "--max-tokens/-n", "n_ctx": "--ctx", "n_batch": "--batch", "n_threads": "--threads",
	"debug_top": "--debug-decode", "parallel": "--parallel", "prefill_budget": "--prefill-budget",
}

// oneLine keeps an error to one line, as every user-facing error must be.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ")), " ")
}

// helpText holds the usage a flag set printed last: pflag prints it on
// --help (main writes it to stdout then, exit 0) and on a bad flag (then
// only the one-line error is shown, pointing at greta help).
var helpText strings.Builder

// newFlags returns a flag set for a subcommand that reports errors instead
// of exiting, and accepts flags before and after positional arguments.
func newFlags(name, usageLine string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // the error comes back from Parse, as one line
	fs.Usage = func() {
		helpText.Reset()
		fmt.Fprintf(&helpText, "usage: greta %s %s\n\nflags:\n", name, usageLine)
		fs.SetOutput(&helpText)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	fs.SortFlags = false
	return fs
}

// parse parses args: a bad flag is a usage error (exit 2), --help returns
// flag.ErrHelp (exit 0, the usage on stdout).
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError("%v (see greta help %s)", err, fs.Name())
	}
	return nil
}
