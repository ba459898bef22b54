package grammar

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
)

// Options bound what the automaton produces where the schema does not.
// Zero fields take the defaults of DefaultOptions.
type Options struct {
	// MaxWhitespace is how many whitespace bytes may stand in each gap
	// between tokens of structure ({, :, ",", ...); 0 gives compact JSON.
	MaxWhitespace int
	// MaxStringLength bounds strings (code points) without maxLength.
	MaxStringLength int
	// MaxItems bounds arrays without maxItems.
	MaxItems int
	// MaxProperties bounds the members of free-form objects.
	MaxProperties int
	// MaxDepth bounds the nesting of free-form containers: one is opened
	// only while fewer than MaxDepth containers are open.
	MaxDepth int
}

// DefaultOptions are the bounds used where Options leaves a zero.
var DefaultOptions = Options{MaxStringLength: 512, MaxItems: 64, MaxProperties: 32, MaxDepth: 8}

const (
	maxIntDigits  = 15
	maxFracDigits = 15
	maxExpDigits  = 2
	maxKeyLength  = 64 // free-form keys
	maxWSLimit    = 64
)

func (o Options) withDefaults() (Options, error) {
	d := DefaultOptions
	if o.MaxWhitespace < 0 || o.MaxWhitespace > maxWSLimit {
		return o, fmt.Errorf("grammar: MaxWhitespace %d out of range [0, %d]", o.MaxWhitespace, maxWSLimit)
	}
	for _, f := range []struct {
		v *int
		d int
		n string
	}{{&o.MaxStringLength, d.MaxStringLength, "MaxStringLength"}, {&o.MaxItems, d.MaxItems, "MaxItems"},
		{&o.MaxProperties, d.MaxProperties, "MaxProperties"}, {&o.MaxDepth, d.MaxDepth, "MaxDepth"}} {
		if *f.v < 0 || *f.v > 1<<20 {
			return o, fmt.Errorf("grammar: %s %d out of range", f.n, *f.v)
		}
		if *f.v == 0 {
			*f.v = f.d
		}
	}
	return o, nil
}

type kind uint8

const (
	kLit     kind = iota // one of a sorted set of exact byte strings
	kString              // a JSON string
	kNumber              // a JSON number
	kInteger             // a JSON number without fraction or exponent
	kObject              // an object of declared properties, in order
	kMap                 // a free-form object: string keys, one value schema
	kArray               // an array of one item schema
	kAnyOf               // alternatives (concrete nodes only)
)

// node is one value of the schema. Nodes refer to each other by index.
type node struct {
	kind kind
	free bool // a free-form container, bounded by Options.MaxDepth

	lits [][]byte // kLit: sorted, distinct
	pay  []int32  // kLit: a payload per literal (the property of a key)

	minLen, maxLen int32 // kString: code points

	props    []prop  // kObject
	keys     []int32 // kObject: keys[i] is the kLit of the keys that may come when props[i:] remain (-1: none)
	canClose []bool  // kObject: canClose[i]: no required property in props[i:]

	key, val           int32 // kMap: key string node, value node
	item               int32 // kArray
	minItems, maxItems int32 // kArray, and kMap (members)

	alts []int32 // kAnyOf
}

type prop struct {
	name     string
	val      int32
	required bool
}

// Grammar is a compiled schema. It is safe for concurrent use; the masks
// it computes for a vocabulary are cached in it, so compile a schema once
// and keep the Grammar while requests use it.
type Grammar struct {
	nodes []node
	root  int32
	opt   Options
	any   int32 // the free-form value node, -1 until needed

	caches cacheSet
}

// CompileSchema compiles a JSON schema with DefaultOptions.
func CompileSchema(schema []byte) (*Grammar, error) { return Compile(schema, Options{}) }

// Compile compiles a JSON schema. Keywords it cannot enforce are refused
// with an error naming them.
func Compile(schema []byte, opt Options) (*Grammar, error) {
	opt, err := opt.withDefaults()
	if err != nil {
		return nil, err
	}
	v, err := parseOrdered(schema)
	if err != nil {
		return nil, fmt.Errorf("grammar: schema is not JSON: %w", err)
	}
	c := &compiler{g: &Grammar{opt: opt, any: -1}, doc: v, refs: map[string]bool{}}
	root, err := c.compile(v, "#")
	if err != nil {
		return nil, err
	}
	c.g.root = root
	return c.g, nil
}

