// Package cuda is the NVIDIA GPU backend. (Stub: the real backend replaces
// this file.)
package cuda

import (
	"errors"

	"greta/ml"
)

// New opens the first CUDA device.
func New() (ml.Backend, error) {
	return nil, errors.New("--device cuda: the CUDA backend is not built yet")
}
