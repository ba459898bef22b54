package tokenizer

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
)

// benchText builds a ~1 MiB mix of English prose and Go code from files
// every Go installation has: Newton's Opticks (the corpus of Go's own
// compression benchmarks) and net/http's sources, interleaved in 8 KiB
// pieces so neither kind comes in one long run.
func benchText(b *testing.B) string {
	b.Helper()
	root := runtime.GOROOT()
	prose, err := os.ReadFile(filepath.Join(root, "src", "testdata", "Isaac.Newton-Opticks.txt"))
	if err != nil {
		b.Skipf("prose corpus not found in GOROOT: %v", err)
	}
	files, _ := filepath.Glob(filepath.Join(root, "src", "net", "http", "*.go"))
	sort.Strings(files)
	var code strings.Builder
	for _, f := range files {
		if code.Len() >= 512<<10 {
			break
		}
		src, err := os.ReadFile(f)
		if err == nil {
			code.Write(src)
		}
	}
	if code.Len() < 512<<10 || len(prose) < 512<<10 {
		b.Skipf("corpus too small: %d bytes of code, %d of prose", code.Len(), len(prose))
	}
	p, c := string(prose[:512<<10]), code.String()[:512<<10]
	var mix strings.Builder
	const piece = 8 << 10
	for i := 0; i < len(p); i += piece {
		mix.WriteString(p[i : i+piece])
		mix.WriteString(c[i : i+piece])
	}
	return mix.String()
}

// BenchmarkEncode measures single-goroutine tokenization throughput
// (b.SetBytes: MB/s). "cold" clears the word cache before every run, as the
// first prompt after loading sees it; "warm" keeps it.
func BenchmarkEncode(b *testing.B) {
	text := benchText(b)
	for _, v := range []struct{ name, file string }{
		{"spm", "vocab/ggml-vocab-llama-spm.gguf"},
		{"bpe", "vocab/ggml-vocab-llama-bpe.gguf"},
	} {
		tok := loadShared(b, v.file)
		for _, warm := range []bool{false, true} {
			name := v.name + "/cold"
			if warm {
				name = v.name + "/warm"
			}
			b.Run(name, func(b *testing.B) {
				b.SetBytes(int64(len(text)))
				var n int
				for i := 0; i < b.N; i++ {
					if !warm {
						b.StopTimer()
						tok.cacheMu.Lock()
						tok.cache = make(map[string][]int32)
						tok.cacheMu.Unlock()
						b.StartTimer()
					}
					n = len(tok.Encode(text, false, false))
				}
				b.ReportMetric(float64(n), "tokens")
			})
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	text := benchText(b)
	for _, v := range []struct{ name, file string }{
		{"spm", "vocab/ggml-vocab-llama-spm.gguf"},
		{"bpe", "vocab/ggml-vocab-llama-bpe.gguf"},
	} {
		tok := loadShared(b, v.file)
		ids := tok.Encode(text, false, false)
		b.Run(v.name, func(b *testing.B) {
			b.SetBytes(int64(len(text)))
			for i := 0; i < b.N; i++ {
				d := tok.NewStreamDecoder()
				for _, id := range ids {
					d.Add(id)
				}
				d.Flush()
			}
		})
	}
}

func BenchmarkLoad(b *testing.B) {
	for _, v := range []struct{ name, file string }{
		{"spm", "vocab/ggml-vocab-llama-spm.gguf"},
		{"bpe", "vocab/ggml-vocab-llama-bpe.gguf"},
	} {
		p := sharedPath(b, v.file)
		b.Run(v.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				withMetadata(b, v.file, nil)
			}
			_ = p
		})
	}
}

// BenchmarkLongWords checks that merging stays near-linear on 256 KiB
// inputs with no word breaks, where one word is the whole text.
func BenchmarkLongWords(b *testing.B) {
	n := 256 << 10
	if s := os.Getenv("GRETA_LONGWORD_KIB"); s != "" {
		fmt.Sscan(s, &n)
		n <<= 10
	}
	inputs := map[string]string{
		"letters": strings.Repeat("abcdefghij", n/10),
		"same":    strings.Repeat("a", n),
		"spaces":  strings.Repeat(" ", n),
		"cjk":     strings.Repeat("中文字符測試", n/18),
		"digits":  strings.Repeat("1234567890", n/10),
	}
	for _, v := range []struct{ name, file string }{
		{"spm", "vocab/ggml-vocab-llama-spm.gguf"},
		{"bpe", "vocab/ggml-vocab-llama-bpe.gguf"},
	} {
		tok := loadShared(b, v.file)
		for _, k := range []string{"letters", "same", "spaces", "cjk", "digits"} {
			text := inputs[k]
			b.Run(v.name+"/"+k, func(b *testing.B) {
				b.SetBytes(int64(len(text)))
				for i := 0; i < b.N; i++ {
					tok.Encode(text, false, false)
				}
			})
		}
	}
}
