// Package docs embeds the checked-in OpenAPI document of the close API
// (openapi.yaml), so the server serves exactly the file the tests validate
// against, and converts it to JSON for GET /v1/openapi.json.
package docs

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"

	"go.yaml.in/yaml/v4"
)

// OpenAPIYAML is docs/openapi.yaml as checked in.
//
//go:embed openapi.yaml
var OpenAPIYAML []byte

// ErrConvert is wrapped by OpenAPIJSON's errors.
var ErrConvert = errors.New("docs: openapi.yaml cannot be converted to JSON")

// OpenAPIJSON returns OpenAPIYAML as compact JSON, keeping the order of
// every mapping (so the JSON reads like the file). Only the YAML that
// JSON can express is accepted: string keys, and scalars that are strings,
// numbers, booleans or null. Timestamps stay strings, as OpenAPI wants them.
func OpenAPIJSON() ([]byte, error) { return yamlToJSON(OpenAPIYAML) }

func yamlToJSON(src []byte) ([]byte, error) {
	dec := yaml.NewDecoder(bytes.NewReader(src))
	var root yaml.Node
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: the file is empty", ErrConvert)
		}
		return nil, fmt.Errorf("%w: %v", ErrConvert, err)
	}
	if err := dec.Decode(new(yaml.Node)); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: want exactly one YAML document", ErrConvert)
	}
	if root.Kind != yaml.DocumentNode || len(root.Content) != 1 {
		return nil, fmt.Errorf("%w: want exactly one YAML document", ErrConvert)
	}
	out, err := appendJSON(nil, root.Content[0], 0)
	if err != nil {
		return nil, err
	}
	if !json.Valid(out) { // a guard on the converter itself
		return nil, fmt.Errorf("%w: the result is not valid JSON", ErrConvert)
	}
	return out, nil
}

// maxDepth stops alias cycles and absurd nesting.
const maxDepth = 64

func appendJSON(out []byte, n *yaml.Node, depth int) ([]byte, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("%w: nested deeper than %d levels (line %d)", ErrConvert, maxDepth, n.Line)
	}
	switch n.Kind {
	case yaml.AliasNode:
		return appendJSON(out, n.Alias, depth+1)
	case yaml.MappingNode:
		out = append(out, '{')
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode || k.ShortTag() != "!!str" {
				if k.ShortTag() == "!!merge" {
					return nil, fmt.Errorf("%w: merge keys (<<) are not supported (line %d)", ErrConvert, k.Line)
				}
				// OpenAPI keys such as response codes are written quoted
				// ('200'), so a non-string key is a mistake in the file.
				return nil, fmt.Errorf("%w: mapping key %q on line %d is not a string; quote it", ErrConvert, k.Value, k.Line)
			}
			if i > 0 {
				out = append(out, ',')
			}
			out = appendString(out, k.Value)
			out = append(out, ':')
			var err error
			if out, err = appendJSON(out, v, depth+1); err != nil {
				return nil, err
			}
		}
		return append(out, '}'), nil
	case yaml.SequenceNode:
		out = append(out, '[')
		for i, c := range n.Content {
			if i > 0 {
				out = append(out, ',')
			}
			var err error
			if out, err = appendJSON(out, c, depth+1); err != nil {
				return nil, err
			}
		}
		return append(out, ']'), nil
	case yaml.ScalarNode:
		return appendScalar(out, n)
	}
	return nil, fmt.Errorf("%w: unexpected YAML node kind %v on line %d", ErrConvert, n.Kind, n.Line)
}

func appendScalar(out []byte, n *yaml.Node) ([]byte, error) {
	switch n.ShortTag() {
	case "!!str", "!!timestamp", "!!binary":
		return appendString(out, n.Value), nil
	case "!!null":
		return append(out, "null"...), nil
	case "!!bool":
		var b bool
		if err := n.Decode(&b); err != nil {
			return nil, fmt.Errorf("%w: line %d: %v", ErrConvert, n.Line, err)
		}
		return strconv.AppendBool(out, b), nil
	case "!!int":
		var i int64
		if err := n.Decode(&i); err != nil {
			return nil, fmt.Errorf("%w: line %d: %v", ErrConvert, n.Line, err)
		}
		return strconv.AppendInt(out, i, 10), nil
	case "!!float":
		var f float64
		if err := n.Decode(&f); err != nil {
			return nil, fmt.Errorf("%w: line %d: %v", ErrConvert, n.Line, err)
		}
		if math.IsInf(f, 0) || math.IsNaN(f) {
			return nil, fmt.Errorf("%w: line %d: %s has no JSON form", ErrConvert, n.Line, n.Value)
		}
		return strconv.AppendFloat(out, f, 'g', -1, 64), nil
	}
	return nil, fmt.Errorf("%w: line %d: tag %s has no JSON form", ErrConvert, n.Line, n.ShortTag())
}

// appendString writes s as a JSON string; encoding/json escapes exactly as
// JSON requires (strconv.Quote would write Go escapes such as \x00).
func appendString(out []byte, s string) []byte {
	b, _ := json.Marshal(s) // a string always marshals
	return append(out, b...)
}
