package ml

import "fmt"

// PageSize is the number of positions one KV cache page holds. 16, as in
// vLLM: small enough that a sequence wastes at most 15 slots, large enough
// that the CPU's key blocks (16 positions transposed, one vector a
// dimension) and a GPU warp's tile fill.
const PageSize = 16

// Batch describes the rows of one forward call, which may come from many
// sequences: row i is the token at position Pos[i] of sequence Seq[i].
//
// The rows of one sequence are consecutive and their positions increase by
// one (a prompt chunk, or one decode row); sequences are numbered 0, 1, 2,
// ... in row order, so Seq[0] = 0 and each Seq[i] is Seq[i-1] or one more. Attention stores each row's key
// and value at its position and lets it see positions 0..Pos[i] of its own
// sequence only: the ones already in the cache and the earlier rows of its
// chunk.
//
// The cache is a pool of pages of PageSize positions. Pages[s] is sequence
// s's page table: its positions 16j..16j+15 live in pool page Pages[s][j].
//
// Gen marks the rows that decode a generated token, as opposed to prompt
// rows; a backend may give the two roles different numerics (the CPU
// quantizes the activations of prompt rows to 8 bits and of generated rows
// to 15), but a row's numerics never depend on the other rows of the batch.
// A nil Gen means every row is a prompt row.
//
// Out lists the rows whose logits are wanted, in increasing order; the
// model's logits tensor holds one row for each.
type Batch struct {
	Pos   []int32
	Seq   []int32
	Gen   []bool
	Pages [][]int32
	Out   []int32
}

// Rows is the number of rows.
func (b *Batch) Rows() int { return len(b.Pos) }

// IsGen reports whether row i decodes a generated token.
func (b *Batch) IsGen(i int) bool { return b.Gen != nil && b.Gen[i] }

// Page returns the pool page and slot that hold row i's position.
func (b *Batch) Page(i int) (page, slot int) {
	p := int(b.Pos[i])
	return int(b.Pages[b.Seq[i]][p/PageSize]), p % PageSize
}

// Check reports whether b is well formed for a cache of pages pages: rows
// of a sequence consecutive with positions increasing by one, and a page
// for each position. The model checks every batch once before it reaches a
// backend, so backends may trust it.
func (b *Batch) Check(pages int) error {
	n := len(b.Pos)
	if n == 0 {
		return fmt.Errorf("batch: no rows")
	}
	if len(b.Seq) != n || (b.Gen != nil && len(b.Gen) != n) {
		return fmt.Errorf("batch: %d positions, %d sequence ids, %d roles", n, len(b.Seq), len(b.Gen))
	}
	for i := range n {
		s, p := b.Seq[i], b.Pos[i]
		if s < 0 || int(s) >= len(b.Pages) {
			return fmt.Errorf("batch: row %d names sequence %d of %d", i, s, len(b.Pages))
		}
		if p < 0 {
			return fmt.Errorf("batch: row %d at position %d", i, p)
		}
		if i == 0 && s != 0 || i > 0 && s != b.Seq[i-1] && s != b.Seq[i-1]+1 {
			return fmt.Errorf("batch: row %d is of sequence %d: sequences must be numbered 0, 1, 2, ... in row order", i, s)
		}
		if i > 0 && b.Seq[i-1] == s && b.Pos[i-1] != p-1 {
			return fmt.Errorf("batch: row %d of sequence %d at position %d follows position %d", i, s, p, b.Pos[i-1])
		}
		if int(p)/PageSize >= len(b.Pages[s]) {
			return fmt.Errorf("batch: row %d at position %d of sequence %d, which has %d pages", i, p, s, len(b.Pages[s]))
		}
	}
	if int(b.Seq[n-1]) != len(b.Pages)-1 {
		return fmt.Errorf("batch: %d page tables for %d sequences", len(b.Pages), b.Seq[n-1]+1)
	}
	for s, t := range b.Pages {
		for j, pg := range t {
			if pg < 0 || int(pg) >= pages {
				return fmt.Errorf("batch: sequence %d page %d is pool page %d of %d", s, j, pg, pages)
			}
		}
	}
	for i, r := range b.Out {
		if r < 0 || int(r) >= n || (i > 0 && r <= b.Out[i-1]) {
			return fmt.Errorf("batch: output rows must increase within 0..%d: %v", n-1, b.Out)
		}
	}
	return nil
}

// Contiguous is the batch of one sequence whose rows are at positions
// pos0..pos0+n-1 over pages 0, 1, 2, ... of the pool in order: the layout
// of a single-sequence run. Out is the last row, or every row with all.
func Contiguous(pos0, n int, all bool) *Batch {
	b := &Batch{Pos: make([]int32, n), Seq: make([]int32, n)}
	for i := range n {
		b.Pos[i] = int32(pos0 + i)
	}
	pages := make([]int32, (pos0+n+PageSize-1)/PageSize)
	for j := range pages {
		pages[j] = int32(j)
	}
	b.Pages = [][]int32{pages}
	if all {
		b.Out = make([]int32, n)
		for i := range n {
			b.Out[i] = int32(i)
		}
	} else {
		b.Out = []int32{int32(n - 1)}
	}
	return b
}

// KVSpec is the shape of a paged KV cache: Pages pages of PageSize
// positions, each holding the keys and values of every layer.
type KVSpec struct {
	Layers int
	KVDim  int // n_kv_heads · head_dim
	Pages  int
	// DType is the type the cache holds its values in: "" for the backend's
	// default, "f16" or "f32". A backend refuses a type it cannot hold.
	DType string
}

// Tokens is the number of positions the cache holds.
func (s KVSpec) Tokens() int { return s.Pages * PageSize }
