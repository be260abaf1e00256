package tasks

import (
	"encoding/json"
	"testing"
	"time"
)

// BenchmarkDecodeClosePayload measures the worker's strict decode of a
// stored close payload, as the producer writes it.
//
//	go test ./tasks -run '^$' -bench DecodeClosePayload -count 5
func BenchmarkDecodeClosePayload(b *testing.B) {
	for _, tc := range []struct {
		name string
		p    ClosePayload
	}{
		{"out_trade_no", ClosePayload{OutTradeNo: "P202611221030150000001", MchID: "1900000109",
			CreatedAt: time.Date(2026, 11, 22, 10, 30, 15, 123456789, time.UTC)}},
		{"institutional+close_at", ClosePayload{OutTradeNo: "P202611221030150000001", MchID: "1900000109", SubMchID: "1900000110",
			SubAppID: "wx8888888888888888", CreatedAt: time.Date(2026, 11, 22, 10, 30, 15, 0, time.FixedZone("", 8*3600)),
			CloseAt: time.Date(2026, 11, 22, 11, 0, 0, 0, time.FixedZone("", 8*3600))}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			data := mustMarshal(b, tc.p)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := DecodeClosePayload(data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func mustMarshal(tb testing.TB, p ClosePayload) []byte {
	tb.Helper()
	data, err := json.Marshal(p)
	if err != nil {
		tb.Fatal(err)
	}
	return data
}
