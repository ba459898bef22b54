package grammar

import (
	"strings"
	"testing"
)

// run feeds text to g byte by byte: fits says every byte was accepted, end
// whether the value is then complete.
func run(g *Grammar, text string) (fits, end bool) {
	var a, b state
	g.start(&a)
	cur, nxt := &a, &b
	for i := 0; i < len(text); i++ {
		g.step(cur, text[i], nxt)
		if nxt.empty() {
			return false, false
		}
		cur, nxt = nxt, cur
	}
	return true, g.canEnd(cur)
}

func mustCompile(t *testing.T, schema string, opt Options) *Grammar {
	t.Helper()
	g, err := Compile([]byte(schema), opt)
	if err != nil {
		t.Fatalf("compile %s: %v", schema, err)
	}
	return g
}

type tcase struct {
	text string
	ok   bool // a complete value of the grammar
}

func check(t *testing.T, g *Grammar, name string, cases []tcase) {
	t.Helper()
	for _, c := range cases {
		fits, end := run(g, c.text)
		if got := fits && end; got != c.ok {
			t.Errorf("%s: %q: complete=%v (every byte fits: %v), want %v", name, c.text, got, fits, c.ok)
		}
	}
}

func TestNumbers(t *testing.T) {
	num := mustCompile(t, `{"type":"number"}`, Options{})
	check(t, num, "number", []tcase{
		{"0", true}, {"-0", true}, {"-0.5e+3", true}, {"1E-07", true}, {"12.25", true}, {"3e2", true},
		{"123456789012345", true}, {"1234567890123456", false},
		{"01", false}, {"-", false}, {"1.", false}, {".5", false}, {"1e", false}, {"1e+", false},
		{"+1", false}, {"1e123", false}, {"--1", false}, {"0x1", false}, {"1.5.5", false}, {"", false},
	})
	integer := mustCompile(t, `{"type":"integer"}`, Options{})
	check(t, integer, "integer", []tcase{
		{"0", true}, {"-0", true}, {"-12", true}, {"7", true},
		{"1.0", false}, {"1e3", false}, {"00", false}, {"-", false},
	})
	// "0" cannot grow as an integer: done at once; "12" might become "123".
	var s state
	integer.start(&s)
	for _, x := range []byte("0") {
		var o state
		integer.step(&s, x, &o)
		s = o
	}
	if !integer.done(&s) {
		t.Error(`integer "0": not done`)
	}
}

func TestStrings(t *testing.T) {
	str := mustCompile(t, `{"type":"string"}`, Options{})
	check(t, str, "string", []tcase{
		{`""`, true}, {`"abc"`, true}, {`"a\"b\\c\/d\b\f\n\r\t"`, true},
		{`"\u00e9\u20AC\uFFFF"`, true}, {`"héllo €𝄞"`, true}, {"\"\u007f\"", true},
		{`"\ud83d\ude00"`, false}, // surrogate escapes are never produced
		{`"\uDBFF"`, false}, {`"\u12"`, false}, {`"\u12g4"`, false}, {`"\x"`, false}, {`"\'"`, false},
		{"\"a\nb\"", false}, {"\"\x00\"", false}, {"\"\x1f\"", false},
		{"\"\xff\"", false}, {"\"\xc0\xaf\"", false}, {"\"\xe0\x80\xaf\"", false}, // invalid, overlong
		{"\"\xed\xa0\x80\"", false},     // UTF-8 of a surrogate
		{"\"\xf4\x90\x80\x80\"", false}, // above U+10FFFF
		{"\"\xe2\x82\"", false},         // truncated
		{`"abc`, false}, {`abc`, false}, {`"a""`, false},
	})
	bounded := mustCompile(t, `{"type":"string","minLength":2,"maxLength":3}`, Options{})
	check(t, bounded, "string 2..3", []tcase{
		{`"ab"`, true}, {`"abc"`, true}, {`"é€"`, true}, {`"\n\t"`, true}, {`"𝄞𝄞𝄞"`, true},
		{`"a"`, false}, {`""`, false}, {`"abcd"`, false}, {`"\u0041\u0042\u0043\u0044"`, false},
	})
	def := mustCompile(t, `{"type":"string"}`, Options{MaxStringLength: 4})
	check(t, def, "default bound 4", []tcase{{`"abcd"`, true}, {`"abcde"`, false}})
}

func TestLiterals(t *testing.T) {
	g := mustCompile(t, `{"enum":["red","green",1,12,null,true,{"a":[1,2]},[]]}`, Options{})
	check(t, g, "enum", []tcase{
		{`"red"`, true}, {`"green"`, true}, {`1`, true}, {`12`, true}, {`null`, true}, {`true`, true},
		{`{"a":[1,2]}`, true}, {`[]`, true},
		{`"blue"`, false}, {`123`, false}, {`false`, false}, {`"re"`, false}, {`{"a":[1]}`, false},
	})
	c := mustCompile(t, `{"const":"x"}`, Options{})
	check(t, c, "const", []tcase{{`"x"`, true}, {`"y"`, false}})
	typed := mustCompile(t, `{"type":"string","enum":["a",1,"b"]}`, Options{})
	check(t, typed, "typed enum", []tcase{{`"a"`, true}, {`1`, false}})
	b := mustCompile(t, `{"type":["boolean","null"]}`, Options{})
	check(t, b, "boolean or null", []tcase{{"true", true}, {"false", true}, {"null", true}, {"nul", false}, {"0", false}})
}

