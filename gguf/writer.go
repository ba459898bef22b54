package gguf

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
)

// Writer streams a GGUF file: NewWriter writes the header, then WriteTensor
// is called once per tensor, in the order of the tensor infos.
//
// Tensor offsets are laid out as llama.cpp lays them out: each tensor starts
// at the next multiple of the alignment and is followed by zero padding, so
// reading a llama.cpp file and writing it back reproduces it byte for byte.
type Writer struct {
	w         *bufio.Writer
	n         int64 // bytes written
	alignment int64
	dataStart int64
	tensors   []TensorInfo
	next      int
}

// NewWriter writes the header for kv and tensors (version 2 or 3) and
// returns a Writer that takes the tensor data. The Offset fields of tensors
// are ignored and recomputed.
func NewWriter(out io.Writer, version uint32, kv []KV, tensors []TensorInfo) (*Writer, error) {
	if version != 2 && version != 3 {
		return nil, fmt.Errorf("gguf: cannot write version %d (only 2 or 3)", version)
	}
	w := &Writer{w: bufio.NewWriterSize(out, 1<<20), alignment: DefaultAlignment}
	for _, e := range kv {
		if e.Key == "general.alignment" {
			a, ok := e.Value.(uint32)
			if !ok || a == 0 || a&(a-1) != 0 {
				return nil, fmt.Errorf("gguf: general.alignment must be a uint32 power of two, got %v", e.Value)
			}
			w.alignment = int64(a)
		}
	}
	w.tensors = make([]TensorInfo, len(tensors))
	off := int64(0)
	for i, t := range tensors {
		if !t.Type.Known() {
			return nil, fmt.Errorf("gguf: tensor %q: unknown type %d", Clip(t.Name), t.Type)
		}
		if len(t.Shape) == 0 || len(t.Shape) > MaxDims {
			return nil, fmt.Errorf("gguf: tensor %q: rank %d", Clip(t.Name), len(t.Shape))
		}
		if t.Shape[0]%int64(t.Type.BlockSize()) != 0 {
			return nil, fmt.Errorf("gguf: tensor %q: innermost dimension %d is not a multiple of %d", Clip(t.Name), t.Shape[0], t.Type.BlockSize())
		}
		n, err := t.ByteSize()
		if err != nil {
			return nil, fmt.Errorf("gguf: tensor %q: %w", Clip(t.Name), err)
		}
		if off > math.MaxInt64-n-w.alignment {
			return nil, fmt.Errorf("gguf: tensor %q: data section exceeds 2^63 bytes", Clip(t.Name))
		}
		t.Shape = append([]int64(nil), t.Shape...)
		t.Offset = uint64(off)
		w.tensors[i] = t
		off = alignUp(off+n, w.alignment)
	}

	w.raw([]byte(Magic))
	w.u32(version)
	w.u64(uint64(len(tensors)))
	w.u64(uint64(len(kv)))
	for _, e := range kv {
		w.str(e.Key)
		t, ok := valueTypeOf(e.Value)
		if !ok {
			return nil, fmt.Errorf("gguf: metadata %q: cannot encode Go type %T", Clip(e.Key), e.Value)
		}
		w.u32(uint32(t))
		if err := w.value(e.Value); err != nil {
			return nil, fmt.Errorf("gguf: metadata %q: %w", Clip(e.Key), err)
		}
	}
	for _, t := range w.tensors {
		w.str(t.Name)
		w.u32(uint32(len(t.Shape)))
		for _, d := range t.Shape {
			w.u64(uint64(d))
		}
		w.u32(uint32(t.Type))
		w.u64(t.Offset)
	}
	if len(w.tensors) > 0 { // llama.cpp writes no padding after a header with no data
		w.pad()
	}
	w.dataStart = w.n
	return w, nil
}

// Tensors returns the tensor infos with the offsets the writer assigned.
func (w *Writer) Tensors() []TensorInfo { return w.tensors }

