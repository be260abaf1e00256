// Command sandbox runs the wxclose WeChat Pay sandbox (package
// github.com/wxclose/wxclose/wechat/sandbox) as its own process, for local
// development and docker compose setups.
//
// On first start it generates test keys into -keys-dir, including a
// sandbox.env with the WECHATPAY_* variables that point the worker at them;
// later starts reuse those keys so that a running worker keeps working.
//
//	sandbox -addr 127.0.0.1:8090 -keys-dir ./sandbox-keys -unknown-orders create
//
// -unsigned-final-answers makes it send the close answers that end a close
// without a signature (Query Order answers stay signed), to test that a
// worker settles them with a signed query; POST /sandbox/settings
// {"unsigned_final_answers":true|false} changes it while it runs.
//
// -rate-limit N makes it answer 429 RATE_LIMITED (v2 FREQUENCY_LIMITED) to
// a merchant's closes above N per second (-rate-limit-burst at once); POST
// /sandbox/rate-limit {"mchid":"...","per_second":N} changes it while it
// runs. -extra-merchants N serves N more merchants, each with its own keys
// (in -keys-dir/merchants/<mchid>), and writes -keys-dir/merchants.yaml, a
// merchant registry for WXCLOSE_MERCHANTS_FILE.
//
// It never talks to the real WeChat Pay and its keys must never be used
// with it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/wxclose/wxclose/wechat/sandbox"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "sandbox:", err)
		}
		os.Exit(2)
	}
}

