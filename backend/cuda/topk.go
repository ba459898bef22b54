package cuda

import "greta/ml"

// TopK copies the logits to the host and selects there. (A stopgap: the
// selection belongs on the GPU, so that sampling copies k values, not the
// row.)
func (b *Backend) TopK(x ml.Tensor, k int, ids []int32, vals []float32) {
	buf := make([]float32, x.Cols()*x.Rows())
	b.Read(x, buf)
	ml.TopKHost(buf[len(buf)-x.Cols():], k, ids, vals)
}
