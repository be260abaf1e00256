package docs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
)

// TestOpenAPIDocumentIsValid loads the checked-in document with kin-openapi
// and validates it as OpenAPI 3.1, examples included, so a broken document
// fails here before it breaks every API test.
func TestOpenAPIDocumentIsValid(t *testing.T) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(OpenAPIYAML)
	if err != nil {
		t.Fatalf("load openapi.yaml: %v", err)
	}
	if !doc.IsOpenAPI31OrLater() {
		t.Fatalf("openapi.yaml declares %q; the API promises OpenAPI 3.1", doc.OpenAPI)
	}
	if err := doc.Validate(context.Background(), openapi3.EnableExamplesValidation()); err != nil {
		t.Fatalf("openapi.yaml is not a valid OpenAPI 3.1 document: %v", err)
	}
}

// TestOpenAPIJSONIsTheSameDocument checks that the JSON served at
// /v1/openapi.json says exactly what the YAML says: kin-openapi reads both
// into the same document, and a generic decode of both gives the same tree.
func TestOpenAPIJSONIsTheSameDocument(t *testing.T) {
	js, err := OpenAPIJSON()
	if err != nil {
		t.Fatal(err)
	}
	fromYAML, err := openapi3.NewLoader().LoadFromData(OpenAPIYAML)
	if err != nil {
		t.Fatal(err)
	}
	fromJSON, err := openapi3.NewLoader().LoadFromData(js)
	if err != nil {
		t.Fatalf("kin-openapi cannot load the converted JSON: %v", err)
	}
	a, _ := json.Marshal(fromYAML)
	b, _ := json.Marshal(fromJSON)
	if !bytes.Equal(a, b) {
		t.Fatalf("the JSON document differs from the YAML one:\nyaml: %s\njson: %s", a, b)
	}

	// Independently of kin-openapi: every string in the YAML (timestamps
	// included) must arrive as the same string.
	var tree map[string]any
	if err := json.Unmarshal(js, &tree); err != nil {
		t.Fatal(err)
	}
	if tree["openapi"] != "3.1.0" {
		t.Fatalf("openapi = %#v, want the string 3.1.0", tree["openapi"])
	}
	post := tree["paths"].(map[string]any)["/v1/closes"].(map[string]any)["post"].(map[string]any)
	ex := post["requestBody"].(map[string]any)["content"].(map[string]any)["application/json"].(map[string]any)["examples"].(map[string]any)["simple"].(map[string]any)["value"].(map[string]any)
	if ex["created_at"] != "2026-11-22T10:00:00+08:00" || ex["mchid"] != "1900000109" {
		t.Fatalf("example values changed in conversion: %#v", ex)
	}
}

func TestYAMLToJSON(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"order kept", "b: 1\na: 2\nc: [x, 'y', \"z\"]\n", `{"b":1,"a":2,"c":["x","y","z"]}`},
		{"scalars", "t: true\nf: 1.5\nn: null\ni: -3\ns: '200'\nts: 2026-11-22T10:00:00+08:00\n",
			`{"t":true,"f":1.5,"n":null,"i":-3,"s":"200","ts":"2026-11-22T10:00:00+08:00"}`},
		{"escapes", "s: \"a\\\"b\\u0001\"\n", `{"s":"a\"b\u0001"}`},
		{"alias", "a: &x {k: v}\nb: *x\n", `{"a":{"k":"v"},"b":{"k":"v"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := yamlToJSON([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			var g, w any
			_ = json.Unmarshal(got, &g)
			_ = json.Unmarshal([]byte(tt.want), &w)
			if !reflect.DeepEqual(g, w) {
				t.Fatalf("got %s, want %s", got, tt.want)
			}
			if tt.name == "order kept" && string(got) != tt.want {
				t.Fatalf("got %s, want %s (key order)", got, tt.want)
			}
		})
	}
}

func TestYAMLToJSONRejects(t *testing.T) {
	for name, in := range map[string]string{
		"non-string key": "200: ok\n",
		"merge key":      "a: &x {k: v}\nb:\n  <<: *x\n",
		"infinity":       "f: .inf\n",
		"two documents":  "a: 1\n---\nb: 2\n",
		"not yaml":       "a: [\n",
		"empty":          "",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := yamlToJSON([]byte(in)); !errors.Is(err, ErrConvert) {
				t.Fatalf("err = %v, want ErrConvert", err)
			}
		})
	}
}