// WriteTensor writes the next tensor's data, which must be exactly its size.
func (w *Writer) WriteTensor(data []byte) error {
	if w.next >= len(w.tensors) {
		return fmt.Errorf("gguf: WriteTensor called more times than there are tensors (%d)", len(w.tensors))
	}
	t := &w.tensors[w.next]
	if int64(len(data)) != t.Size() {
		return fmt.Errorf("gguf: tensor %q: got %d bytes, expected %d", Clip(t.Name), len(data), t.Size())
	}
	w.raw(data)
	w.pad()
	w.next++
	return nil
}

// Flush writes out what is buffered.
func (w *Writer) Flush() error { return w.w.Flush() }

// Close flushes the output; it fails if some tensor was not written.
func (w *Writer) Close() error {
	if w.next != len(w.tensors) {
		return fmt.Errorf("gguf: %d of %d tensors written", w.next, len(w.tensors))
	}
	return w.w.Flush()
}

func (w *Writer) pad() {
	if r := w.n % w.alignment; r != 0 {
		w.raw(make([]byte, w.alignment-r))
	}
}

func (w *Writer) raw(b []byte) {
	w.w.Write(b) // bufio keeps the first error; Close reports it
	w.n += int64(len(b))
}

func (w *Writer) u32(v uint32) { w.raw(binary.LittleEndian.AppendUint32(nil, v)) }
func (w *Writer) u64(v uint64) { w.raw(binary.LittleEndian.AppendUint64(nil, v)) }
func (w *Writer) str(s string) { w.u64(uint64(len(s))); w.raw([]byte(s)) }

func (w *Writer) value(v any) error {
	switch x := v.(type) {
	case uint8:
		w.raw([]byte{x})
	case int8:
		w.raw([]byte{byte(x)})
	case bool:
		if x {
			w.raw([]byte{1})
		} else {
			w.raw([]byte{0})
		}
	case uint16:
		w.raw(binary.LittleEndian.AppendUint16(nil, x))
	case int16:
		w.raw(binary.LittleEndian.AppendUint16(nil, uint16(x)))
	case uint32:
		w.u32(x)
	case int32:
		w.u32(uint32(x))
	case float32:
		w.u32(math.Float32bits(x))
	case uint64:
		w.u64(x)
	case int64:
		w.u64(uint64(x))
	case float64:
		w.u64(math.Float64bits(x))
	case string:
		w.str(x)
	case Array:
		w.u32(uint32(x.Type))
		w.u64(uint64(x.Len()))
		return w.array(x)
	default:
		return fmt.Errorf("cannot encode Go type %T", v)
	}
	return nil
}

func (w *Writer) array(a Array) error {
	var err error
	each := func(n int, f func(i int) any) {
		for i := 0; i < n && err == nil; i++ {
			err = w.value(f(i))
		}
	}
	switch d := a.Data.(type) {
	case []uint8:
		w.raw(d)
	case []int8:
		each(len(d), func(i int) any { return d[i] })
	case []bool:
		each(len(d), func(i int) any { return d[i] })
	case []uint16:
		each(len(d), func(i int) any { return d[i] })
	case []int16:
		each(len(d), func(i int) any { return d[i] })
	case []uint32:
		each(len(d), func(i int) any { return d[i] })
	case []int32:
		for _, x := range d {
			w.u32(uint32(x))
		}
	case []float32:
		for _, x := range d {
			w.u32(math.Float32bits(x))
		}
	case []uint64:
		each(len(d), func(i int) any { return d[i] })
	case []int64:
		each(len(d), func(i int) any { return d[i] })
	case []float64:
		each(len(d), func(i int) any { return d[i] })
	case []string:
		for _, s := range d {
			w.str(s)
		}
	case []Array:
		for _, x := range d {
			w.u32(uint32(x.Type))
			w.u64(uint64(x.Len()))
			if err = w.array(x); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("cannot encode array data of Go type %T", a.Data)
	}
	return err
}

// Rewrite writes f to out unchanged: same metadata, tensor infos and data.
func Rewrite(out io.Writer, f *File) error {
	w, err := NewWriter(out, f.Version, f.KV, f.Tensors)
	if err != nil {
		return err
	}
	for i := range f.Tensors {
		if err := w.WriteTensor(f.TensorData(&f.Tensors[i])); err != nil {
			return err
		}
	}
	return w.Close()
}
