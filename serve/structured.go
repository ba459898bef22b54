package serve

import (
	"container/list"
	"encoding/json"
	"sync"

	"greta/engine"
	"greta/grammar"
	"greta/tokenizer"
)

// GrammarConstraints returns a Model.NewConstraint that constrains
// decoding with package grammar: any JSON object for json_object (schema
// nil), the schema's values for json_schema. Compiled schemas are kept (the
// last maxGrammars, by their text), since a grammar caches its masks and
// the first requests of a schema pay for them.
func GrammarConstraints(tok *tokenizer.Tokenizer) func(schema json.RawMessage) (engine.Constraint, error) {
	v := grammar.FromTokenizer(tok)
	c := &grammarCache{items: map[string]*list.Element{}, order: list.New()}
	return func(schema json.RawMessage) (engine.Constraint, error) {
		if schema == nil {
			return grammar.JSONObject().NewConstraint(v), nil
		}
		g, err := c.get(string(schema))
		if err != nil {
			return nil, err
		}
		return g.NewConstraint(v), nil
	}
}

// maxGrammars bounds the compiled schemas kept.
const maxGrammars = 64

type grammarCache struct {
	mu    sync.Mutex
	items map[string]*list.Element // schema text → element of order
	order *list.List               // of *cachedGrammar, most recent first
}

type cachedGrammar struct {
	key string
	g   *grammar.Grammar
}

func (c *grammarCache) get(schema string) (*grammar.Grammar, error) {
	c.mu.Lock()
	if el, ok := c.items[schema]; ok {
		c.order.MoveToFront(el)
		c.mu.Unlock()
		return el.Value.(*cachedGrammar).g, nil
	}
	c.mu.Unlock()
	g, err := grammar.CompileSchema([]byte(schema))
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[schema]; ok { // compiled meanwhile by another request
		return el.Value.(*cachedGrammar).g, nil
	}
	c.items[schema] = c.order.PushFront(&cachedGrammar{key: schema, g: g})
	if c.order.Len() > maxGrammars {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.items, last.Value.(*cachedGrammar).key)
	}
	return g, nil
}
