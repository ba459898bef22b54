package gguf

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// twoTensors writes a valid file with tensors a and b (F32 [8] and [16])
// and returns it with the absolute offsets of their tensor-info offset fields.
func twoTensors(t *testing.T) ([]byte, int, int) {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, 3, nil, []TensorInfo{{Name: "a", Shape: []int64{8}, Type: F32}, {Name: "b", Shape: []int64{16}, Type: F32}})
	if err != nil {
		t.Fatal(err)
	}
	w.WriteTensor(make([]byte, 32))
	w.WriteTensor(make([]byte, 64))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	// Each info: name (8+1), rank (4), one dim (8), type (4), offset (8).
	offA := 24 + 9 + 4 + 8 + 4
	offB := offA + 8 + 9 + 4 + 8 + 4
	if binary.LittleEndian.Uint64(b[offB:]) != 32 {
		t.Fatalf("layout changed: b's offset field reads %d", binary.LittleEndian.Uint64(b[offB:]))
	}
	return b, offA, offB
}

func TestOverlappingTensorsRefused(t *testing.T) {
	b, offA, offB := twoTensors(t)
	if _, err := Parse(b); err != nil {
		t.Fatal(err)
	}
	c := append([]byte(nil), b...)
	binary.LittleEndian.PutUint64(c[offB:], 0) // b on a's bytes
	_, err := Parse(c)
	if err == nil || !strings.Contains(err.Error(), `tensor "b": data [0, 64) overlaps tensor "a" at [0, 32)`) {
		t.Errorf("b on a: %v", err)
	}
	// Out of order but disjoint is fine: a after b, in a file with room.
	c = append(append([]byte(nil), b...), make([]byte, 32)...)
	binary.LittleEndian.PutUint64(c[offA:], 64)
	binary.LittleEndian.PutUint64(c[offB:], 0)
	if _, err := Parse(c); err != nil {
		t.Errorf("disjoint, out of order: %v", err)
	}
}

func le(w *bytes.Buffer, vs ...any) {
	for _, v := range vs {
		binary.Write(w, binary.LittleEndian, v)
	}
}

func TestByteCountOverflow(t *testing.T) {
	// 2^31 × 2^31 F32 elements = 2^62 elements, 2^64 bytes: once shown as "0 B".
	ti := TensorInfo{Name: "huge", Shape: []int64{1 << 31, 1 << 31}, Type: F32}
	if _, err := ti.ByteSize(); err == nil || !strings.Contains(err.Error(), "overflow a 64-bit byte count") {
		t.Errorf("ByteSize: %v", err)
	}
	if ti.Size() != -1 {
		t.Errorf("Size = %d, want -1", ti.Size())
	}
	if _, err := NewWriter(&bytes.Buffer{}, 3, nil, []TensorInfo{ti}); err == nil {
		t.Error("NewWriter accepted a 2^64-byte tensor")
	}
	for _, c := range []struct {
		shape []int64
		typ   Type
		want  string
	}{
		{[]int64{1 << 31, 1 << 31}, F32, "overflow a 64-bit byte count"},
		{[]int64{1 << 31, 1 << 31}, Q8_0, "runs past the end of the file"},
		{[]int64{1 << 20, 1 << 20}, F16, "runs past the end of the file"},
	} {
		r := new(bytes.Buffer)
		r.WriteString("GGUF")
		le(r, uint32(3), uint64(1), uint64(0), uint64(4))
		r.WriteString("huge")
		binary.Write(r, binary.LittleEndian, uint32(len(c.shape)))
		for _, d := range c.shape {
			binary.Write(r, binary.LittleEndian, uint64(d))
		}
		binary.Write(r, binary.LittleEndian, uint32(c.typ))
		binary.Write(r, binary.LittleEndian, uint64(0))
		r.Write(make([]byte, 128))
		_, err := Parse(r.Bytes())
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v %s: %v, want %q", c.shape, c.typ, err, c.want)
		}
	}
}

func TestOpenRefusesNonRegular(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.gguf")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	link := filepath.Join(dir, "link.gguf")
	os.Symlink(fifo, link)
	for _, c := range []struct{ path, want string }{
		{fifo, "is a FIFO"}, {link, "is a FIFO"}, {dir, "is a directory"}, {"/dev/null", "is a character device"},
	} {
		done := make(chan error, 1)
		go func() { _, err := Open(c.path); done <- err }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "regular file") {
				t.Errorf("%s: %v, want %q", c.path, err, c.want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("Open(%s) blocked", c.path)
		}
	}
}

func TestClip(t *testing.T) {
	long := strings.Repeat("é", 1<<19) // 1 MiB, two bytes a character
	got := fmt.Sprintf("tensor %q: x", Clip(long))
	if len(got) > 120 || !strings.Contains(got, "…\" (1048576 bytes): x") || !strings.HasPrefix(got, `tensor "éé`) {
		t.Errorf("clipped: %q", got)
	}
	if got := fmt.Sprintf("%q %s", Clip("blk.0"), Clip("x")); got != `"blk.0" x` {
		t.Errorf("short: %q", got)
	}
	// A hostile file's long name reaches the error clipped.
	name := strings.Repeat("n", 1<<20)
	r := new(bytes.Buffer)
	r.WriteString("GGUF")
	le(r, uint32(3), uint64(1), uint64(0), uint64(len(name)))
	r.WriteString(name)
	binary.Write(r, binary.LittleEndian, uint32(9))
	_, err := Parse(r.Bytes())
	if err == nil || len(err.Error()) > 200 || !strings.Contains(err.Error(), "rank 9") {
		t.Errorf("long name: %d-byte error %.200q", len(fmt.Sprint(err)), err)
	}
}
