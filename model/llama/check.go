package llama

import (
	"fmt"
	"math"
	"runtime"
	"sync"

	"greta/gguf"
	"greta/quant"
)

// NonFinite reports a tensor that holds NaN or ±Inf values.
type NonFinite struct {
	Tensor string
	First  int64   // flat index of the first one, in GGUF order (innermost dimension fastest)
	Value  float32 // the value there
	Count  int64   // how many values are not finite
	Of     int64   // the tensor's element count
}

func (n NonFinite) Error() string {
	return fmt.Sprintf("tensor %q: %d of %d values are not finite (the first, at index %d, is %v)", gguf.Clip(n.Tensor), n.Count, n.Of, n.First, n.Value)
}

// checkChunk is how many values one worker dequantizes at a time: a
// multiple of every block size (32, 256), 256 KiB of float32.
const checkChunk = 1 << 16

// CheckFinite dequantizes every tensor of f, chunk by chunk so memory stays
// at workers × 256 KiB whatever the model's size, and returns one
// NonFinite per tensor that holds NaN or ±Inf, in file order, with the
// names of the tensors whose type it cannot decode. workers ≤ 0 means one
// per CPU. A NaN norm or an infinite embedding row makes every logit NaN,
// and a model that looks valid then generates garbage.
func CheckFinite(f *gguf.File, workers int) (bad []NonFinite, skipped []string) {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	results := make([]*NonFinite, len(f.Tensors))
	jobs := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]float32, checkChunk)
			for i := range jobs {
				results[i] = scanTensor(f, &f.Tensors[i], buf)
			}
		}()
	}
	for i := range f.Tensors {
		if !quant.Supported(f.Tensors[i].Type) {
			skipped = append(skipped, f.Tensors[i].Name)
			continue
		}
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	for _, r := range results {
		if r != nil {
			bad = append(bad, *r)
		}
	}
	return bad, skipped
}

func scanTensor(f *gguf.File, t *gguf.TensorInfo, buf []float32) *NonFinite {
	data := f.TensorData(t)
	n := t.NumElements()
	bs, ts := int64(t.Type.BlockSize()), int64(t.Type.TypeSize())
	var r *NonFinite
	for done := int64(0); done < n; {
		k := min(n-done, int64(len(buf)))
		src := data[done/bs*ts : (done+k)/bs*ts]
		if err := quant.Dequantize(t.Type, buf[:k], src); err != nil {
			return nil // sizes were checked by the reader; not reached
		}
		for j, v := range buf[:k] {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				if r == nil {
					r = &NonFinite{Tensor: t.Name, First: done + int64(j), Value: v, Of: n}
				}
				r.Count++
			}
		}
		done += k
	}
	return r
}