// NewJSONObject returns the grammar of any JSON object (json_object).
func NewJSONObject(opt Options) (*Grammar, error) {
	opt, err := opt.withDefaults()
	if err != nil {
		return nil, err
	}
	g := &Grammar{opt: opt, any: -1}
	c := &compiler{g: g}
	c.anyValue()
	g.root = g.nodes[g.any].alts[0] // the free-form object
	return g, nil
}

var jsonObject = func() *Grammar {
	g, err := NewJSONObject(Options{})
	if err != nil {
		panic(err)
	}
	return g
}()

// JSONObject returns the shared grammar of any JSON object with
// DefaultOptions; its mask cache is shared by every request that uses it.
func JSONObject() *Grammar { return jsonObject }

// object is a JSON object with its keys in document order.
type object struct {
	keys []string
	vals []any
}

func (o *object) get(k string) (any, bool) {
	if i := slices.Index(o.keys, k); i >= 0 {
		return o.vals[i], true
	}
	return nil, false
}

// parseOrdered decodes JSON keeping the order of object keys (the order
// properties are generated in): objects as *object, numbers as json.Number.
func parseOrdered(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	v, err := parseValue(dec)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the schema")
	}
	return v, nil
}

func parseValue(dec *json.Decoder) (any, error) {
	t, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := t.(type) {
	case json.Delim:
		switch t {
		case '{':
			o := &object{}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, err
				}
				k := kt.(string)
				if slices.Contains(o.keys, k) {
					return nil, fmt.Errorf("duplicate key %q", k)
				}
				v, err := parseValue(dec)
				if err != nil {
					return nil, err
				}
				o.keys = append(o.keys, k)
				o.vals = append(o.vals, v)
			}
			_, err := dec.Token()
			return o, err
		case '[':
			a := []any{}
			for dec.More() {
				v, err := parseValue(dec)
				if err != nil {
					return nil, err
				}
				a = append(a, v)
			}
			_, err := dec.Token()
			return a, err
		}
		return nil, fmt.Errorf("unexpected %v", t)
	default:
		return t, nil
	}
}

// marshal writes v compactly, keys in order, without HTML escapes.
func marshal(b []byte, v any) []byte {
	switch v := v.(type) {
	case *object:
		b = append(b, '{')
		for i, k := range v.keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = marshal(b, k)
			b = append(b, ':')
			b = marshal(b, v.vals[i])
		}
		return append(b, '}')
	case []any:
		b = append(b, '[')
		for i, e := range v {
			if i > 0 {
				b = append(b, ',')
			}
			b = marshal(b, e)
		}
		return append(b, ']')
	case json.Number:
		return append(b, v...)
	case string:
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		_ = enc.Encode(v)
		return append(b, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
	case bool:
		if v {
			return append(b, "true"...)
		}
		return append(b, "false"...)
	default:
		return append(b, "null"...)
	}
}

// jsonType names v's JSON Schema type ("integer" for integral numbers).
func jsonType(v any) string {
	switch v := v.(type) {
	case *object:
		return "object"
	case []any:
		return "array"
	case json.Number:
		if f, err := v.Float64(); err == nil && f == math.Trunc(f) {
			return "integer"
		}
		return "number"
	case string:
		return "string"
	case bool:
		return "boolean"
	}
	return "null"
}

var annotations = map[string]bool{
	"$schema": true, "$id": true, "$comment": true, "$defs": true, "definitions": true,
	"title": true, "description": true, "default": true, "examples": true,
	"deprecated": true, "readOnly": true, "writeOnly": true,
}

// family says which type each supported keyword applies to.
var family = map[string]string{
	"type": "", "enum": "", "const": "", "anyOf": "", "allOf": "", "$ref": "",
	"properties": "object", "required": "object", "additionalProperties": "object",
	"items": "array", "minItems": "array", "maxItems": "array",
	"minLength": "string", "maxLength": "string",
}

type compiler struct {
	g    *Grammar
	doc  any
	refs map[string]bool // $refs being compiled (recursion)
}

func (c *compiler) add(n node) int32 {
	c.g.nodes = append(c.g.nodes, n)
	return int32(len(c.g.nodes) - 1)
}

// anyValue returns the free-form value node: anyOf object, array, string,
// number, true/false/null.
func (c *compiler) anyValue() int32 {
	if c.g.any >= 0 {
		return c.g.any
	}
	o := c.g.opt
	c.g.any = c.add(node{kind: kAnyOf})
	key := c.add(node{kind: kString, maxLen: maxKeyLength})
	m := c.add(node{kind: kMap, free: true, key: key, val: c.g.any, maxItems: int32(o.MaxProperties)})
	a := c.add(node{kind: kArray, free: true, item: c.g.any, maxItems: int32(o.MaxItems)})
	s := c.add(node{kind: kString, maxLen: int32(o.MaxStringLength)})
	num := c.add(node{kind: kNumber})
	lit := c.add(node{kind: kLit, lits: [][]byte{[]byte("false"), []byte("null"), []byte("true")}, pay: []int32{0, 0, 0}})
	c.g.nodes[c.g.any].alts = []int32{m, a, s, num, lit}
	return c.g.any
}

