// Package grammar constrains generation to JSON: any JSON object
// (response_format json_object) or the values of a JSON schema
// (json_schema). A schema compiles to a byte-level pushdown automaton; a
// Constraint walks a trie of the vocabulary's token bytes against the
// automaton's state to mask, before sampling, every token that cannot
// continue a valid value, and caches the mask per state, so the output
// always parses and validates.
//
// Generation policy (what the automaton produces, a subset of what the
// schema accepts):
//   - compact JSON: no whitespace between tokens of structure unless
//     Options.MaxWhitespace allows up to that many bytes (space, tab,
//     newline) in each gap; none before or after the top-level value;
//   - properties in the schema's order; optional ones may be skipped; no
//     property outside "properties" is ever produced when the schema
//     declares properties (whatever additionalProperties says), and an
//     object without declared properties is free-form (any keys);
//   - strings: at most maxLength code points, or Options.MaxStringLength
//     when the schema gives none (keys of free-form objects: 64); raw
//     UTF-8 (always valid) or escapes, \u escapes of surrogates excluded;
//   - numbers: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? with at most
//     15 integer digits, 15 fraction digits and 2 exponent digits (so every
//     number fits a float64); integers: -?(0|[1-9][0-9]*), at most 15 digits;
//   - arrays: at most maxItems items, or Options.MaxItems; free-form objects
//     at most Options.MaxProperties members; free-form values (json_object,
//     {} or true schemas) nest at most Options.MaxDepth containers deep.
//
// With these bounds every output is finite: a model that never chooses to
// close a value is forced to by the mask.
//
// Supported keywords: type (a name or a list), properties, required,
// additionalProperties, items, minItems, maxItems, minLength, maxLength,
// enum, const, anyOf, allOf with one subschema, local $ref (#/$defs/...,
// #/definitions/..., not recursive), and the annotations $schema, $id,
// $comment, $defs, definitions, title, description, default, examples,
// deprecated, readOnly, writeOnly. Every other keyword (pattern, format,
// minimum, oneOf, ...) is refused by Compile with an error naming it.
package grammar
