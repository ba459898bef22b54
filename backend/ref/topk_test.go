package ref

import (
	"testing"

	"greta/ml/mltest"
)

func TestTopK(t *testing.T) {
	mltest.TopK(t, New(), []int{1, 17, 1000, 32000})
}
