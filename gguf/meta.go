package gguf

import (
	"fmt"
	"math"
)

// Typed metadata accessors. Each returns ok=false when the key is absent and
// an error when it is present with a type that cannot hold the requested kind
// of value, so callers can say exactly what was expected and what was found.

// Int returns an integer metadata value of any integer width.
func (f *File) Int(key string) (int64, bool, error) {
	v, ok := f.Value(key)
	if !ok {
		return 0, false, nil
	}
	switch x := v.(type) {
	case uint8:
		return int64(x), true, nil
	case int8:
		return int64(x), true, nil
	case uint16:
		return int64(x), true, nil
	case int16:
		return int64(x), true, nil
	case uint32:
		return int64(x), true, nil
	case int32:
		return int64(x), true, nil
	case uint64:
		if x > math.MaxInt64 {
			return 0, true, fmt.Errorf("metadata %q = %d overflows int64", key, x)
		}
		return int64(x), true, nil
	case int64:
		return x, true, nil
	}
	return 0, true, fmt.Errorf("metadata %q has type %s, expected an integer", key, typeOfValue(v))
}

// Float returns a float (or integer) metadata value as float64.
func (f *File) Float(key string) (float64, bool, error) {
	v, ok := f.Value(key)
	if !ok {
		return 0, false, nil
	}
	switch x := v.(type) {
	case float32:
		return float64(x), true, nil
	case float64:
		return x, true, nil
	}
	if i, _, err := f.Int(key); err == nil {
		return float64(i), true, nil
	}
	return 0, true, fmt.Errorf("metadata %q has type %s, expected a float", key, typeOfValue(v))
}

// String returns a string metadata value.
func (f *File) String(key string) (string, bool, error) {
	v, ok := f.Value(key)
	if !ok {
		return "", false, nil
	}
	s, isStr := v.(string)
	if !isStr {
		return "", true, fmt.Errorf("metadata %q has type %s, expected string", key, typeOfValue(v))
	}
	return s, true, nil
}

// Bool returns a bool metadata value.
func (f *File) Bool(key string) (bool, bool, error) {
	v, ok := f.Value(key)
	if !ok {
		return false, false, nil
	}
	b, isBool := v.(bool)
	if !isBool {
		return false, true, fmt.Errorf("metadata %q has type %s, expected bool", key, typeOfValue(v))
	}
	return b, true, nil
}

// Array returns an array metadata value.
func (f *File) Array(key string) (Array, bool, error) {
	v, ok := f.Value(key)
	if !ok {
		return Array{}, false, nil
	}
	a, isArr := v.(Array)
	if !isArr {
		return Array{}, true, fmt.Errorf("metadata %q has type %s, expected array", key, typeOfValue(v))
	}
	return a, true, nil
}

// Strings returns an array of strings.
func (f *File) Strings(key string) ([]string, bool, error) {
	a, ok, err := f.Array(key)
	if !ok || err != nil {
		return nil, ok, err
	}
	s, isStr := a.Data.([]string)
	if !isStr {
		return nil, true, fmt.Errorf("metadata %q is an array of %s, expected strings", key, a.Type)
	}
	return s, true, nil
}

// Float32s returns an array of float32.
func (f *File) Float32s(key string) ([]float32, bool, error) {
	a, ok, err := f.Array(key)
	if !ok || err != nil {
		return nil, ok, err
	}
	s, isF := a.Data.([]float32)
	if !isF {
		return nil, true, fmt.Errorf("metadata %q is an array of %s, expected float32", key, a.Type)
	}
	return s, true, nil
}

// Int32s returns an integer array as int32 (accepting any integer element type
// whose values fit).
func (f *File) Int32s(key string) ([]int32, bool, error) {
	a, ok, err := f.Array(key)
	if !ok || err != nil {
		return nil, ok, err
	}
	switch d := a.Data.(type) {
	case []int32:
		return d, true, nil
	case []uint32:
		s := make([]int32, len(d))
		for i, x := range d {
			if x > math.MaxInt32 {
				return nil, true, fmt.Errorf("metadata %q[%d] = %d overflows int32", key, i, x)
			}
			s[i] = int32(x)
		}
		return s, true, nil
	case []uint8:
		s := make([]int32, len(d))
		for i, x := range d {
			s[i] = int32(x)
		}
		return s, true, nil
	case []int8:
		s := make([]int32, len(d))
		for i, x := range d {
			s[i] = int32(x)
		}
		return s, true, nil
	}
	return nil, true, fmt.Errorf("metadata %q is an array of %s, expected integers", key, a.Type)
}

// typeOfValue names the GGUF type of a metadata value.
func typeOfValue(v any) string {
	switch x := v.(type) {
	case Array:
		return "array of " + x.Type.String()
	default:
		if t, ok := valueTypeOf(v); ok {
			return t.String()
		}
	}
	return fmt.Sprintf("%T", v)
}

// valueTypeOf maps a Go value to its GGUF value type.
func valueTypeOf(v any) (ValueType, bool) {
	switch v.(type) {
	case uint8:
		return TypeUint8, true
	case int8:
		return TypeInt8, true
	case uint16:
		return TypeUint16, true
	case int16:
		return TypeInt16, true
	case uint32:
		return TypeUint32, true
	case int32:
		return TypeInt32, true
	case float32:
		return TypeFloat32, true
	case bool:
		return TypeBool, true
	case string:
		return TypeString, true
	case Array:
		return TypeArray, true
	case uint64:
		return TypeUint64, true
	case int64:
		return TypeInt64, true
	case float64:
		return TypeFloat64, true
	}
	return 0, false
}
