// Command minimalworker is the deliberately minimal close worker that
// `go run ./cmd/bench` measures wxclose against (the "minimal" section):
// one asynq server whose handler decodes the payload, makes the signed
// Close Order call with the wechat client (so the response is verified as
// the worker verifies it) and returns. It has none of what wxclose adds
// around the call: no due-time or clock-skew guard, no failure record, no
// metrics, no log line, no reconciliation hand-off, one dequeue loop.
//
// It is its own process, as the worker is, so that both pay the same
// scheduling between processes on a shared machine; the bench builds it,
// starts it with the sandbox's credentials and stops it with SIGTERM. It
// runs with the worker's garbage-collector settings (internal/gctune).
//
// Every close must end closed: on SIGTERM it prints how many did and
// exits 1 if any did not.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hibiken/asynq"

	"github.com/wxclose/wxclose/internal/gctune"
	"github.com/wxclose/wxclose/tasks"
	"github.com/wxclose/wxclose/wechat"
	"github.com/wxclose/wxclose/wechat/sandbox"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "minimalworker:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("minimalworker", flag.ContinueOnError)
	redisURL := fs.String("redis", "", "Redis URL (redis://host:port/db)")
	baseURL := fs.String("sandbox", "", "the sandbox's base URL")
	keysDir := fs.String("keys", "", "directory the sandbox's credentials were written to")
	api := fs.String("api", "v3", "v3 or v2")
	concurrency := fs.Int("concurrency", 50, "asynq concurrency")
	if err := fs.Parse(args); err != nil {
		return err
	}
	gctune.Apply(os.Getenv, *concurrency)
	creds, err := sandbox.LoadCredentials(*keysDir)
	if err != nil {
		return err
	}
	closer, err := newCloser(creds, *api, *baseURL, *concurrency)
	if err != nil {
		return err
	}
	redisOpt, err := asynq.ParseRedisURI(*redisURL)
	if err != nil {
		return fmt.Errorf("-redis: %w", err)
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
	srv := asynq.NewServer(redisOpt, asynq.Config{
		Concurrency: *concurrency, Queues: map[string]int{tasks.QueueClose: 1},
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

// newCloser configures the wechat client for the sandbox as the worker's
// sandbox.env does: the merchant's key, and the sandbox's public key and
// platform certificates trusted.
func newCloser(creds *sandbox.Credentials, api, baseURL string, concurrency int) (wechat.Closer, error) {
	cfg := wechat.Config{API: wechat.APIVersion(api), BaseURL: baseURL, MchID: creds.MchID,
		MaxIdleConnsPerHost: concurrency, Timeout: 30 * time.Second}
	switch api {
	case "v3":
		key, err := wechat.LoadPrivateKey(creds.MerchantPrivateKeyPEM)
		if err != nil {
			return nil, err
		}
		pub, err := wechat.LoadPublicKey(creds.PublicKeyPEM)
		if err != nil {
			return nil, err
		}
		certs, err := wechat.LoadCertificates(creds.PlatformCertPEM)
		if err != nil {
			return nil, err
		}
		cfg.PrivateKey, cfg.CertSerial = key, creds.MerchantCertSerial
		cfg.PublicKey, cfg.PublicKeyID, cfg.PlatformCerts = pub, creds.PublicKeyID, certs
	case "v2":
		cfg.AppID, cfg.APIKey = creds.AppID, creds.APIKey
	default:
		return nil, errors.New(`-api must be "v3" or "v2"`)
	}
	return wechat.New(cfg)
}
