package serve

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"greta/sample"
	"greta/tokenizer/template"
)

// apiError is an error answer in OpenAI's shape:
// {"error":{"message","type","param","code"}}.
type apiError struct {
	Status  int
	Message string
	Type    string
	Param   string
	Code    string
	// RetryAfter, if set, is sent as the Retry-After header (seconds).
	RetryAfter string
}

func (e *apiError) Error() string { return e.Message }

func badRequest(param, format string, args ...any) *apiError {
	return &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Param: param, Message: fmt.Sprintf(format, args...)}
}

// errorBody is the JSON of an apiError.
type errorBody struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

func (e *apiError) body() errorBody {
	var b errorBody
	b.Error.Message, b.Error.Type = e.Message, e.Type
	if e.Param != "" {
		b.Error.Param = &e.Param
	}
	if e.Code != "" {
		b.Error.Code = &e.Code
	}
	return b
}

// commonFields are the fields chat and completion requests share.
type commonFields struct {
	Model               string          `json:"model"`
	MaxTokens           *int            `json:"max_tokens"`
	MaxCompletionTokens *int            `json:"max_completion_tokens"`
	NPredict            *int            `json:"n_predict"` // llama.cpp's name
	Temperature         *float64        `json:"temperature"`
	TopP                *float64        `json:"top_p"`
	TopK                *int            `json:"top_k"`
	MinP                *float64        `json:"min_p"`
	RepeatPenalty       *float64        `json:"repeat_penalty"`
	RepeatLastN         *int            `json:"repeat_last_n"`
	PresencePenalty     *float64        `json:"presence_penalty"`
	FrequencyPenalty    *float64        `json:"frequency_penalty"`
	Seed                *int64          `json:"seed"`
	Stop                json.RawMessage `json:"stop"`
	N                   *int            `json:"n"`
	Stream              *bool           `json:"stream"`
	StreamOptions       *struct {
		IncludeUsage *bool `json:"include_usage"`
	} `json:"stream_options"`
	ResponseFormat *struct {
		Type       string `json:"type"`
		JSONSchema *struct {
			Name   string          `json:"name"`
			Schema json.RawMessage `json:"schema"`
			Strict *bool           `json:"strict"`
		} `json:"json_schema"`
	} `json:"response_format"`
	IgnoreEOS *bool `json:"ignore_eos"` // llama.cpp's extension
}

type chatRequest struct {
	commonFields
	Messages    json.RawMessage `json:"messages"`
	Logprobs    *bool           `json:"logprobs"`
	TopLogprobs *int            `json:"top_logprobs"`
}

type completionRequest struct {
	commonFields
	Prompt   json.RawMessage `json:"prompt"`
	Logprobs *int            `json:"logprobs"`
}

// decode parses a request body into v: bad JSON is a 400, a known field
// of the wrong type a 400 naming the field, unknown fields are ignored.
func decode(body []byte, v any) *apiError {
	err := json.Unmarshal(body, v)
	if err == nil {
		return nil
	}
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return badRequest("", "the request body is not valid JSON: %v (at byte %d)", se, se.Offset)
	case errors.As(err, &te):
		if te.Field == "" {
			return badRequest("", "the request body must be a JSON object, not %s", te.Value)
		}
		field := strings.TrimPrefix(te.Field, "commonFields.") // the embedded struct's name is no field
		return badRequest(field, "%s: expected %s, got %s", field, jsonKind(te.Type.Kind().String()), te.Value)
	}
	if strings.HasPrefix(err.Error(), "unexpected end of JSON input") || len(bytes.TrimSpace(body)) == 0 {
		return badRequest("", "the request body is empty or cut short: expected a JSON object")
	}
	return badRequest("", "the request body is not valid: %v", err)
}

// jsonKind names a Go kind in JSON's terms.
func jsonKind(k string) string {
	switch k {
	case "int", "int32", "int64", "uint64":
		return "an integer"
	case "float64", "float32":
		return "a number"
	case "bool":
		return "a boolean"
	case "string":
		return "a string"
	case "struct", "map":
		return "an object"
	case "slice":
		return "an array"
	}
	return k
}

// isNull reports whether a raw field is absent or null.
func isNull(r json.RawMessage) bool {
	r = bytes.TrimSpace(r)
	return len(r) == 0 || string(r) == "null"
}

