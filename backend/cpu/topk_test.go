package cpu

import (
	"testing"

	"greta/ml/mltest"
)

func TestTopK(t *testing.T) {
	b := New(2)
	defer b.Close()
	mltest.TopK(t, b, []int{1, 17, 1000, 32000, 128256})
}
