package hatest

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/wxclose/wxclose/internal/redistest"
	"github.com/wxclose/wxclose/tasks"
)

// TestEnqueueLatencyWait measures what WXCLOSE_WAIT_REPLICAS=1 costs an
// enqueue: sequential EnqueueClose calls through Sentinel to a primary with
// one replica on loopback, without and with the wait, interleaved in
// blocks so that both see the same machine. It only runs when
// WXCLOSE_WAIT_LATENCY_SAMPLES is set (the number of calls of each kind):
//
//	WXCLOSE_WAIT_LATENCY_SAMPLES=5000 go test ./internal/hatest -run TestEnqueueLatencyWait -v -count=1
//
// It prints p50, p99 and max of each and their ratios; it asserts nothing
// about speed.
func TestEnqueueLatencyWait(t *testing.T) {
	v := os.Getenv("WXCLOSE_WAIT_LATENCY_SAMPLES")
	if v == "" {
		t.Skip("set WXCLOSE_WAIT_LATENCY_SAMPLES=N to measure")
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 100 {
		t.Fatalf("WXCLOSE_WAIT_LATENCY_SAMPLES=%q: want a number of at least 100", v)
	}
	s := redistest.StartSentinel(t, redistest.SentinelOptions{})
	ctx := context.Background()
	now := time.Now()
	producers := []*tasks.Producer{
		tasks.NewProducer(s.ConnOpt(), tasks.ProducerConfig{MchID: "1900000109"}),
		tasks.NewProducer(s.ConnOpt(), tasks.ProducerConfig{MchID: "1900000109", WaitReplicas: 1}),
	}
	samples := [2][]time.Duration{}
	const block = 100
	for i := 0; i < n; i += block {
		for k, p := range producers {
			for j := i; j < min(i+block, n); j++ {
				o := tasks.CloseOrder{OutTradeNo: fmt.Sprintf("L%d-%d", k, j), CreatedAt: now}
				t0 := time.Now()
				if _, err := p.EnqueueClose(ctx, o); err != nil {
					t.Fatal(err)
				}
				samples[k] = append(samples[k], time.Since(t0))
			}
		}
	}
	q := func(d []time.Duration, p float64) time.Duration { return d[min(len(d)-1, int(p*float64(len(d))))] }
	for k := range samples {
		slices.Sort(samples[k])
	}
	no, yes := samples[0], samples[1]
	t.Logf("sequential EnqueueClose through Sentinel, primary + 1 replica on loopback, %d calls each:", n)
	t.Logf("  without WAIT: p50 %v  p99 %v  max %v", q(no, 0.5), q(no, 0.99), no[len(no)-1])
	t.Logf("  WAIT 1:       p50 %v  p99 %v  max %v", q(yes, 0.5), q(yes, 0.99), yes[len(yes)-1])
	t.Logf("  ratio (WAIT / none): p50 %.2f  p99 %.2f", q(yes, 0.5).Seconds()/q(no, 0.5).Seconds(), q(yes, 0.99).Seconds()/q(no, 0.99).Seconds())
}