func TestObjects(t *testing.T) {
	g := mustCompile(t, `{"type":"object","properties":{
		"id":{"type":"integer"},"name":{"type":"string"},"tags":{"type":"array","items":{"type":"string"}},
		"ok":{"type":"boolean"}},"required":["id","ok"],"additionalProperties":false}`, Options{})
	check(t, g, "object", []tcase{
		{`{"id":1,"ok":true}`, true},
		{`{"id":1,"name":"x","ok":false}`, true},
		{`{"id":1,"name":"x","tags":[],"ok":false}`, true},
		{`{"id":1,"tags":["a","b"],"ok":false}`, true},
		{`{"ok":true,"id":1}`, false}, // properties come in the schema's order
		{`{"id":1}`, false},           // ok is required
		{`{"id":1,"ok":true,"x":1}`, false},
		{`{"id":1,"id":1,"ok":true}`, false},
		{`{}`, false}, {`{"id":1,}`, false}, {`{"id" :1,"ok":true}`, false},
	})
	empty := mustCompile(t, `{"type":"object","properties":{},"additionalProperties":false}`, Options{})
	check(t, empty, "empty object", []tcase{{`{}`, true}, {`{"a":1}`, false}})
	opt := mustCompile(t, `{"properties":{"a":{"type":"integer"},"b":{"type":"integer"}}}`, Options{})
	check(t, opt, "all optional", []tcase{{`{}`, true}, {`{"b":2}`, true}, {`{"a":1,"b":2}`, true}, {`{"b":2,"a":1}`, false}})
	// keys that share prefixes and need escapes
	keys := mustCompile(t, `{"properties":{"a":{"const":1},"ab":{"const":2},"a\"b":{"const":3}},"required":["a\"b"]}`, Options{})
	check(t, keys, "keys", []tcase{{`{"a":1,"ab":2,"a\"b":3}`, true}, {`{"ab":2,"a\"b":3}`, true}, {`{"a\"b":3}`, true}, {`{"a":1}`, false}})
}

func TestArraysAndFreeForm(t *testing.T) {
	a := mustCompile(t, `{"type":"array","items":{"type":"integer"},"minItems":1,"maxItems":3}`, Options{})
	check(t, a, "array 1..3", []tcase{{`[1]`, true}, {`[1,2,3]`, true}, {`[]`, false}, {`[1,2,3,4]`, false}, {`[1,]`, false}, {`[,1]`, false}})
	empty := mustCompile(t, `{"type":"array"}`, Options{})
	check(t, empty, "free array", []tcase{{`[]`, true}, {`[1,"a",{},[],null,{"x":[true]}]`, true}})
	obj := JSONObject()
	check(t, obj, "json_object", []tcase{
		{`{}`, true}, {`{"a":{}}`, true}, {`{"a":[]}`, true}, {`{"a":[1,-0.5e+3,"x",null,{"b":{"c":[[]]}}]}`, true},
		{`[]`, false}, {`"x"`, false}, {`{"a"}`, false}, {`{"a":}`, false}, {`{a:1}`, false}, {`{"a":1,}`, false},
	})
	deep := strings.Repeat(`{"a":`, 8) + "1" + strings.Repeat("}", 8)
	check(t, obj, "depth", []tcase{{deep, true}, {strings.Repeat(`{"a":`, 9) + "1" + strings.Repeat("}", 9), false}})
	ws := mustCompile(t, `{"type":"object","properties":{"a":{"type":"array","items":{"type":"integer"}}}}`, Options{MaxWhitespace: 2})
	check(t, ws, "whitespace", []tcase{
		{`{"a": [1, 2]}`, true}, {"{\n \"a\" : [ 1 ,2 ] }", true}, {`{"a":   [1]}`, false},
		{` {"a":[1]}`, false}, // none before the value
	})
	check(t, JSONObject(), "no whitespace by default", []tcase{{`{"a": 1}`, false}})
}

