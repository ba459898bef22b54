// Package gguf reads and writes GGUF files (versions 2 and 3), the
// container llama.cpp uses for models: a header of typed key/value metadata,
// a table of tensor infos, and an aligned data section.
//
// Tensor data is memory-mapped and never copied into the Go heap. Every
// count and length in the header is checked against the bytes that remain,
// so a hostile header cannot make the reader allocate more than the file
// could describe.
package gguf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"sort"

	"golang.org/x/sys/unix"
)

// Magic is the first four bytes of every GGUF file.
const Magic = "GGUF"

// DefaultAlignment is the data alignment when general.alignment is absent.
const DefaultAlignment = 32

// MaxDims is the largest tensor rank ggml supports.
const MaxDims = 4

// maxArrayDepth bounds arrays of arrays, so a hostile file cannot recurse deeply.
const maxArrayDepth = 4

// ValueType is the type tag of a metadata value.
type ValueType uint32

const (
	TypeUint8   ValueType = 0
	TypeInt8    ValueType = 1
	TypeUint16  ValueType = 2
	TypeInt16   ValueType = 3
	TypeUint32  ValueType = 4
	TypeInt32   ValueType = 5
	TypeFloat32 ValueType = 6
	TypeBool    ValueType = 7
	TypeString  ValueType = 8
	TypeArray   ValueType = 9
	TypeUint64  ValueType = 10
	TypeInt64   ValueType = 11
	TypeFloat64 ValueType = 12
)

