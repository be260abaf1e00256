package strictjson

import (
	"bytes"
	"encoding/json"
	"testing"
)

var known = []string{"out_trade_no", "mchid", "created_at"}

func TestFlat(t *testing.T) {
	tests := []struct {
		in   string
		ok   bool
		want []string // per known field; "<nil>" absent, "<null>" null
	}{
		{`{"out_trade_no":"A-1","mchid":"1900000109","created_at":"2026-11-22T10:00:00Z"}`, true, []string{"A-1", "1900000109", "2026-11-22T10:00:00Z"}},
		{" \t\r\n{ \"mchid\" : null ,\"out_trade_no\":\"\" } \n", true, []string{"", "<null>", "<nil>"}},
		{`{}`, true, []string{"<nil>", "<nil>", "<nil>"}},
		{`{"out_trade_no":"A","out_trade_no":"B"}`, false, nil},
		{`{"OUT_TRADE_NO":"A"}`, false, nil},
		{`{"other":"A"}`, false, nil},
		{`{"out_trade_no":"\u0041"}`, false, nil},
		{`{"out_trade_no":"订单"}`, false, nil},
		{`{"out_trade_no":1}`, false, nil},
		{`{"out_trade_no":"A",}`, false, nil},
		{`{"out_trade_no":"A"} x`, false, nil},
		{`{"out_trade_no":"A"`, false, nil},
		{`{"out_trade_no":nul}`, false, nil},
		{`{"out_trade_no":nullx}`, false, nil},
		{`[]`, false, nil},
		{``, false, nil},
	}
	for _, tt := range tests {
		out := make([][]byte, len(known))
		ok := Flat([]byte(tt.in), known, out)
		if ok != tt.ok {
			t.Errorf("Flat(%q) = %t, want %t", tt.in, ok, tt.ok)
			continue
		}
		if !ok {
			continue
		}
		for i, raw := range out {
			got := String(raw)
			switch {
			case raw == nil:
				got = "<nil>"
			case IsNull(raw):
				got = "<null>"
			}
			if got != tt.want[i] {
				t.Errorf("Flat(%q): %s = %q, want %q", tt.in, known[i], got, tt.want[i])
			}
		}
	}
}

// FuzzFlat holds Flat to encoding/json: what it accepts is valid JSON, one
// object with exactly the keys it reported, whose values encoding/json reads
// as the same strings (or null).
func FuzzFlat(f *testing.F) {
	f.Add([]byte(`{"out_trade_no":"A-1","mchid":null,"created_at":"2026-11-22T10:00:00Z"}`))
	f.Add([]byte(` { "mchid" : "1" } `))
	f.Add([]byte(`{"out_trade_no":"A","out_trade_no":"B"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		out := make([][]byte, len(known))
		if !Flat(data, known, out) {
			return
		}
		dec := json.NewDecoder(bytes.NewReader(data))
		var m map[string]*string
		if err := dec.Decode(&m); err != nil || dec.More() {
			t.Fatalf("Flat accepted %q, which encoding/json refuses: %v", data, err)
		}
		n := 0
		for i, raw := range out {
			v, present := m[known[i]]
			if present != (raw != nil) {
				t.Fatalf("Flat(%q): field %s present %t, encoding/json says %t", data, known[i], raw != nil, present)
			}
			if !present {
				continue
			}
			n++
			if IsNull(raw) != (v == nil) || v != nil && *v != String(raw) {
				t.Fatalf("Flat(%q): field %s = %q, encoding/json reads %v", data, known[i], raw, v)
			}
		}
		if n != len(m) {
			t.Fatalf("Flat(%q) accepted keys encoding/json reads as %v", data, m)
		}
	})
}