// maxStops is OpenAI's limit on stop strings.
const maxStops = 4

// parseStop reads stop: a string or an array of up to 4 strings.
func parseStop(r json.RawMessage) ([]string, *apiError) {
	if isNull(r) {
		return nil, nil
	}
	var one string
	if json.Unmarshal(r, &one) == nil {
		if one == "" {
			return nil, nil
		}
		return []string{one}, nil
	}
	var many []string
	if err := json.Unmarshal(r, &many); err != nil {
		return nil, badRequest("stop", "stop: expected a string or an array of strings")
	}
	if len(many) > maxStops {
		return nil, badRequest("stop", "stop: at most %d strings, got %d", maxStops, len(many))
	}
	out := many[:0]
	for _, s := range many {
		if s != "" {
			out = append(out, s)
		}
	}
	return out, nil
}

// settings are the parsed common fields.
type settings struct {
	maxTokens    int // < 0: until EOS or the context is full
	sampling     sample.Params
	seeded       bool
	stop         []string
	n            int
	stream       bool
	includeUsage bool
	ignoreEOS    bool
	format       string          // "", "text", "json_object" or "json_schema"
	schema       json.RawMessage // json_schema's schema
}

// maxChoices bounds n (and, for completions, prompts × n).
const maxChoices = 16

func (c *commonFields) settings() (*settings, *apiError) {
	s := &settings{maxTokens: -1, n: 1}
	switch {
	case c.MaxCompletionTokens != nil:
		s.maxTokens = *c.MaxCompletionTokens
		if s.maxTokens < 1 {
			return nil, badRequest("max_completion_tokens", "max_completion_tokens %d: want at least 1", s.maxTokens)
		}
	case c.MaxTokens != nil:
		s.maxTokens = *c.MaxTokens
		if s.maxTokens < 1 {
			return nil, badRequest("max_tokens", "max_tokens %d: want at least 1", s.maxTokens)
		}
	case c.NPredict != nil && *c.NPredict >= 0:
		s.maxTokens = max(*c.NPredict, 1)
	}
	// Unset fields take llama-server's defaults.
	p := sample.Defaults()
	setF := func(dst *float64, v *float64) {
		if v != nil {
			*dst = *v
		}
	}
	setF(&p.Temp, c.Temperature)
	setF(&p.TopP, c.TopP)
	setF(&p.MinP, c.MinP)
	setF(&p.RepeatPenalty, c.RepeatPenalty)
	setF(&p.PresencePenalty, c.PresencePenalty)
	setF(&p.FrequencyPenalty, c.FrequencyPenalty)
	if c.TopK != nil {
		p.TopK = *c.TopK
	}
	if c.RepeatLastN != nil {
		p.RepeatLastN = *c.RepeatLastN
	}
	if err := p.Validate(); err != nil {
		var re *sample.RangeError
		if errors.As(err, &re) {
			return nil, badRequest(re.Field, "%v", err)
		}
		return nil, badRequest("", "%v", err)
	}
	if c.Seed != nil && *c.Seed >= 0 {
		p.Seed, s.seeded = uint64(*c.Seed), true
	}
	s.sampling = p
	var e *apiError
	if s.stop, e = parseStop(c.Stop); e != nil {
		return nil, e
	}
	if c.N != nil {
		s.n = *c.N
		if s.n < 1 || s.n > maxChoices {
			return nil, badRequest("n", "n %d: want 1 to %d", s.n, maxChoices)
		}
	}
	s.stream = c.Stream != nil && *c.Stream
	if c.StreamOptions != nil && c.StreamOptions.IncludeUsage != nil {
		s.includeUsage = *c.StreamOptions.IncludeUsage
	}
	s.ignoreEOS = c.IgnoreEOS != nil && *c.IgnoreEOS
	if rf := c.ResponseFormat; rf != nil {
		switch rf.Type {
		case "", "text":
		case "json_object":
			s.format = rf.Type
		case "json_schema":
			if rf.JSONSchema == nil || isNull(rf.JSONSchema.Schema) {
				return nil, badRequest("response_format.json_schema", "response_format json_schema needs json_schema.schema")
			}
			s.format, s.schema = rf.Type, rf.JSONSchema.Schema
		default:
			return nil, badRequest("response_format.type", "response_format type %q: want text, json_object or json_schema", rf.Type)
		}
	}
	return s, nil
}

