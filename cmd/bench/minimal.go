package main

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"

	"github.com/wxclose/wxclose/tasks"
	"github.com/wxclose/wxclose/wechat"
)

// measureMinimal runs the deliberately minimal close worker issue 8 compares
// wxclose with: one asynq server at the worker's concurrency whose handler
// decodes the payload, makes the signed Close Order call with the same
// wechat client (so the response is verified as the worker verifies it)
// and returns. It has none of what wxclose adds around the call: no
// due-time or clock-skew guard, no failure record, no metrics, no log line,
// no reconciliation hand-off, and a single dequeue loop.
//
// It runs in the bench process, next to the sandbox, with the worker's
// garbage-collector setting while it runs. The rows it adds are a second
// baseline for the v3 and v2 figures: their ratio to it is what wxclose's
// handler costs over the bare minimum on this machine, a figure that the
// machine's speed affects much less than the ratio to the signing bound
// (both sides sign).
func (b *bench) measureMinimal(ctx context.Context, api string) error {
	cfg := wechat.Config{API: wechat.APIVersion(api), BaseURL: b.sbURL, MchID: b.creds.MchID,
		MaxIdleConnsPerHost: b.o.concurrency, Timeout: 30 * time.Second}
	switch api {
	case "v3":
		key, err := wechat.LoadPrivateKey(b.creds.MerchantPrivateKeyPEM)
		if err != nil {
			return err
		}
		pub, err := wechat.LoadPublicKey(b.creds.PublicKeyPEM)
		if err != nil {
			return err
		}
		certs, err := wechat.LoadCertificates(b.creds.PlatformCertPEM)
		if err != nil {
			return err
		}
		// Trusted as the worker's sandbox.env configures it.
		cfg.PrivateKey, cfg.CertSerial = key, b.creds.MerchantCertSerial
		cfg.PublicKey, cfg.PublicKeyID, cfg.PlatformCerts = pub, b.creds.PublicKeyID, certs
	case "v2":
		cfg.AppID, cfg.APIKey = b.creds.AppID, b.creds.APIKey
	}
	closer, err := wechat.New(cfg)
	if err != nil {
		return err
	}
	n := b.o.orders
	prefix := byte('U')
	if api == "v2" {
		prefix = 'W'
	}
	if _, err := enqueueAll(ctx, b.producer, b.orders(prefix, n, longAgo, true)); err != nil {
		return err
	}
	var closed, failed atomic.Int64
	var lastErr atomic.Value
	mux := asynq.NewServeMux()
	mux.HandleFunc(tasks.TypeClose, func(ctx context.Context, t *asynq.Task) error {
		p, err := tasks.DecodeClosePayload(t.Payload())
		if err != nil {
			return fmt.Errorf("%v: %w", err, asynq.SkipRetry)
		}
		out, err := closer.Close(ctx, wechat.CloseRequest{OutTradeNo: p.OutTradeNo, TransactionID: p.TransactionID})
		if err == nil && out.Result != wechat.ResultClosed {
			err = fmt.Errorf("close %s: %s %s", p.OutTradeNo, out.Result, out.Code)
		}
		if err != nil {
			failed.Add(1)
			lastErr.Store(err)
			return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
		}
		closed.Add(1)
		return nil
	})
	srv := asynq.NewServer(b.redis.opt, asynq.Config{
		Concurrency: b.o.concurrency, Queues: map[string]int{tasks.QueueClose: 1},
		DelayedTaskCheckInterval: 200 * time.Millisecond, TaskCheckInterval: 100 * time.Millisecond,
		Logger: quietLogger{}, LogLevel: asynq.ErrorLevel,
	})
	defer srv.Shutdown() // asynq ignores a second Shutdown
	// The worker runs with GOGC=400 (internal/gctune); so does this one,
	// though the sandbox in the same process then collects less often too.
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	from := b.calls.count()
	if err := srv.Start(mux); err != nil {
		return err
	}
	lr, err := b.runLoad(ctx, nil, from, n)
	if err != nil {
		return err
	}
	srv.Shutdown()
	if f := failed.Load(); f > 0 {
		return fmt.Errorf("the minimal %s worker failed %d closes, the last: %v", api, f, lastErr.Load())
	}
	// The same baselines as wxclose's figures, without a target: what the
	// bare minimum reaches on this machine.
	spec := &ratioSpec{baseKey: "sign.signs_per_s", baseName: "RSA-2048 signing bound"}
	if api == "v2" {
		spec = &ratioSpec{baseKey: "drain.tasks_per_s", baseName: "bare asynq drain"}
	}
	b.report.bracket(row{
		ratio: spec,
		Key:   "minimal." + api + "_closes_per_s", Figure: fmt.Sprintf("minimal %s close worker (concurrency %d, in the bench process)", api, b.o.concurrency),
		Value: lr.rate, Unit: "closes/s", Text: thousands(lr.rate) + " closes/s",
		OtherCPUs: lr.use.otherCPUs(), perOpCPU: lr.use.total() / time.Duration(lr.closes),
		Details: fmt.Sprintf("%s closes/s: %d closes in %.2f s; CPU per close in all processes %s",
			thousands(lr.rate), n, lr.window.Seconds(), perOp(lr.use.total(), lr.closes)),
	})
	return nil
}