func (c *compiler) compile(v any, path string) (int32, error) {
	switch v := v.(type) {
	case bool:
		if v {
			return c.anyValue(), nil
		}
		return 0, fmt.Errorf("grammar: schema at %s is false: no value validates", path)
	case *object:
		return c.compileObject(v, path)
	}
	return 0, fmt.Errorf("grammar: schema at %s is a %s, not an object or boolean", path, jsonType(v))
}

func (c *compiler) compileObject(s *object, path string) (int32, error) {
	var kw []string // the keywords that constrain
	for _, k := range s.keys {
		if annotations[k] {
			continue
		}
		if _, ok := family[k]; !ok {
			return 0, fmt.Errorf("grammar: schema keyword %q (at %s) is not supported", k, path)
		}
		kw = append(kw, k)
	}
	alone := func(k string) error {
		for _, o := range kw {
			if o != k {
				return fmt.Errorf("grammar: schema keyword %q beside %q (at %s) is not supported", o, k, path)
			}
		}
		return nil
	}
	if r, ok := s.get("$ref"); ok {
		if err := alone("$ref"); err != nil {
			return 0, err
		}
		ref, ok := r.(string)
		if !ok {
			return 0, fmt.Errorf("grammar: $ref at %s is not a string", path)
		}
		return c.ref(ref, path)
	}
	if a, ok := s.get("anyOf"); ok {
		if err := alone("anyOf"); err != nil {
			return 0, err
		}
		list, ok := a.([]any)
		if !ok || len(list) == 0 {
			return 0, fmt.Errorf("grammar: anyOf at %s is not a non-empty array", path)
		}
		var alts []int32
		for i, e := range list {
			n, err := c.compile(e, fmt.Sprintf("%s/anyOf/%d", path, i))
			if err != nil {
				return 0, err
			}
			alts = c.flatten(alts, n)
		}
		if len(alts) == 1 {
			return alts[0], nil
		}
		return c.add(node{kind: kAnyOf, alts: alts}), nil
	}
	if a, ok := s.get("allOf"); ok {
		if err := alone("allOf"); err != nil {
			return 0, err
		}
		list, ok := a.([]any)
		if !ok || len(list) != 1 {
			return 0, fmt.Errorf("grammar: allOf at %s: only one subschema is supported", path)
		}
		return c.compile(list[0], path+"/allOf/0")
	}

	var types []string
	if t, ok := s.get("type"); ok {
		switch t := t.(type) {
		case string:
			types = []string{t}
		case []any:
			for _, e := range t {
				name, ok := e.(string)
				if !ok {
					return 0, fmt.Errorf("grammar: type at %s lists a non-string", path)
				}
				types = append(types, name)
			}
		default:
			return 0, fmt.Errorf("grammar: type at %s is neither a string nor an array", path)
		}
		if len(types) == 0 {
			return 0, fmt.Errorf("grammar: type at %s is empty", path)
		}
		for _, t := range types {
			switch t {
			case "object", "array", "string", "number", "integer", "boolean", "null":
			default:
				return 0, fmt.Errorf("grammar: type %q at %s is not a JSON Schema type", t, path)
			}
		}
	}

	if _, isEnum := s.get("enum"); isEnum || hasKey(s, "const") {
		return c.enum(s, kw, types, path)
	}

	if types == nil { // infer from the keywords present
		seen := map[string]bool{}
		for _, k := range kw {
			if f := family[k]; f != "" && !seen[f] {
				seen[f] = true
				types = append(types, f)
			}
		}
		if types == nil {
			return c.anyValue(), nil
		}
	}
	var alts []int32
	for _, t := range types {
		n, err := c.typed(s, t, path)
		if err != nil {
			return 0, err
		}
		alts = c.flatten(alts, n)
	}
	if len(alts) == 1 {
		return alts[0], nil
	}
	return c.add(node{kind: kAnyOf, alts: alts}), nil
}

func hasKey(s *object, k string) bool { _, ok := s.get(k); return ok }

