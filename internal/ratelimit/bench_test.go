package ratelimit_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxclose/wxclose/internal/closehandler"
	"github.com/wxclose/wxclose/internal/ratelimit"
	"github.com/wxclose/wxclose/internal/redistest"
	"github.com/wxclose/wxclose/tasks"
	"github.com/wxclose/wxclose/wechat"
	"github.com/wxclose/wxclose/wechat/sandbox"
)

// BenchmarkCloses measures what the rate limit costs the hot path when it
// does not bind: closes per second through the close handler (strict
// decode, guard, the signed v3 call to the sandbox over real HTTP, its
// verified answer), without a limiter and with one whose rate is far above
// what the machine reaches, so every close takes its slot at once in one
// Redis round trip (a private redis-server). Compare the closes/s of the
// two, run interleaved a few times on a quiet machine:
//
//	go test ./internal/ratelimit -run '^$' -bench Closes -benchtime 4000x -count 3
func BenchmarkCloses(b *testing.B) {
	srv := redistest.Start(b)
	sb, err := sandbox.New(sandbox.Options{UnknownOrders: sandbox.UnknownCreate, CacheResponseSignatures: true})
	if err != nil {
		b.Fatal(err)
	}
	hs := httptest.NewServer(sb.Handler())
	b.Cleanup(hs.Close)
	creds := sb.Credentials()
	key, err := wechat.LoadPrivateKey(creds.MerchantPrivateKeyPEM)
	if err != nil {
		b.Fatal(err)
	}
	certs, err := wechat.LoadCertificates(creds.PlatformCertPEM)
	if err != nil {
		b.Fatal(err)
	}
	closer, err := wechat.New(wechat.Config{BaseURL: hs.URL, MchID: creds.MchID, PrivateKey: key,
		CertSerial: creds.MerchantCertSerial, PlatformCerts: certs, Timeout: 10 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	lim, err := ratelimit.New(srv.Client(), ratelimit.Options{})
	if err != nil {
		b.Fatal(err)
	}
	var seq atomic.Int64
	created := time.Now().Add(-time.Hour)
	run := func(b *testing.B, limiter closehandler.Limiter, rate float64) {
		h, err := closehandler.New(closehandler.Config{
			Merchants:  oneMerchant{closehandler.Merchant{MchID: creds.MchID, Closer: closer, RateLimit: rate}},
			Limiter:    limiter,
			Reconciler: noReconciler{},
		})
		if err != nil {
			b.Fatal(err)
		}
		b.SetParallelism(8) // closes in flight per CPU, as a worker with WXCLOSE_CONCURRENCY=16 on two cores
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				p := tasks.ClosePayload{OutTradeNo: fmt.Sprintf("BENCH-%d", seq.Add(1)), MchID: creds.MchID, CreatedAt: created}
				raw, _ := json.Marshal(p)
				meta := closehandler.TaskMeta{ID: tasks.CloseTaskID(p.Ref()), Type: tasks.TypeClose}
				if _, err := h.ProcessClose(context.Background(), meta, raw); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "closes/s")
	}
	b.Run("without-limiter", func(b *testing.B) { run(b, nil, 0) })
	b.Run("with-limiter", func(b *testing.B) { run(b, lim, maxRate) })
}

// maxRate is the highest rate a merchant may be given: far above
// what one machine closes, so the limit never binds.
const maxRate = 100_000

type oneMerchant struct{ m closehandler.Merchant }

func (o oneMerchant) Merchant(string) (closehandler.Merchant, error) { return o.m, nil }

type noReconciler struct{}

func (noReconciler) EnqueueReconcile(context.Context, tasks.ReconcilePayload) (bool, error) {
	return false, nil
}

// BenchmarkReserve is the limiter's own cost per close when the limit does
// not bind: one Lua call (EVALSHA) on a private redis-server, next to a
// PING as the floor of any Redis round trip.
func BenchmarkReserve(b *testing.B) {
	srv := redistest.Start(b)
	lim, err := ratelimit.New(srv.Client(), ratelimit.Options{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.Run("ping", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := srv.Client().Ping(ctx).Err(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("reserve", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := lim.Reserve(ctx, "1900000109", maxRate, time.Second); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