// chatMessage is one message as a client sends it.
type chatMessage struct {
	Role       string          `json:"role"`
	Content    json.RawMessage `json:"content"`
	Name       string          `json:"name"`
	ToolCallID string          `json:"tool_call_id"`
	ToolCalls  json.RawMessage `json:"tool_calls"`
}

// parseMessages reads messages: roles system, developer (as system), user,
// assistant and tool; content a string, null or an array of text parts.
func parseMessages(r json.RawMessage) ([]template.Message, *apiError) {
	if isNull(r) {
		return nil, badRequest("messages", "messages is required")
	}
	var raw []chatMessage
	if err := json.Unmarshal(r, &raw); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return nil, badRequest("messages", "messages: %s: expected %s, got %s", te.Field, jsonKind(te.Type.Kind().String()), te.Value)
		}
		return nil, badRequest("messages", "messages: expected an array of {role, content} objects")
	}
	if len(raw) == 0 {
		return nil, badRequest("messages", "messages is empty")
	}
	out := make([]template.Message, len(raw))
	for i, m := range raw {
		param := fmt.Sprintf("messages[%d]", i)
		switch m.Role {
		case "system", "user", "assistant", "tool":
		case "developer":
			m.Role = "system"
		case "":
			return nil, badRequest(param+".role", "%s.role is required", param)
		default:
			return nil, badRequest(param+".role", "%s.role %q: want system, developer, user, assistant or tool", param, m.Role)
		}
		text, e := parseContent(m.Content, param+".content")
		if e != nil {
			return nil, e
		}
		out[i] = template.Message{Role: m.Role, Content: text, Name: m.Name, ToolCallID: m.ToolCallID}
		if !isNull(m.ToolCalls) {
			var calls any
			if err := json.Unmarshal(m.ToolCalls, &calls); err != nil {
				return nil, badRequest(param+".tool_calls", "%s.tool_calls: %v", param, err)
			}
			out[i].ToolCalls = calls
		}
	}
	return out, nil
}

func parseContent(r json.RawMessage, param string) (string, *apiError) {
	if isNull(r) {
		return "", nil
	}
	var s string
	if json.Unmarshal(r, &s) == nil {
		return s, nil
	}
	var parts []struct {
		Type string  `json:"type"`
		Text *string `json:"text"`
	}
	if err := json.Unmarshal(r, &parts); err != nil {
		return "", badRequest(param, "%s: expected a string or an array of text parts", param)
	}
	var b strings.Builder
	for j, p := range parts {
		if p.Type != "text" || p.Text == nil {
			return "", badRequest(fmt.Sprintf("%s[%d]", param, j), "%s[%d]: only text parts are supported (got type %q)", param, j, p.Type)
		}
		b.WriteString(*p.Text)
	}
	return b.String(), nil
}

// prompt is one completion prompt: text to encode, or token ids as given.
type prompt struct {
	text   string
	tokens []int32
	isText bool
}

// parsePrompt reads prompt: a string, an array of strings, an array of
// token ids, or an array of such arrays.
func parsePrompt(r json.RawMessage) ([]prompt, *apiError) {
	if isNull(r) {
		return nil, badRequest("prompt", "prompt is required")
	}
	var s string
	if json.Unmarshal(r, &s) == nil {
		return []prompt{{text: s, isText: true}}, nil
	}
	var items []json.RawMessage
	if err := json.Unmarshal(r, &items); err != nil || len(items) == 0 {
		return nil, badRequest("prompt", "prompt: expected a string, an array of strings, an array of token ids or an array of such arrays")
	}
	var ids []int32
	if json.Unmarshal(r, &ids) == nil {
		return []prompt{{tokens: ids}}, nil
	}
	out := make([]prompt, len(items))
	for i, it := range items {
		if json.Unmarshal(it, &out[i].text) == nil {
			out[i].isText = true
			continue
		}
		if err := json.Unmarshal(it, &out[i].tokens); err != nil {
			return nil, badRequest("prompt", "prompt[%d]: expected a string or an array of token ids", i)
		}
	}
	return out, nil
}