// run starts the sandbox and serves until ctx ends.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sandbox", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		addr      = fs.String("addr", "127.0.0.1:8090", "listen address")
		keysDir   = fs.String("keys-dir", "sandbox-keys", "directory for the test keys: reused if it holds keys from an earlier run, else generated there")
		mchid     = fs.String("mchid", "", "merchant id to accept (default: the keys' merchant, or "+sandbox.DefaultMchID+")")
		appid     = fs.String("appid", "", "v2 appid to accept (default: the keys' appid, or "+sandbox.DefaultAppID+")")
		unknown   = fs.String("unknown-orders", "notfound", `what closing an unknown order does: "notfound" (404 ORDER_NOT_EXIST) or "create" (create it long ago, then close it)`)
		pubKeyID  = fs.Bool("public-key-id-mode", false, "sign responses with the WeChat Pay public key (Wechatpay-Serial = PUB_KEY_ID_...) instead of the platform certificate")
		minAge    = fs.Duration("min-close-age", 0, "refuse closes earlier than this after order creation (default 5m)")
		seed      = fs.Int64("seed", 0, "seed for the fault rates (default: time-based)")
		slowDelay = fs.Duration("slow-delay", 0, "delay of slow faults (default 35s)")
		unsigned  = fs.Bool("unsigned-final-answers", false, "send close answers that end a close (204, ORDERCLOSED, ORDERPAID, not found) without a signature, Query Order answers signed; change at run time with POST /sandbox/settings")
		cacheSigs = fs.Bool("cache-response-signatures", false, "reuse a v3 response signature for an identical reply for up to a second (for benchmarks; requests are still verified)")
		extra     = fs.Int("extra-merchants", 0, "serve this many more merchants, each with its own keys, and write a merchant registry (merchants.yaml) for them all into -keys-dir")
		limit     sandbox.RateLimit
		rates     sandbox.Rates
	)
	fs.Float64Var(&limit.PerSecond, "rate-limit", 0, "answer 429 RATE_LIMITED (v2 FREQUENCY_LIMITED) to a merchant's closes above this many per second (0: no limit); change at run time with POST /sandbox/rate-limit")
	fs.IntVar(&limit.Burst, "rate-limit-burst", 0, "closes of one merchant that may arrive at once under -rate-limit (default: one second's worth)")
	fs.Float64Var(&rates.SystemError, "rate-system-error", 0, "probability of a 500 SYSTEM_ERROR per close")
	fs.Float64Var(&rates.RateLimited, "rate-rate-limited", 0, "probability of a 429 RATE_LIMITED per close")
	fs.Float64Var(&rates.ServerError, "rate-server-error", 0, "probability of a bare 502 per close")
	fs.Float64Var(&rates.Slow, "rate-slow", 0, "probability of a slow reply per close (see -slow-delay)")
	fs.Float64Var(&rates.Malformed, "rate-malformed", 0, "probability of a garbled body per close")
	fs.Float64Var(&rates.BadSignature, "rate-bad-signature", 0, "probability of a wrongly signed reply per close")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	rates.SlowDelay = *slowDelay
	policy := sandbox.UnknownNotFound
	switch *unknown {
	case "notfound":
	case "create":
		policy = sandbox.UnknownCreate
	default:
		return fmt.Errorf(`-unknown-orders must be "notfound" or "create", not %q`, *unknown)
	}
	dir, err := filepath.Abs(*keysDir)
	if err != nil {
		return err
	}
	creds, reused, err := loadOrGenerate(dir, *mchid, *appid)
	if err != nil {
		return err
	}
	if *extra < 0 {
		return fmt.Errorf("-extra-merchants must not be negative, not %d", *extra)
	}
	more, err := extraMerchants(dir, creds.MchID, *extra)
	if err != nil {
		return err
	}
	logger := log.New(stderr, "", log.LstdFlags)
	s, err := sandbox.New(sandbox.Options{
		Merchants:               more,
		RateLimit:               limit,
		MinCloseAge:             *minAge,
		UnknownOrders:           policy,
		SignWithPublicKeyID:     *pubKeyID,
		UnsignedFinalAnswers:    *unsigned,
		CacheResponseSignatures: *cacheSigs,
		Rates:                   rates,
		Seed:                    *seed,
		Credentials:             creds,
		Logf:                    logger.Printf,
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	how := "generated"
	if reused {
		how = "reused"
	}
	fmt.Fprintf(stdout, "sandbox listening on http://%s\n", ln.Addr())
	fmt.Fprintf(stdout, "keys %s in %s (worker variables: %s)\n", how, dir, filepath.Join(dir, "sandbox.env"))
	fmt.Fprintf(stdout, "merchant %s, merchant cert serial %s, platform cert serial %s\n", creds.MchID, creds.MerchantCertSerial, creds.PlatformCertSerial)
	if *unsigned {
		fmt.Fprintln(stdout, "close answers that end a close are sent unsigned (-unsigned-final-answers)")
	}
	if limit.PerSecond > 0 {
		fmt.Fprintf(stdout, "each merchant's closes are limited to %v/s (-rate-limit)\n", limit.PerSecond)
	}
	if len(more) > 0 {
		reg, err := writeRegistry(dir, "http://"+ln.Addr().String(), creds, more, limit.PerSecond)
		if err != nil {
			ln.Close()
			return err
		}
		fmt.Fprintf(stdout, "%d more merchants; merchant registry for all of them: WXCLOSE_MERCHANTS_FILE=%s\n", len(more), reg)
	}

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	// Let in-flight requests finish, but do not wait out a long scripted
	// delay: closing the connections cancels their contexts.
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil {
		srv.Close()
	}
	fmt.Fprintln(stdout, "sandbox stopped")
	return nil
}

// loadOrGenerate reuses the credentials in dir if it has any, else generates
// and writes new ones. Explicit -mchid/-appid must agree with reused keys.
func loadOrGenerate(dir, mchid, appid string) (*sandbox.Credentials, bool, error) {
	if _, err := os.Stat(filepath.Join(dir, "credentials.json")); err == nil {
		c, err := sandbox.LoadCredentials(dir)
		if err != nil {
			return nil, false, err
		}
		if mchid != "" && mchid != c.MchID {
			return nil, false, fmt.Errorf("-mchid %s differs from the merchant %s of the keys in %s; drop -mchid or use another -keys-dir", mchid, c.MchID, dir)
		}
		if appid != "" && appid != c.AppID {
			return nil, false, fmt.Errorf("-appid %s differs from the appid %s of the keys in %s; drop -appid or use another -keys-dir", appid, c.AppID, dir)
		}
		return c, true, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, false, err
	}
	c, err := sandbox.GenerateCredentials(mchid, appid)
	if err != nil {
		return nil, false, err
	}
	if err := c.WriteFiles(dir); err != nil {
		return nil, false, err
	}
	return c, false, nil
}
