package gguf

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// sharedModels lists the GGUF files under ../shared, skipping the test when
// the folder is absent (a fresh clone has no models).
func sharedModels(t testing.TB) []string {
	t.Helper()
	var files []string
	for _, dir := range []string{"../../shared/models", "../../shared/vocab"} {
		m, _ := filepath.Glob(filepath.Join(dir, "*.gguf"))
		files = append(files, m...)
	}
	if len(files) == 0 {
		t.Skip("../shared is absent: no GGUF models to test against")
	}
	return files
}

func TestRoundTripByteIdentical(t *testing.T) {
	for _, path := range sharedModels(t) {
		t.Run(filepath.Base(path), func(t *testing.T) {
			f, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var buf bytes.Buffer
			if err := Rewrite(&buf, f); err != nil {
				t.Fatal(err)
			}
			orig, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(buf.Bytes(), orig) {
				n := min(len(orig), buf.Len())
				i := 0
				for i < n && orig[i] == buf.Bytes()[i] {
					i++
				}
				t.Fatalf("rewrite differs: %d bytes vs %d, first difference at offset %d", buf.Len(), len(orig), i)
			}
		})
	}
}

// Version 2 has the same layout as 3 (64-bit counts); both must read.
func TestVersion2(t *testing.T) {
	kv := []KV{
		{Key: "general.architecture", Value: "llama"},
		{Key: "a.u8", Value: uint8(1)}, {Key: "a.i8", Value: int8(-2)}, {Key: "a.u16", Value: uint16(3)},
		{Key: "a.i16", Value: int16(-4)}, {Key: "a.u32", Value: uint32(5)}, {Key: "a.i32", Value: int32(-6)},
		{Key: "a.f32", Value: float32(7.5)}, {Key: "a.bool", Value: true}, {Key: "a.u64", Value: uint64(9)},
		{Key: "a.i64", Value: int64(-10)}, {Key: "a.f64", Value: 11.25},
		{Key: "a.strs", Value: Array{Type: TypeString, Data: []string{"x", "", "▁y"}}},
		{Key: "a.nested", Value: Array{Type: TypeArray, Data: []Array{{Type: TypeInt32, Data: []int32{1, 2}}}}},
	}
	tensors := []TensorInfo{{Name: "t", Shape: []int64{32, 2}, Type: Q8_0}}
	for _, v := range []uint32{2, 3} {
		var buf bytes.Buffer
		w, err := NewWriter(&buf, v, kv, tensors)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.WriteTensor(make([]byte, 68)); err != nil {
			t.Fatal(err)
		}
		w.Close()
		f, err := Parse(buf.Bytes())
		if err != nil {
			t.Fatalf("v%d: %v", v, err)
		}
		if f.Version != v || len(f.KV) != len(kv) || f.DataOffset%32 != 0 {
			t.Fatalf("v%d: %+v", v, f)
		}
		if x, _, _ := f.Int("a.i64"); x != -10 {
			t.Errorf("a.i64 = %d", x)
		}
		if s, _, _ := f.Strings("a.strs"); len(s) != 3 || s[2] != "▁y" {
			t.Errorf("a.strs = %q", s)
		}
		if x, _, _ := f.Float("a.f32"); x != 7.5 {
			t.Errorf("a.f32 = %v", x)
		}
		if _, _, err := f.String("a.u8"); err == nil {
			t.Errorf("String of a uint8 did not fail")
		}
		var again bytes.Buffer
		if err := Rewrite(&again, f); err != nil || !bytes.Equal(again.Bytes(), buf.Bytes()) {
			t.Errorf("v%d rewrite differs (%v)", v, err)
		}
	}
}
