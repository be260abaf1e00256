package httpapi

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxclose/wxclose/internal/redistest"
	"github.com/wxclose/wxclose/tasks"
)

// BenchmarkPostClose compares, in one run on one private redis-server,
// b.N sequential tasks.Producer.EnqueueClose calls with b.N POST
// /v1/closes requests from 16 keep-alive clients, and reports both rates,
// their ratio and the API's p99 latency (the target: ratio >= 0.5,
// p99 <= 5 ms on loopback).
//
//	go test ./internal/httpapi -run '^$' -bench PostClose -benchtime 5000x
func BenchmarkPostClose(b *testing.B) {
	const clients = 16
	redis := redistest.Start(b)
	created := time.Now()

	producer := tasks.NewProducer(redis.ConnOpt(), tasks.ProducerConfig{MchID: "1900000109"})
	defer producer.Close()
	start := time.Now()
	for i := range b.N {
		if _, err := producer.EnqueueClose(context.Background(), tasks.CloseOrder{OutTradeNo: fmt.Sprintf("GO-%d", i), CreatedAt: created}); err != nil {
			b.Fatal(err)
		}
	}
	goRate := float64(b.N) / time.Since(start).Seconds()

	tokens := writeTokens(b, plainToken)
	api, err := New(Options{Redis: redis.ConnOpt(), Producer: tasks.ProducerConfig{MchID: "1900000109"}, Tokens: tokens})
	if err != nil {
		b.Fatal(err)
	}
	defer api.Close()
	srv := httptest.NewServer(api.Handler())
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	bodies := make([][]byte, b.N)
	for i := range bodies {
		bodies[i] = fmt.Appendf(nil, `{"out_trade_no":"API-%d","created_at":%q}`, i, created.Format(time.RFC3339))
	}
	latencies := make([]time.Duration, b.N)
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start = time.Now()
	for range clients {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= b.N {
					return
				}
				req, _ := http.NewRequest("POST", srv.URL+"/v1/closes", bytes.NewReader(bodies[i]))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", "Bearer "+plainToken)
				t0 := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				latencies[i] = time.Since(t0)
				if resp.StatusCode != http.StatusCreated {
					b.Errorf("status %d", resp.StatusCode)
					return
				}
			}
		})
	}
	wg.Wait()
	apiRate := float64(b.N) / time.Since(start).Seconds()
	b.StopTimer()
	slices.Sort(latencies)
	b.ReportMetric(goRate, "producer_seq/s")
	b.ReportMetric(apiRate, "api/s")
	b.ReportMetric(apiRate/goRate, "ratio")
	b.ReportMetric(float64(latencies[len(latencies)*99/100].Microseconds())/1000, "p99_ms")
}