var valueTypeNames = [...]string{"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "bool", "string", "array", "uint64", "int64", "float64"}

func (t ValueType) String() string {
	if int(t) < len(valueTypeNames) {
		return valueTypeNames[t]
	}
	return fmt.Sprintf("valuetype(%d)", uint32(t))
}

// fixedSize is the encoded size of a scalar value type, 0 for string/array.
func (t ValueType) fixedSize() int {
	switch t {
	case TypeUint8, TypeInt8, TypeBool:
		return 1
	case TypeUint16, TypeInt16:
		return 2
	case TypeUint32, TypeInt32, TypeFloat32:
		return 4
	case TypeUint64, TypeInt64, TypeFloat64:
		return 8
	}
	return 0
}

// KV is one metadata entry. Value holds a Go value whose type matches the
// GGUF type one to one: uint8, int8, uint16, int16, uint32, int32, float32,
// bool, string, uint64, int64, float64, or Array.
type KV struct {
	Key   string
	Value any
}

// Array is a metadata array. Data is a typed slice matching Type:
// []uint8, []int8, []uint16, []int16, []uint32, []int32, []float32, []bool,
// []string, []uint64, []int64, []float64, or []Array for nested arrays.
type Array struct {
	Type ValueType
	Data any
}

// Len returns the number of elements.
func (a Array) Len() int {
	switch d := a.Data.(type) {
	case []uint8:
		return len(d)
	case []int8:
		return len(d)
	case []uint16:
		return len(d)
	case []int16:
		return len(d)
	case []uint32:
		return len(d)
	case []int32:
		return len(d)
	case []float32:
		return len(d)
	case []bool:
		return len(d)
	case []string:
		return len(d)
	case []uint64:
		return len(d)
	case []int64:
		return len(d)
	case []float64:
		return len(d)
	case []Array:
		return len(d)
	}
	return 0
}

// TensorInfo describes one tensor. Shape is innermost-first, as stored.
type TensorInfo struct {
	Name   string
	Shape  []int64
	Type   Type
	Offset uint64 // relative to the start of the data section
}

// NumElements is the product of the shape. It is exact for a tensor from
// Parse (at most 2^62 elements); see ByteSize for a checked count.
func (t *TensorInfo) NumElements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// maxElements bounds a tensor's element count (ggml's int64 ne product).
const maxElements = 1 << 62

// ByteSize is the tensor's size in bytes, or an error when the shape is
// empty, has a dimension < 1, or its element or byte count overflows int64.
func (t *TensorInfo) ByteSize() (int64, error) {
	if !t.Type.Known() {
		return 0, fmt.Errorf("unknown ggml type id %d", uint32(t.Type))
	}
	if len(t.Shape) == 0 {
		return 0, errors.New("rank 0")
	}
	n := int64(1)
	for d, x := range t.Shape {
		if x < 1 {
			return 0, fmt.Errorf("dimension %d is %d, expected ≥ 1", d, x)
		}
		if n > maxElements/x {
			return 0, fmt.Errorf("shape %v: element count overflows (more than 2^62)", t.Shape)
		}
		n *= x
	}
	bs, ts := int64(t.Type.BlockSize()), int64(t.Type.TypeSize())
	if n%bs != 0 {
		return 0, fmt.Errorf("%d elements are not a whole number of %s blocks of %d", n, t.Type, bs)
	}
	if n/bs > math.MaxInt64/ts {
		return 0, fmt.Errorf("shape %v: %d elements of %s overflow a 64-bit byte count", t.Shape, n, t.Type)
	}
	return n / bs * ts, nil
}

// Size is the tensor's size in bytes. Parse and NewWriter accept only
// tensors whose ByteSize succeeds; for any other, Size is -1.
func (t *TensorInfo) Size() int64 {
	n, err := t.ByteSize()
	if err != nil {
		return -1
	}
	return n
}

// File is a parsed GGUF file. Tensor data stays in the mapped file.
type File struct {
	Path       string
	Version    uint32
	KV         []KV
	Tensors    []TensorInfo
	Alignment  int64
	DataOffset int64 // absolute offset of the data section
	Size       int64 // file size in bytes

	kvIndex     map[string]int
	tensorIndex map[string]int
	data        []byte
	mapped      bool
}

// Open memory-maps and parses the GGUF file at path. The path must name a
// regular file: a FIFO, device or directory is refused before it is opened
// (opening a FIFO for reading would block until a writer appears), and the
// file is checked again once open, in case the path was swapped meanwhile.
func Open(path string) (*File, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if err := regular(path, st); err != nil {
		return nil, err
	}
	// O_NONBLOCK: if the path became a FIFO since the Stat, open returns
	// at once instead of waiting for a writer; the Fstat below refuses it.
	fd, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer fd.Close()
	if st, err = fd.Stat(); err != nil {
		return nil, err
	}
	if err := regular(path, st); err != nil {
		return nil, err
	}
	size := st.Size()
	if size < 4 {
		return nil, fmt.Errorf("%s: file is %d bytes, too short to be GGUF", path, size)
	}
	if size > math.MaxInt {
		return nil, fmt.Errorf("%s: file too large to map", path)
	}
	data, err := unix.Mmap(int(fd.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("%s: mmap: %w", path, err)
	}
	f, err := Parse(data)
	if err != nil {
		unix.Munmap(data)
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	f.Path = path
	f.mapped = true
	return f, nil
}

// regular refuses anything but a regular file, naming what it is.
func regular(path string, st os.FileInfo) error {
	m := st.Mode()
	if m.IsRegular() {
		return nil
	}
	what := "not a regular file"
	switch {
	case m.IsDir():
		what = "a directory"
	case m&os.ModeNamedPipe != 0:
		what = "a FIFO (named pipe)"
	case m&os.ModeCharDevice != 0:
		what = "a character device"
	case m&os.ModeDevice != 0:
		what = "a block device"
	case m&os.ModeSocket != 0:
		what = "a socket"
	}
	return fmt.Errorf("%s: is %s, not a GGUF file: a model must be a regular file", path, what)
}

// Close unmaps the file. Slices returned by TensorData become invalid.
func (f *File) Close() error {
	if f.mapped && f.data != nil {
		err := unix.Munmap(f.data)
		f.data = nil
		return err
	}
	f.data = nil
	return nil
}

// Bytes returns the whole file as mapped.
func (f *File) Bytes() []byte { return f.data }

// Tensor returns the tensor info with the given name.
func (f *File) Tensor(name string) (*TensorInfo, bool) {
	i, ok := f.tensorIndex[name]
	if !ok {
		return nil, false
	}
	return &f.Tensors[i], true
}

// TensorData returns the bytes of t inside the mapped file.
func (f *File) TensorData(t *TensorInfo) []byte {
	off := f.DataOffset + int64(t.Offset)
	return f.data[off : off+t.Size() : off+t.Size()]
}

// Value returns the raw metadata value for key.
func (f *File) Value(key string) (any, bool) {
	i, ok := f.kvIndex[key]
	if !ok {
		return nil, false
	}
	return f.KV[i].Value, true
}

// Parse parses a GGUF file held in data. The returned File refers to data.
func Parse(data []byte) (*File, error) {
	r := &reader{buf: data}
	magic := r.bytes(4)
	if r.err != nil {
		return nil, fmt.Errorf("truncated at offset 0: file is %d bytes, need at least 4 for the magic", len(data))
	}
	if string(magic) != Magic {
		return nil, fmt.Errorf("not a GGUF file: magic is %q, expected %q", magic, Magic)
	}
	f := &File{data: data, Size: int64(len(data)), Alignment: DefaultAlignment}
	f.Version = r.u32()
	if r.err != nil {
		return nil, r.fail("version")
	}
	switch {
	case f.Version == 1:
		return nil, fmt.Errorf("GGUF version 1 is not supported (expected 2 or 3); convert the file with a current llama.cpp")
	case f.Version == 2 || f.Version == 3:
	case f.Version&0xFFFF == 0 && (f.Version>>24 == 2 || f.Version>>24 == 3):
		return nil, fmt.Errorf("GGUF version %d reads as a big-endian file; only little-endian files are supported", f.Version>>24)
	default:
		return nil, fmt.Errorf("unsupported GGUF version %d (expected 2 or 3)", f.Version)
	}
	nTensors := r.u64()
	nKV := r.u64()
	if r.err != nil {
		return nil, r.fail("header counts")
	}
	// Each KV takes at least 8 (key length) + 4 (type) + 1 bytes, each tensor
	// info at least 8 + 4 + 8 + 4 + 8 bytes.
	if nKV > uint64(r.remaining())/13 {
		return nil, fmt.Errorf("header: metadata count %d is impossible: only %d bytes remain", nKV, r.remaining())
	}
	if nTensors > uint64(r.remaining())/32 {
		return nil, fmt.Errorf("header: tensor count %d is impossible: only %d bytes remain", nTensors, r.remaining())
	}

	f.KV = make([]KV, 0, nKV)
	f.kvIndex = make(map[string]int, nKV)
	for i := uint64(0); i < nKV; i++ {
		key := r.str()
		if r.err != nil {
			return nil, r.fail(fmt.Sprintf("metadata key %d", i))
		}
		vt := ValueType(r.u32())
		if r.err != nil {
			return nil, r.fail(fmt.Sprintf("metadata %q type", Clip(key)))
		}
		v, err := r.value(vt, 0)
		if err != nil {
			return nil, fmt.Errorf("metadata %q: %w", Clip(key), err)
		}
		if _, dup := f.kvIndex[key]; dup {
			return nil, fmt.Errorf("metadata key %q appears twice", Clip(key))
		}
		f.kvIndex[key] = len(f.KV)
		f.KV = append(f.KV, KV{Key: key, Value: v})
	}

	if v, ok := f.kvIndex["general.alignment"]; ok {
		a, isU32 := f.KV[v].Value.(uint32)
		if !isU32 {
			return nil, fmt.Errorf("metadata \"general.alignment\": type %s, expected uint32", typeOfValue(f.KV[v].Value))
		}
		if a == 0 || a&(a-1) != 0 {
			return nil, fmt.Errorf("metadata \"general.alignment\" = %d, expected a power of two", a)
		}
		f.Alignment = int64(a)
	}

	f.Tensors = make([]TensorInfo, 0, nTensors)
	f.tensorIndex = make(map[string]int, nTensors)
	for i := uint64(0); i < nTensors; i++ {
		var t TensorInfo
		t.Name = r.str()
		if r.err != nil {
			return nil, r.fail(fmt.Sprintf("tensor info %d name", i))
		}
		nd := r.u32()
		if r.err != nil {
			return nil, r.fail(fmt.Sprintf("tensor %q rank", Clip(t.Name)))
		}
		if nd == 0 || nd > MaxDims {
			return nil, fmt.Errorf("tensor %q: rank %d, expected 1..%d", Clip(t.Name), nd, MaxDims)
		}
		t.Shape = make([]int64, nd)
		total := uint64(1)
		for d := range t.Shape {
			n := r.u64()
			if r.err != nil {
				return nil, r.fail(fmt.Sprintf("tensor %q shape", Clip(t.Name)))
			}
			if n == 0 || n > 1<<48 {
				return nil, fmt.Errorf("tensor %q: dimension %d is %d, expected 1..2^48", Clip(t.Name), d, n)
			}
			if total > (1<<62)/n {
				return nil, fmt.Errorf("tensor %q: element count overflows", Clip(t.Name))
			}
			total *= n
			t.Shape[d] = int64(n)
		}
		t.Type = Type(r.u32())
		t.Offset = r.u64()
		if r.err != nil {
			return nil, r.fail(fmt.Sprintf("tensor %q info", Clip(t.Name)))
		}
		if !t.Type.Known() {
			return nil, fmt.Errorf("tensor %q: unknown ggml type id %d", Clip(t.Name), uint32(t.Type))
		}
		if t.Shape[0]%int64(t.Type.BlockSize()) != 0 {
			return nil, fmt.Errorf("tensor %q: innermost dimension %d is not a multiple of %s's block size %d", Clip(t.Name), t.Shape[0], t.Type, t.Type.BlockSize())
		}
		if _, dup := f.tensorIndex[t.Name]; dup {
			return nil, fmt.Errorf("tensor %q appears twice", Clip(t.Name))
		}
		f.tensorIndex[t.Name] = len(f.Tensors)
		f.Tensors = append(f.Tensors, t)
	}

	f.DataOffset = alignUp(int64(r.off), f.Alignment)
	if f.DataOffset > f.Size && len(f.Tensors) > 0 {
		return nil, fmt.Errorf("truncated: data section would start at %d, file is %d bytes", f.DataOffset, f.Size)
	}
	if err := f.checkData(); err != nil {
		return nil, err
	}
	return f, nil
}

// checkData checks that every tensor's bytes lie inside the file, aligned,
// and that no two tensors share a byte. llama.cpp refuses overlaps too (it
// goes further and requires each tensor to follow the previous one); two
// tensors on the same bytes would make one silently the other.
func (f *File) checkData() error {
	type span struct {
		start, end uint64 // relative to the data section
		i          int
	}
	spans := make([]span, len(f.Tensors))
	room := uint64(f.Size - f.DataOffset) // DataOffset ≤ Size when there are tensors
	for i := range f.Tensors {
		t := &f.Tensors[i]
		if t.Offset%uint64(f.Alignment) != 0 {
			return fmt.Errorf("tensor %q: offset %d is not aligned to %d", Clip(t.Name), t.Offset, f.Alignment)
		}
		n, err := t.ByteSize()
		if err != nil {
			return fmt.Errorf("tensor %q: %w", Clip(t.Name), err)
		}
		if t.Offset > room || uint64(n) > room-t.Offset {
			return fmt.Errorf("tensor %q: data [%d, +%d bytes) runs past the end of the file (%d bytes, data section from %d); the file may be truncated",
				Clip(t.Name), uint64(f.DataOffset)+t.Offset, n, f.Size, f.DataOffset)
		}
		spans[i] = span{t.Offset, t.Offset + uint64(n), i}
	}
	sort.Slice(spans, func(a, b int) bool { return spans[a].start < spans[b].start })
	for k := 1; k < len(spans); k++ {
		p, c := spans[k-1], spans[k]
		if c.start < p.end {
			return fmt.Errorf("tensor %q: data [%d, %d) overlaps tensor %q at [%d, %d); tensors must not share bytes",
				Clip(f.Tensors[c.i].Name), c.start, c.end, Clip(f.Tensors[p.i].Name), p.start, p.end)
		}
	}
	return nil
}

func alignUp(n, a int64) int64 { return (n + a - 1) / a * a }

// reader is a bounds-checked little-endian cursor. The first error sticks.
type reader struct {
	buf []byte
	off int
	err error
}

var errShort = errors.New("unexpected end of file")

func (r *reader) remaining() int { return len(r.buf) - r.off }

func (r *reader) fail(what string) error {
	if r.err != nil && r.err != errShort {
		return fmt.Errorf("%s at offset %d: %w", what, r.off, r.err)
	}
	return fmt.Errorf("truncated while reading %s at offset %d (file is %d bytes)", what, r.off, len(r.buf))
}

func (r *reader) bytes(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > r.remaining() {
		r.err = errShort
		return nil
	}
	b := r.buf[r.off : r.off+n]
	r.off += n
	return b
}

func (r *reader) u8() uint8 {
	b := r.bytes(1)
	if b == nil {
		return 0
	}
	return b[0]
}

func (r *reader) u16() uint16 {
	b := r.bytes(2)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint16(b)
}

func (r *reader) u32() uint32 {
	b := r.bytes(4)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint32(b)
}

func (r *reader) u64() uint64 {
	b := r.bytes(8)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint64(b)
}

func (r *reader) str() string {
	n := r.u64()
	if r.err != nil {
		return ""
	}
	if n > uint64(r.remaining()) {
		r.err = fmt.Errorf("string length %d runs past the end of the file (%d bytes remain)", n, r.remaining())
		return ""
	}
	return string(r.bytes(int(n)))
}

func (r *reader) value(t ValueType, depth int) (any, error) {
	if t == TypeArray {
		return r.array(depth)
	}
	var v any
	switch t {
	case TypeUint8:
		v = r.u8()
	case TypeInt8:
		v = int8(r.u8())
	case TypeUint16:
		v = r.u16()
	case TypeInt16:
		v = int16(r.u16())
	case TypeUint32:
		v = r.u32()
	case TypeInt32:
		v = int32(r.u32())
	case TypeFloat32:
		v = math.Float32frombits(r.u32())
	case TypeBool:
		v = r.u8() != 0
	case TypeString:
		v = r.str()
	case TypeUint64:
		v = r.u64()
	case TypeInt64:
		v = int64(r.u64())
	case TypeFloat64:
		v = math.Float64frombits(r.u64())
	default:
		return nil, fmt.Errorf("unknown value type %d at offset %d", uint32(t), r.off-4)
	}
	if r.err != nil {
		return nil, r.wrapErr()
	}
	return v, nil
}

func (r *reader) wrapErr() error {
	if r.err == errShort {
		return fmt.Errorf("truncated at offset %d (file is %d bytes)", r.off, len(r.buf))
	}
	return r.err
}

func (r *reader) array(depth int) (any, error) {
	if depth >= maxArrayDepth {
		return nil, fmt.Errorf("arrays nested deeper than %d", maxArrayDepth)
	}
	et := ValueType(r.u32())
	n := r.u64()
	if r.err != nil {
		return nil, r.wrapErr()
	}
	min := et.fixedSize()
	switch et {
	case TypeString:
		min = 8
	case TypeArray:
		min = 12
	}
	if min == 0 {
		return nil, fmt.Errorf("array of unknown value type %d", uint32(et))
	}
	if n > uint64(r.remaining()/min) {
		return nil, fmt.Errorf("array of %d %s values needs at least %d bytes, only %d remain", n, et, n*uint64(min), r.remaining())
	}
	count := int(n)
	if fs := et.fixedSize(); fs > 0 {
		raw := r.bytes(count * fs)
		return Array{Type: et, Data: decodeFixed(et, raw, count)}, nil
	}
	switch et {
	case TypeString:
		s := make([]string, count)
		for i := range s {
			s[i] = r.str()
			if r.err != nil {
				return nil, fmt.Errorf("string %d of %d: %w", i, count, r.wrapErr())
			}
		}
		return Array{Type: et, Data: s}, nil
	default: // nested arrays
		s := make([]Array, count)
		for i := range s {
			v, err := r.array(depth + 1)
			if err != nil {
				return nil, err
			}
			s[i] = v.(Array)
		}
		return Array{Type: et, Data: s}, nil
	}
}

func decodeFixed(t ValueType, b []byte, n int) any {
	le := binary.LittleEndian
	switch t {
	case TypeUint8:
		return append([]uint8(nil), b...)
	case TypeInt8:
		s := make([]int8, n)
		for i := range s {
			s[i] = int8(b[i])
		}
		return s
	case TypeBool:
		s := make([]bool, n)
		for i := range s {
			s[i] = b[i] != 0
		}
		return s
	case TypeUint16:
		s := make([]uint16, n)
		for i := range s {
			s[i] = le.Uint16(b[2*i:])
		}
		return s
	case TypeInt16:
		s := make([]int16, n)
		for i := range s {
			s[i] = int16(le.Uint16(b[2*i:]))
		}
		return s
	case TypeUint32:
		s := make([]uint32, n)
		for i := range s {
			s[i] = le.Uint32(b[4*i:])
		}
		return s
	case TypeInt32:
		s := make([]int32, n)
		for i := range s {
			s[i] = int32(le.Uint32(b[4*i:]))
		}
		return s
	case TypeFloat32:
		s := make([]float32, n)
		for i := range s {
			s[i] = math.Float32frombits(le.Uint32(b[4*i:]))
		}
		return s
	case TypeUint64:
		s := make([]uint64, n)
		for i := range s {
			s[i] = le.Uint64(b[8*i:])
		}
		return s
	case TypeInt64:
		s := make([]int64, n)
		for i := range s {
			s[i] = int64(le.Uint64(b[8*i:]))
		}
		return s
	case TypeFloat64:
		s := make([]float64, n)
		for i := range s {
			s[i] = math.Float64frombits(le.Uint64(b[8*i:]))
		}
		return s
	}
	return nil
}

// FromMetadata returns a File that holds only the given metadata and no
// tensors, so code that reads a config from a File can check metadata that
// is about to be written.
func FromMetadata(kv []KV) (*File, error) {
	f := &File{Version: 3, KV: kv, Alignment: DefaultAlignment, kvIndex: map[string]int{}, tensorIndex: map[string]int{}}
	for i, e := range kv {
		if _, dup := f.kvIndex[e.Key]; dup {
			return nil, fmt.Errorf("metadata key %q appears twice", Clip(e.Key))
		}
		f.kvIndex[e.Key] = i
	}
	return f, nil
}
