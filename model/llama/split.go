package llama

import "fmt"

// CheckTensorParallel says whether the model's layers split evenly over n
// GPUs, Megatron-style (docs/SCALE.md): q, k, v and gate/up split by output
// rows (attention heads and the FFN's hidden dimension), o and down by input
// columns, followed by an all-reduce; the paged KV cache splits by KV head.
// block is the largest quantization block of the file's weight types (256
// for the K-quants, 32 for Q8_0 and Q4_0, 1 for float types): a row-parallel
// slice must hold whole blocks. It runs before anything is allocated, and
// its error is one line naming what does not divide.
func (c *Config) CheckTensorParallel(n, block int) error {
	if n < 1 {
		return fmt.Errorf("tensor parallel %d: must be at least 1", n)
	}
	if block < 1 {
		block = 1
	}
	if n == 1 {
		return nil
	}
	switch {
	case c.NKVHeads%n != 0:
		return fmt.Errorf("tensor parallel %d: the model's %d KV heads do not divide by %d", n, c.NKVHeads, n)
	case c.NHeads%n != 0:
		return fmt.Errorf("tensor parallel %d: the model's %d attention heads do not divide by %d", n, c.NHeads, n)
	case c.HiddenDim%n != 0:
		return fmt.Errorf("tensor parallel %d: the model's FFN size %d does not divide by %d", n, c.HiddenDim, n)
	case (c.HiddenDim/n)%block != 0:
		return fmt.Errorf("tensor parallel %d: a GPU's %d FFN columns of ffn_down are not whole %d-value quantization blocks", n, c.HiddenDim/n, block)
	case (c.NHeads/n*c.HeadDim)%block != 0:
		return fmt.Errorf("tensor parallel %d: a GPU's %d columns of attn_output are not whole %d-value quantization blocks", n, c.NHeads/n*c.HeadDim, block)
	}
	return nil
}
