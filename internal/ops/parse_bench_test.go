package ops

import "testing"

// BenchmarkParseOrderLine measures reading one bulk JSON Lines record.
//
//	go test ./internal/ops -run '^$' -bench ParseOrderLine -count 5
func BenchmarkParseOrderLine(b *testing.B) {
	line := []byte(`{"out_trade_no":"K202611221030150000001","created_at":"2026-11-22T10:30:15Z"}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseOrderLine(line); err != nil {
			b.Fatal(err)
		}
	}
}
