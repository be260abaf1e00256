// Command minimalworker is the deliberately minimal close worker that
// `go run ./cmd/bench` measures wxclose against (the "minimal" section):
// one asynq server whose handler decodes the payload, makes the signed
// Close Order call with the wechat client (so the response is verified as
// the worker verifies it) and returns. It has none of what wxclose adds
// around the call: no due-time or clock-skew guard, no failure record, no
// metrics, no log line, no reconciliation hand-off, one dequeue loop.
//
// It is its own process, as the worker is, so that both pay the same
// scheduling between processes on a shared machine. It reads the worker's
// environment (REDIS_URL, WECHATPAY_*, WXCLOSE_CONCURRENCY) through
// internal/config, so its client is built exactly as the worker's, and runs
// with the worker's garbage-collector settings (internal/gctune). The bench
// builds it, starts it with the worker's environment and stops it with
// SIGTERM.
//
// Every close must end closed: on SIGTERM it prints how many did and
// exits 1 if any did not.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hibiken/asynq"

	"github.com/wxclose/wxclose/internal/config"
	"github.com/wxclose/wxclose/internal/gctune"
	"github.com/wxclose/wxclose/tasks"
	"github.com/wxclose/wxclose/wechat"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "minimalworker:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg, err := config.Load(os.Getenv)
	if err != nil {
		return err
	}
	gctune.Apply(os.Getenv, cfg.Concurrency)
	closer, err := cfg.NewCloser(wechat.Hooks{})
	if err != nil {
		return err
	}

	var closed, failed atomic.Int64
	var lastErr atomic.Pointer[string] // an atomic.Value would panic on errors of different types
	mux := asynq.NewServeMux()
	closeOne := func(ctx context.Context, t *asynq.Task) error {
		p, err := tasks.DecodeClosePayload(t.Payload())
		if err != nil {
			return err
		}
		out, err := closer.Close(ctx, wechat.CloseRequest{OutTradeNo: p.OutTradeNo, TransactionID: p.TransactionID})
		if err == nil && out.Result != wechat.ResultClosed {
			err = fmt.Errorf("close %s: %s %s", p.OutTradeNo, out.Result, out.Code)
		}
		return err
	}
	mux.HandleFunc(tasks.TypeClose, func(ctx context.Context, t *asynq.Task) error {
		if err := closeOne(ctx, t); err != nil {
			msg := err.Error()
			lastErr.Store(&msg)
			failed.Add(1)
			return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
		}
		closed.Add(1)
		return nil
	})
	srv := asynq.NewServer(cfg.Redis, asynq.Config{
		Concurrency: cfg.Concurrency, Queues: map[string]int{tasks.QueueClose: 1},
		DelayedTaskCheckInterval: 200 * time.Millisecond, TaskCheckInterval: 100 * time.Millisecond,
		LogLevel: asynq.ErrorLevel,
	})
	if err := srv.Start(mux); err != nil {
		return err
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
	<-stop
	srv.Shutdown()
	fmt.Printf("minimalworker: %d closed, %d failed\n", closed.Load(), failed.Load())
	if f := failed.Load(); f > 0 {
		return fmt.Errorf("%d closes failed, the last: %s", f, *lastErr.Load())
	}
	return nil
}