func TestAnyOf(t *testing.T) {
	g := mustCompile(t, `{"anyOf":[
		{"type":"object","properties":{"kind":{"const":"circle"},"r":{"type":"number"}},"required":["kind","r"],"additionalProperties":false},
		{"type":"object","properties":{"kind":{"const":"rect"},"w":{"type":"number"},"h":{"type":"number"}},"required":["kind","w","h"],"additionalProperties":false},
		{"anyOf":[{"type":"null"},{"type":"integer"},{"type":"string","maxLength":2}]}]}`, Options{})
	check(t, g, "anyOf", []tcase{
		{`{"kind":"circle","r":1.5}`, true}, {`{"kind":"rect","w":1,"h":2}`, true}, {`null`, true}, {`42`, true}, {`"ab"`, true},
		{`{"kind":"circle","w":1,"h":2}`, false}, {`{"kind":"rect","r":1}`, false}, {`"abc"`, false}, {`1.5`, false},
	})
	// two alternatives alive at once: the same prefix, different bounds
	two := mustCompile(t, `{"anyOf":[{"type":"array","items":{"type":"string","maxLength":1}},{"type":"array","items":{"type":"integer"},"maxItems":1}]}`, Options{})
	check(t, two, "overlap", []tcase{{`["a","b"]`, true}, {`[1]`, true}, {`[1,2]`, false}, {`["ab"]`, false}, {`[]`, true}})
}

func TestRefs(t *testing.T) {
	g := mustCompile(t, `{"$defs":{"P":{"type":"object","properties":{"x":{"type":"integer"}},"required":["x"]}},
		"type":"array","items":{"$ref":"#/$defs/P"}}`, Options{})
	check(t, g, "ref", []tcase{{`[{"x":1},{"x":2}]`, true}, {`[{}]`, false}})
}

func TestCompileErrors(t *testing.T) {
	for schema, want := range map[string]string{
		`{"type":"string","pattern":"a+"}`:                                  `"pattern"`,
		`{"type":"string","format":"date-time"}`:                            `"format"`,
		`{"type":"integer","minimum":0}`:                                    `"minimum"`,
		`{"oneOf":[{"type":"string"}]}`:                                     `"oneOf"`,
		`{"not":{}}`:                                                        `"not"`,
		`{"type":"array","prefixItems":[]}`:                                 `"prefixItems"`,
		`{"type":"array","uniqueItems":true}`:                               `"uniqueItems"`,
		`{"type":"object","patternProperties":{}}`:                          `"patternProperties"`,
		`{"$defs":{"T":{"items":{"$ref":"#/$defs/T"}}},"$ref":"#/$defs/T"}`: "recursive",
		`{"$ref":"http://x/y"}`:                                             "local",
		`{"type":"strin"}`:                                                  `"strin"`,
		`{"enum":[]}`:                                                       "no value",
		`{"type":"string","minLength":3,"maxLength":2}`:                     "maxLength below minLength",
		`{"type":"object","properties":{"a":{}},"required":["b"]}`:          `"b"`,
		`{"anyOf":[{"type":"string"}],"type":"string"}`:                     `"type" beside "anyOf"`,
		`{"allOf":[{},{}]}`:                                                 "allOf",
		`false`:                                                             "false",
		`{"type":"string"`:                                                  "not JSON",
		`{"type":"string","minLength":-1}`:                                  "minLength",
	} {
		_, err := CompileSchema([]byte(schema))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want one containing %s", schema, err, want)
		}
	}
	if _, err := Compile([]byte(`{}`), Options{MaxWhitespace: -1}); err == nil {
		t.Error("MaxWhitespace -1: no error")
	}
}

func TestConstraintEnd(t *testing.T) {
	// ids: 0 "1", 1 "2", 2 "12", 3 "<eos>", 4 "{", 5 "}", 6 control
	v := NewVocab([]string{"1", "2", "12", "", "{", "}", ""}, []int32{3})
	g := mustCompile(t, `{"type":"integer"}`, Options{})
	c := g.NewConstraint(v)
	mask := func() []bool {
		l := make([]float32, 8) // longer than the vocabulary: the rest is masked too
		c.Mask(l)
		ok := make([]bool, len(l))
		for i, x := range l {
			ok[i] = x == 0
		}
		return ok
	}
	if m := mask(); !m[0] || !m[1] || !m[2] || m[3] || m[4] || m[6] || m[7] {
		t.Fatalf("start: allowed %v", m)
	}
	if err := c.Accept(3); err == nil {
		t.Fatal("EOS accepted before any digit")
	}
	if err := c.Accept(4); err == nil {
		t.Fatal(`"{" accepted for an integer`)
	}
	if err := c.Accept(2); err != nil {
		t.Fatal(err)
	}
	if m := mask(); !m[3] || !m[0] || c.Done() || !c.CanEnd() {
		t.Fatalf(`after "12": allowed %v, done %v`, m, c.Done())
	}
	if err := c.Accept(3); err != nil || !c.Done() {
		t.Fatalf("EOS: %v, done %v", err, c.Done())
	}
	if err := c.Accept(0); err == nil {
		t.Fatal("a token accepted after the end")
	}
	// An object is done at its closing brace; EOS is allowed then.
	o := JSONObject().NewConstraint(v)
	for _, id := range []int32{4, 5} {
		if err := o.Accept(id); err != nil {
			t.Fatal(err)
		}
	}
	if !o.Done() {
		t.Fatal(`"{}" not done`)
	}
}