// flatten appends n, or n's alternatives if it is an anyOf, to alts.
func (c *compiler) flatten(alts []int32, n int32) []int32 {
	if c.g.nodes[n].kind == kAnyOf {
		for _, a := range c.g.nodes[n].alts {
			if !slices.Contains(alts, a) {
				alts = append(alts, a)
			}
		}
		return alts
	}
	if slices.Contains(alts, n) {
		return alts
	}
	return append(alts, n)
}

func (c *compiler) ref(ref, path string) (int32, error) {
	var v any
	switch {
	case strings.HasPrefix(ref, "#/$defs/"), strings.HasPrefix(ref, "#/definitions/"):
		parts := strings.SplitN(ref[2:], "/", 2)
		root, _ := c.doc.(*object)
		if root == nil {
			return 0, fmt.Errorf("grammar: $ref %q at %s: no definitions", ref, path)
		}
		defs, _ := root.get(parts[0])
		do, _ := defs.(*object)
		if do == nil {
			return 0, fmt.Errorf("grammar: $ref %q at %s: no %s", ref, path, parts[0])
		}
		name := strings.ReplaceAll(strings.ReplaceAll(parts[1], "~1", "/"), "~0", "~")
		d, ok := do.get(name)
		if !ok {
			return 0, fmt.Errorf("grammar: $ref %q at %s: no such definition", ref, path)
		}
		v = d
	case ref == "#":
		return 0, fmt.Errorf("grammar: recursive $ref %q at %s is not supported", ref, path)
	default:
		return 0, fmt.Errorf("grammar: $ref %q at %s: only local #/$defs/ and #/definitions/ references are supported", ref, path)
	}
	if c.refs[ref] {
		return 0, fmt.Errorf("grammar: recursive $ref %q at %s is not supported", ref, path)
	}
	c.refs[ref] = true
	defer delete(c.refs, ref)
	return c.compile(v, ref)
}

func (c *compiler) enum(s *object, kw, types []string, path string) (int32, error) {
	for _, k := range kw {
		if k != "enum" && k != "const" && k != "type" {
			return 0, fmt.Errorf("grammar: schema keyword %q beside enum or const (at %s) is not supported", k, path)
		}
	}
	var vals []any
	if e, ok := s.get("enum"); ok {
		list, ok := e.([]any)
		if !ok {
			return 0, fmt.Errorf("grammar: enum at %s is not an array", path)
		}
		vals = list
	}
	if cv, ok := s.get("const"); ok {
		if vals != nil {
			cb := string(marshal(nil, cv))
			if !slices.ContainsFunc(vals, func(v any) bool { return string(marshal(nil, v)) == cb }) {
				return 0, fmt.Errorf("grammar: const at %s is not in enum: no value validates", path)
			}
		}
		vals = []any{cv}
	}
	var lits [][]byte
	for _, v := range vals {
		if types != nil {
			t := jsonType(v)
			if !slices.Contains(types, t) && !(t == "integer" && slices.Contains(types, "number")) {
				continue
			}
		}
		lits = append(lits, marshal(nil, v))
	}
	return c.lits(lits, nil, path)
}

// lits adds a kLit of the given strings (payloads default to indexes).
func (c *compiler) lits(lits [][]byte, pay []int32, path string) (int32, error) {
	if len(lits) == 0 {
		return 0, fmt.Errorf("grammar: enum at %s allows no value of its type", path)
	}
	if pay == nil {
		pay = make([]int32, len(lits))
	}
	idx := make([]int, len(lits))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int { return bytes.Compare(lits[a], lits[b]) })
	n := node{kind: kLit}
	for _, i := range idx {
		if len(n.lits) > 0 && bytes.Equal(n.lits[len(n.lits)-1], lits[i]) {
			continue
		}
		n.lits = append(n.lits, lits[i])
		n.pay = append(n.pay, pay[i])
	}
	return c.add(n), nil
}

// count reads a non-negative integer keyword, def when absent.
func count(s *object, k, path string, def int) (int, bool, error) {
	v, ok := s.get(k)
	if !ok {
		return def, false, nil
	}
	n, isNum := v.(json.Number)
	i, err := n.Int64()
	if !isNum || err != nil || i < 0 || i > 1<<24 {
		return 0, false, fmt.Errorf("grammar: %s at %s is not a non-negative integer below 2^24", k, path)
	}
	return int(i), true, nil
}

