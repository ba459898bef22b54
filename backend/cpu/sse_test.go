//go:build goexperiment.simd && amd64

package cpu

import (
	"bufio"
	"bytes"
	"debug/elf"
	"debug/gosym"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// TestNoLegacySSE disassembles this test binary and fails when a SIMD kernel
// (a function of a file that imports simd/archsimd) can run a legacy-SSE instruction (one
// without a VEX/EVEX encoding: MOVSS, MULSS, MOVQ to an X register, PXOR,
// CVTSS2SD, ...) while the upper halves of the vector registers may be
// dirty. Intel CPUs stall on every such instruction (hundreds of cycles
// here); AMD Zen 4 does not, which is how 38 of them went unnoticed. The Go
// compiler emits legacy SSE for scalar float32 code, for the count of
// ShiftAllLeft/ShiftAllRight (golang/go#80835) and for a float32 result, so
// a kernel must keep scalar float code out of its vector part and run
// archsimd.ClearAVXUpperBits (VZEROUPPER) before it returns a scalar or
// calls scalar code.
//
// The check is a small data flow over the disassembly: "dirty" after any
// instruction on a Y or Z register, "clean" after VZEROUPPER, entered dirty
// only by a function with vector parameters. It fails on legacy SSE while
// dirty, on a RET while dirty from a function without vector results, and on
// a CALL while dirty into code outside the kernels (other than the
// runtime's panics). It needs GNU objdump (binutils): `go tool objdump`
// cannot decode EVEX instructions and loses the instruction boundaries.
func TestNoLegacySSE(t *testing.T) {
	objdump, err := exec.LookPath("objdump")
	if err != nil {
		t.Skip("GNU objdump (binutils) is not installed; it is needed to disassemble AVX-512")
	}
	kernels := simdFuncs(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(objdump, "-d", "-w", "--no-show-raw-insn", exe).Output()
	if err != nil {
		t.Skipf("objdump %s: %v", exe, err)
	}
	syms, err := funcRanges(exe)
	if err != nil {
		t.Fatal(err)
	}
	funcs := parseObjdump(out, syms)
	var bad, asm []string
	seen := 0
	for name, k := range kernels {
		ins, ok := funcs[name]
		if k.asm {
			// Assembly is entered with the state as it is and must leave it
			// clean.
			if a, found := funcs[name+".abi0"]; found {
				ins, ok = a, true
			}
			k.vecIn = true
		}
		if !ok {
			continue // inlined everywhere or not linked
		}
		seen++
		if k.asm {
			asm = append(asm, name)
		}
		bad = append(bad, checkSSE(name, ins, k, kernels)...)
	}
	if seen < 20 {
		t.Fatalf("found only %d of the %d SIMD functions in the disassembly; is the symbol prefix right?", seen, len(kernels))
	}
	sort.Strings(asm)
	t.Logf("checked %d functions, %d of them assembly (%s)", seen, len(asm), strings.Join(asm, " "))
	sort.Strings(bad)
	if len(bad) > 0 {
		t.Errorf("%d legacy-SSE hazards in SIMD kernels:\n%s", len(bad), strings.Join(bad, "\n"))
	}
}

// simdKind says what a SIMD function receives and returns; asm marks one
// declared without a body (written in assembly).
type simdKind struct{ vecIn, vecOut, asm bool }

// simdFuncs parses this package's files that import simd/archsimd: each
// function's name and
// whether its parameters or results hold vectors (archsimd types or this
// package's aliases of them).
func simdFuncs(t *testing.T) map[string]simdKind {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	aliases := map[string]bool{}
	var decls []*ast.FuncDecl
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		if !importsArchsimd(af) {
			continue
		}
		af, err = parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range af.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				if d.Recv == nil && d.Name.Name != "init" {
					decls = append(decls, d)
				}
			case *ast.GenDecl:
				for _, s := range d.Specs {
					if ts, ok := s.(*ast.TypeSpec); ok && mentionsVec(ts.Type, nil) {
						aliases[ts.Name.Name] = true
					}
				}
			}
		}
	}
	m := map[string]simdKind{}
	for _, d := range decls {
		m[d.Name.Name] = simdKind{
			vecIn:  mentionsVec(d.Type.Params, aliases),
			vecOut: d.Type.Results != nil && mentionsVec(d.Type.Results, aliases),
			asm:    d.Body == nil,
		}
	}
	return m
}

func importsArchsimd(f *ast.File) bool {
	for _, im := range f.Imports {
		if im.Path.Value == `"simd/archsimd"` {
			return true
		}
	}
	return false
}

func mentionsVec(n ast.Node, aliases map[string]bool) bool {
	found := false
	ast.Inspect(n, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.SelectorExpr:
			if x, ok := n.X.(*ast.Ident); ok && x.Name == "archsimd" {
				found = true
			}
		case *ast.Ident:
			if aliases[n.Name] {
				found = true
			}
		case *ast.StarExpr:
			return false // a pointer to a vector is not one
		}
		return !found
	})
	return found
}

type insn struct {
	addr   uint64
	op     string // mnemonic, without prefixes such as "rep" or "notrack"
	args   string
	target uint64 // for jumps and calls: the destination, or 0
	callee string // for calls: the symbol
}

// symRange is one function's code, [entry, end).
type symRange struct {
	name       string
	entry, end uint64
}

