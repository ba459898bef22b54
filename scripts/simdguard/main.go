// Command simdguard fails when a SIMD kernel of backend/cpu is slower than
// its pure-Go twin. .ci/run runs it.
//
// It builds backend/cpu's tests with GOEXPERIMENT=simd and runs
// BenchmarkTwin (each kernel, then its twin, on the same inputs) in several
// rounds, each a separate process. For each kernel it takes the ratio
// simd/generic of every round and fails when the median ratio exceeds
// -limit. Pairing within a round and the median over rounds keep a noisy
// 2-core machine from flaking: a round where another process takes the CPU
// slows both sides of its pairs. A kernel slower than its twin is the
// signature of a legacy-SSE stall on Intel (see TestNoLegacySSE), which made
// 19 kernels 1.0-30x slower than pure Go at b67deb1; today the slowest
// ratio is about 0.35.
//
//	go run ./scripts/simdguard [-rounds 5] [-benchtime 10ms] [-limit 1] [-v]
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

var line = regexp.MustCompile(`^BenchmarkTwin/(.+)/(simd|generic)(?:-\d+)?\s+\d+\s+([0-9.]+) ns/op`)

func main() {
	rounds := flag.Int("rounds", 5, "benchmark rounds (separate processes)")
	benchtime := flag.String("benchtime", "10ms", "go test -benchtime of each kernel in a round")
	limit := flag.Float64("limit", 1, "largest median time ratio simd/generic allowed")
	verbose := flag.Bool("v", false, "print every kernel's median ratio")
	flag.Parse()
	if err := run(*rounds, *benchtime, *limit, *verbose); err != nil {
		fmt.Fprintln(os.Stderr, "simdguard:", err)
		os.Exit(1)
	}
}

func run(rounds int, benchtime string, limit float64, verbose bool) error {
	start := time.Now()
	dir, err := os.MkdirTemp("", "simdguard")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "cpu.test")
	build := exec.Command("go", "test", "-c", "-o", bin, "./backend/cpu")
	build.Env = append(os.Environ(), "GOEXPERIMENT=simd")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("building backend/cpu's tests: %w", err)
	}
	ratios := map[string][]float64{}
	for r := range rounds {
		// -test.v, so that the benchmark's skip line (no AVX-512) is printed.
		cmd := exec.Command(bin, "-test.v", "-test.run", "^$", "-test.bench", "^BenchmarkTwin$", "-test.benchtime", benchtime)
		cmd.Dir = "backend/cpu"
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("round %d: %w\n%s", r+1, err, out)
		}
		if bytes.Contains(out, []byte("no SIMD kernels on this CPU")) {
			fmt.Println("simdguard: skipped: no SIMD kernels on this CPU (AVX-512 F/CD/BW/DQ/VL needed)")
			return nil
		}
		ns := map[string][2]float64{}
		sc := bufio.NewScanner(bytes.NewReader(out))
		for sc.Scan() {
			m := line.FindStringSubmatch(sc.Text())
			if m == nil {
				continue
			}
			v, _ := strconv.ParseFloat(m[3], 64)
			p := ns[m[1]]
			if m[2] == "simd" {
				p[0] = v
			} else {
				p[1] = v
			}
			ns[m[1]] = p
		}
		for k, p := range ns {
			if p[0] > 0 && p[1] > 0 {
				ratios[k] = append(ratios[k], p[0]/p[1])
			}
		}
	}
	if len(ratios) == 0 {
		return fmt.Errorf("BenchmarkTwin reported no pairs")
	}
	type res struct {
		name   string
		median float64
		all    []float64
	}
	var rs []res
	for k, v := range ratios {
		rs = append(rs, res{k, median(v), v})
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].median > rs[j].median })
	var bad []string
	for _, r := range rs {
		if verbose {
			fmt.Printf("%-24s %.3f\n", r.name, r.median)
		}
		if r.median > limit {
			bad = append(bad, fmt.Sprintf("  %-24s simd/generic median %.2f (rounds: %s)", r.name, r.median, fmtAll(r.all)))
		}
	}
	fmt.Printf("simdguard: %d kernels, %d rounds, %.1fs; slowest simd/generic medians:", len(rs), rounds, time.Since(start).Seconds())
	for _, r := range rs[:min(3, len(rs))] {
		fmt.Printf(" %s %.2f", r.name, r.median)
	}
	fmt.Println()
	if len(bad) > 0 {
		return fmt.Errorf("%d SIMD kernels slower than their pure-Go twins (limit %.2f):\n%s", len(bad), limit, strings.Join(bad, "\n"))
	}
	return nil
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func fmtAll(v []float64) string {
	var b strings.Builder
	for i, x := range v {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%.2f", x)
	}
	return b.String()
}
