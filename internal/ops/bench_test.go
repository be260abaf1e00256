package ops

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/wxclose/wxclose/internal/redistest"
	"github.com/wxclose/wxclose/tasks"
)

// BenchmarkEnqueue measures the bulk enqueue rate against a private Redis,
// with sequential Producer.EnqueueClose calls as the baseline. Each
// iteration is one order; compare the orders/s metrics of one run:
//
//	go test ./internal/ops -run '^$' -bench Enqueue -benchtime 20000x
//
// The same through the binary, with a JSON Lines file:
//
//	for i in $(seq 20000); do printf '{"out_trade_no":"LOAD-%d","created_at":"%s"}\n' $i $(date -u +%FT%TZ); done > /tmp/load.jsonl
//	time REDIS_URL=redis://127.0.0.1:PORT/0 go run ./cmd/enqueue --file /tmp/load.jsonl --quiet
func BenchmarkEnqueue(b *testing.B) {
	srv := redistest.Start(b)
	ctx := context.Background()
	created := time.Now()
	fresh := func(b *testing.B) *Client {
		if err := srv.Client().FlushAll(ctx).Err(); err != nil {
			b.Fatal(err)
		}
		return New(srv.Client(), tasks.ProducerConfig{MchID: testMchID})
	}

	b.Run("sequential-EnqueueClose", func(b *testing.B) {
		c := fresh(b)
		orders := make([]tasks.CloseOrder, b.N)
		for i := range orders {
			orders[i] = tasks.CloseOrder{OutTradeNo: fmt.Sprintf("BENCH-%d", i), CreatedAt: created}
		}
		b.ResetTimer()
		for i := range b.N {
			if s, err := c.producer.EnqueueClose(ctx, orders[i]); err != nil || s.Duplicate {
				b.Fatal(s, err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "orders/s")
	})

	for _, conc := range []int{1, 4, 16, 64} {
		b.Run(fmt.Sprintf("bulk-concurrency-%d", conc), func(b *testing.B) {
			c := fresh(b)
			var in bytes.Buffer
			ts := created.UTC().Format(time.RFC3339)
			for i := range b.N {
				fmt.Fprintf(&in, `{"out_trade_no":"BENCH-%d","created_at":"%s"}`+"\n", i, ts)
			}
			b.ResetTimer()
			sum, err := c.EnqueueBulk(ctx, &in, BulkOptions{Concurrency: conc})
			if err != nil || sum.Enqueued != b.N {
				b.Fatal(sum, err)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "orders/s")
		})
	}
}