func (c *compiler) typed(s *object, t, path string) (int32, error) {
	o := c.g.opt
	switch t {
	case "null":
		return c.lits([][]byte{[]byte("null")}, nil, path)
	case "boolean":
		return c.lits([][]byte{[]byte("false"), []byte("true")}, nil, path)
	case "number":
		return c.add(node{kind: kNumber}), nil
	case "integer":
		return c.add(node{kind: kInteger}), nil
	case "string":
		lo, _, err := count(s, "minLength", path, 0)
		if err != nil {
			return 0, err
		}
		hi, set, err := count(s, "maxLength", path, max(o.MaxStringLength, lo))
		if err != nil {
			return 0, err
		}
		if set && hi < lo {
			return 0, fmt.Errorf("grammar: maxLength below minLength at %s: no value validates", path)
		}
		return c.add(node{kind: kString, minLen: int32(lo), maxLen: int32(hi)}), nil
	case "array":
		lo, _, err := count(s, "minItems", path, 0)
		if err != nil {
			return 0, err
		}
		hi, set, err := count(s, "maxItems", path, max(o.MaxItems, lo))
		if err != nil {
			return 0, err
		}
		if set && hi < lo {
			return 0, fmt.Errorf("grammar: maxItems below minItems at %s: no value validates", path)
		}
		item := int32(-1)
		if it, ok := s.get("items"); ok {
			if b, isBool := it.(bool); isBool && !b {
				if lo > 0 {
					return 0, fmt.Errorf("grammar: items false with minItems at %s: no value validates", path)
				}
				hi = 0
			} else if item, err = c.compile(it, path+"/items"); err != nil {
				return 0, err
			}
		} else {
			item = c.anyValue()
		}
		if item < 0 {
			item = c.anyValue() // never pushed: maxItems is 0
		}
		return c.add(node{kind: kArray, item: item, minItems: int32(lo), maxItems: int32(hi)}), nil
	case "object":
		return c.object(s, path)
	}
	panic("unreachable")
}

func (c *compiler) object(s *object, path string) (int32, error) {
	var req []string
	if r, ok := s.get("required"); ok {
		list, ok := r.([]any)
		if !ok {
			return 0, fmt.Errorf("grammar: required at %s is not an array", path)
		}
		for _, e := range list {
			name, ok := e.(string)
			if !ok {
				return 0, fmt.Errorf("grammar: required at %s lists a non-string", path)
			}
			req = append(req, name)
		}
	}
	var props *object
	if p, ok := s.get("properties"); ok {
		if props, ok = p.(*object); !ok {
			return 0, fmt.Errorf("grammar: properties at %s is not an object", path)
		}
	}
	addl, hasAddl := s.get("additionalProperties")
	strict := hasAddl && addl == false
	if props == nil || (len(props.keys) == 0 && !strict) {
		if len(req) > 0 {
			return 0, fmt.Errorf("grammar: required at %s names properties not in properties (not supported)", path)
		}
		val := int32(-1)
		if hasAddl && addl != true {
			var err error
			if val, err = c.compile(addl, path+"/additionalProperties"); err != nil {
				return 0, err
			}
		} else {
			val = c.anyValue()
		}
		key := c.add(node{kind: kString, maxLen: maxKeyLength})
		return c.add(node{kind: kMap, key: key, val: val, maxItems: int32(c.g.opt.MaxProperties)}), nil
	}
	n := node{kind: kObject}
	for i, name := range props.keys {
		required := slices.Contains(req, name)
		if b, ok := props.vals[i].(bool); ok && !b {
			if required {
				return 0, fmt.Errorf("grammar: required property %q at %s has schema false: no value validates", name, path)
			}
			continue
		}
		val, err := c.compile(props.vals[i], path+"/properties/"+name)
		if err != nil {
			return 0, err
		}
		n.props = append(n.props, prop{name: name, val: val, required: required})
	}
	for _, r := range req {
		if !slices.Contains(props.keys, r) {
			return 0, fmt.Errorf("grammar: required property %q at %s is not in properties (not supported)", r, path)
		}
	}
	n.canClose = make([]bool, len(n.props)+1)
	n.canClose[len(n.props)] = true
	for i := len(n.props) - 1; i >= 0; i-- {
		n.canClose[i] = n.canClose[i+1] && !n.props[i].required
	}
	n.keys = make([]int32, len(n.props)+1)
	n.keys[len(n.props)] = -1
	for i := range n.props {
		var lits [][]byte
		var pay []int32
		for j := i; j < len(n.props); j++ {
			lits = append(lits, marshal(nil, n.props[j].name))
			pay = append(pay, int32(j))
			if n.props[j].required {
				break
			}
		}
		k, err := c.lits(lits, pay, path)
		if err != nil {
			return 0, err
		}
		n.keys[i] = k
	}
	return c.add(n), nil
}
