package logging

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

func TestNew(t *testing.T) {
	tests := []struct {
		format   string
		wantJSON bool
	}{
		{"json", true},
		{"auto", true}, // a buffer is not a terminal
		{"console", false},
	}
	for _, tt := range tests {
		t.Run(tt.format, func(t *testing.T) {
			var buf bytes.Buffer
			log := New(&buf, zerolog.InfoLevel, tt.format)
			log.Debug().Msg("hidden")
			log.Info().Str("task_id", "close:1:out_trade_no:A").Msg("close attempt")
			out := buf.String()
			if strings.Contains(out, "hidden") {
				t.Fatalf("debug line written at info level: %q", out)
			}
			var line map[string]any
			isJSON := json.Unmarshal(bytes.TrimSpace(buf.Bytes()), &line) == nil
			if isJSON != tt.wantJSON || !strings.Contains(out, "close attempt") {
				t.Fatalf("format %s wrote %q (JSON: %t)", tt.format, out, isJSON)
			}
			if isJSON && line["time"] == nil {
				t.Fatalf("no timestamp in %q", out)
			}
		})
	}
}
