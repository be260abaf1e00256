// Package strictjson reads, in a single pass and without allocating, the
// one JSON shape wxclose's producers write: a flat object of known string
// fields. It is the fast path of tasks.DecodeClosePayload and of the bulk
// enqueue's line parser, whose encoding/json readings decide (and word the
// errors of) everything it does not accept.
package strictjson

// Flat reads data as one JSON object whose keys are among known, spelt
// exactly, each at most once, whose values are null or strings of
// printable ASCII without escapes, with JSON whitespace only around
// tokens. out, of len(known), receives each field's raw value (the quoted
// literal, or null), or nil for a field not present. It reports false for
// any other input, valid JSON or not; out is then meaningless. Every input
// it accepts is valid JSON that encoding/json decodes to the same strings.
func Flat(data []byte, known []string, out [][]byte) bool {
	clear(out)
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return false
	}
	i = skipSpace(data, i+1)
	if i < len(data) && data[i] == '}' {
		return skipSpace(data, i+1) == len(data)
	}
	for {
		key, next, ok := plainString(data, i)
		if !ok {
			return false
		}
		field := index(known, key)
		if field < 0 || out[field] != nil {
			return false
		}
		i = skipSpace(data, next)
		if i >= len(data) || data[i] != ':' {
			return false
		}
		i = skipSpace(data, i+1)
		if len(data)-i >= 4 && string(data[i:i+4]) == "null" {
			next = i + 4
		} else if _, next, ok = plainString(data, i); !ok {
			return false
		}
		out[field] = data[i:next]
		i = skipSpace(data, next)
		if i >= len(data) {
			return false
		}
		switch data[i] {
		case ',':
			i = skipSpace(data, i+1)
			continue
		case '}':
			return skipSpace(data, i+1) == len(data)
		}
		return false
	}
}

// String returns the contents of a raw value Flat accepted: "" for null.
func String(raw []byte) string {
	if len(raw) < 2 || raw[0] != '"' {
		return ""
	}
	return string(raw[1 : len(raw)-1])
}

// IsNull reports whether a raw value Flat accepted is null (or absent).
func IsNull(raw []byte) bool { return len(raw) == 0 || raw[0] == 'n' }

func index(known []string, key []byte) int {
	for i, k := range known {
		if k == string(key) {
			return i
		}
	}
	return -1
}

// plainString reads a JSON string at data[i] made of printable ASCII
// without escapes, and returns its contents and the index after its
// closing quote.
func plainString(data []byte, i int) (s []byte, next int, ok bool) {
	if i >= len(data) || data[i] != '"' {
		return nil, 0, false
	}
	for j := i + 1; j < len(data); j++ {
		switch c := data[j]; {
		case c == '"':
			return data[i+1 : j], j + 1, true
		case c < 0x20 || c > 0x7e || c == '\\':
			return nil, 0, false
		}
	}
	return nil, 0, false
}

func skipSpace(data []byte, i int) int {
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	return i
}
