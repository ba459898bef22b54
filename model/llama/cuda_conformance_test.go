package llama_test

import (
	"testing"

	"greta/backend/cuda"
	"greta/ml"
)

// The CUDA backend joins the conformance tests where a GPU is present.
// Activations stay float32 (prefill GEMMs round them and the weights to
// f16, the KV cache holds f16), far inside the 1e-4 bound.
func init() {
	backends = append(backends, backendCase{"cuda", newCUDA, 1e-4})
}

func newCUDA(t *testing.T) ml.Backend {
	b, err := cuda.New()
	if err != nil {
		t.Skipf("no GPU: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}