// funcRanges reads the functions of the executable from its pclntab (a
// test binary has no ELF symbol table), sorted by address.
func funcRanges(exe string) ([]symRange, error) {
	f, err := elf.Open(exe)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	pcln, text := f.Section(".gopclntab"), f.Section(".text")
	if pcln == nil || text == nil {
		return nil, fmt.Errorf("%s has no .gopclntab or .text", exe)
	}
	data, err := pcln.Data()
	if err != nil {
		return nil, err
	}
	tab, err := gosym.NewTable(nil, gosym.NewLineTable(data, text.Addr))
	if err != nil {
		return nil, err
	}
	var r []symRange
	for _, fn := range tab.Funcs {
		r = append(r, symRange{fn.Name, fn.Entry, fn.End})
	}
	sort.Slice(r, func(i, j int) bool { return r[i].entry < r[j].entry })
	return r, nil
}

var (
	insnLine = regexp.MustCompile(`^\s*([0-9a-f]+):\s+(.*)$`)
	dest     = regexp.MustCompile(`^(?:0x)?([0-9a-f]+)(?: <([^>]+)>)?`)
)

// parseObjdump splits `objdump -d -w --no-show-raw-insn` output into the
// instructions of each function of this package (keyed by its name without
// the package path), with the callee of each call named from syms.
func parseObjdump(out []byte, syms []symRange) map[string][]insn {
	funcs := map[string][]insn{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		m := insnLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		addr, _ := strconv.ParseUint(m[1], 16, 64)
		k := sort.Search(len(syms), func(i int) bool { return syms[i].end > addr })
		if k == len(syms) || addr < syms[k].entry {
			continue
		}
		cur, ok := strings.CutPrefix(syms[k].name, "greta/backend/cpu.")
		if !ok || strings.Contains(strings.TrimSuffix(cur, ".abi0"), ".") {
			continue
		}
		text := m[2]
		if i := strings.Index(text, "#"); i >= 0 {
			text = text[:i]
		}
		fields := strings.Fields(text)
		for len(fields) > 1 && (fields[0] == "rep" || fields[0] == "repz" || fields[0] == "repnz" || fields[0] == "notrack" || fields[0] == "lock" || fields[0] == "bnd" || fields[0] == "data16" || fields[0] == "cs" || fields[0] == "ds") {
			fields = fields[1:]
		}
		if len(fields) == 0 {
			continue
		}
		in := insn{addr: addr, op: fields[0], args: strings.Join(fields[1:], " ")}
		if in.op[0] == 'j' || strings.HasPrefix(in.op, "call") {
			if d := dest.FindStringSubmatch(in.args); d != nil {
				in.target, _ = strconv.ParseUint(d[1], 16, 64)
				if k := sort.Search(len(syms), func(i int) bool { return syms[i].end > in.target }); k < len(syms) && in.target >= syms[k].entry {
					in.callee = syms[k].name
				}
			}
		}
		funcs[cur] = append(funcs[cur], in)
	}
	return funcs
}

// checkSSE runs the data flow over one function's instructions and returns
// its hazards.
func checkSSE(name string, ins []insn, k simdKind, kernels map[string]simdKind) []string {
	at := map[uint64]int{}
	for i, in := range ins {
		at[in.addr] = i
	}
	dirty := make([]bool, len(ins)) // may the upper state be dirty on entry to ins[i]?
	visited := make([]bool, len(ins))
	var bad []string
	report := map[int]bool{}
	work := []int{0}
	dirty[0] = k.vecIn
	for len(work) > 0 {
		i := work[len(work)-1]
		work = work[:len(work)-1]
		in := ins[i]
		d := dirty[i]
		wide := strings.Contains(in.args, "%ymm") || strings.Contains(in.args, "%zmm")
		legacy := in.op[0] != 'v' && strings.Contains(in.args, "%xmm")
		switch {
		case in.op == "vzeroupper" || in.op == "vzeroall":
			d = false
		case wide:
			d = true
		}
		if dirty[i] && legacy && !report[i] {
			report[i] = true
			bad = append(bad, name+": "+in.op+" "+in.args+" at "+strconv.FormatUint(in.addr, 16)+" after vector code")
		}
		var next []int
		stop := false
		switch {
		case in.op == "ret":
			if d && !k.vecOut && !report[i] {
				report[i] = true
				bad = append(bad, name+": returns with the upper vector state dirty (run archsimd.ClearAVXUpperBits first)")
			}
			stop = true
		case in.op == "jmp":
			if j, ok := at[in.target]; ok {
				next = append(next, j)
			}
			stop = true // a jump out of the function (a tail call) ends the path
		case in.op[0] == 'j':
			if j, ok := at[in.target]; ok {
				next = append(next, j)
			}
		case strings.HasPrefix(in.op, "call"):
			callee, _ := strings.CutPrefix(in.callee, "greta/backend/cpu.")
			callee = strings.TrimSuffix(callee, ".abi0")
			if strings.HasPrefix(in.callee, "runtime.panic") || strings.HasPrefix(in.callee, "runtime.goPanic") {
				stop = true
				break
			}
			if ck, ok := kernels[callee]; ok {
				if !ck.vecOut {
					d = false // a kernel returns clean (checked on its own)
				}
				// (After a call into assembly the ABI0 sequence re-zeroes X15
				// with XORPS: it runs clean, as the callee returned clean.)
			} else if d && !strings.HasPrefix(in.callee, "runtime.morestack") && !report[i] {
				report[i] = true
				bad = append(bad, name+": calls "+in.callee+" with the upper vector state dirty")
			}
		case in.op == "ud2" || in.op == "int3" || in.op == "hlt":
			stop = true
		}
		if !stop && i+1 < len(ins) {
			next = append(next, i+1)
		}
		for _, j := range next {
			if !visited[j] || (d && !dirty[j]) {
				visited[j] = true
				dirty[j] = dirty[j] || d
				work = append(work, j)
			}
		}
	}
	return bad
}
