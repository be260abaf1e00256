// Package devmode runs everything the worker needs on one machine with no
// setup: an embedded Redis-compatible store (miniredis) on a free loopback
// port, and the WeChat Pay sandbox with freshly generated keys. It exists
// for `go run ./cmd/worker -dev` and is never used without that flag:
// production uses a real Redis and the real WeChat Pay.
package devmode

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/wxclose/wxclose/tasks"
	"github.com/wxclose/wxclose/wechat/sandbox"
)

// Env is a running development environment.
type Env struct {
	// RedisURL is where the embedded store listens, for cmd/enqueue.
	RedisURL string
	// SandboxURL is the base URL of the WeChat Pay sandbox.
	SandboxURL string
	// Sandbox is the in-process sandbox (tests inspect its calls).
	Sandbox *sandbox.Server
	// MchID is the sandbox merchant.
	MchID string

	redis    *miniredis.Miniredis
	httpSrv  *http.Server
	creds    sandbox.Credentials
	keysDir  string
	shutdown []func()
}

// Start starts the embedded store and the sandbox, each on a free loopback
// port, so a Redis already listening on 6379 is never touched.
func Start() (*Env, error) {
	mr := miniredis.NewMiniRedis()
	if err := mr.StartAddr("127.0.0.1:0"); err != nil {
		return nil, fmt.Errorf("start embedded redis: %w", err)
	}
	e := &Env{redis: mr, RedisURL: "redis://" + mr.Addr() + "/0"}
	e.shutdown = append(e.shutdown, mr.Close)

	// Unknown orders (ones added with cmd/enqueue) are created on first
	// sight, so every demo command closes something.
	sb, err := sandbox.New(sandbox.Options{UnknownOrders: sandbox.UnknownCreate})
	if err != nil {
		e.Close()
		return nil, fmt.Errorf("start sandbox: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.Close()
		return nil, fmt.Errorf("listen for sandbox: %w", err)
	}
	e.httpSrv = &http.Server{Handler: sb.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = e.httpSrv.Serve(ln) }()
	e.shutdown = append(e.shutdown, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = e.httpSrv.Shutdown(ctx)
	})
	e.Sandbox, e.creds = sb, sb.Credentials()
	if e.keysDir, err = os.MkdirTemp("", "wxclose-dev-keys-"); err != nil {
		e.Close()
		return nil, fmt.Errorf("create key directory: %w", err)
	}
	e.shutdown = append(e.shutdown, func() { _ = os.RemoveAll(e.keysDir) })
	if err := e.creds.WriteFiles(e.keysDir); err != nil {
		e.Close()
		return nil, fmt.Errorf("write sandbox keys: %w", err)
	}
	e.SandboxURL = "http://" + ln.Addr().String()
	e.MchID = e.creds.MchID
	return e, nil
}

// Getenv returns an environment lookup for config.Load in which Redis and
// every WeChat Pay setting point at the embedded store and the sandbox (with
// its key files written to a private temporary directory), and the retry
// backoff starts at 2 s unless set, so the demo's transient error resolves
// quickly. Other settings come from base.
func (e *Env) Getenv(base func(string) string) func(string) string {
	dev := map[string]string{
		"REDIS_URL":                      e.RedisURL,
		"WECHATPAY_API":                  "v3",
		"WECHATPAY_BASE_URL":             e.SandboxURL,
		"WECHATPAY_PATH_STYLE":           "global",
		"WECHATPAY_MCHID":                e.MchID,
		"WECHATPAY_MCH_PRIVATE_KEY_FILE": filepath.Join(e.keysDir, "apiclient_key.pem"),
		"WECHATPAY_MCH_CERT_SERIAL":      e.creds.MerchantCertSerial,
		"WECHATPAY_PLATFORM_CERT_FILE":   filepath.Join(e.keysDir, "platform_cert.pem"),
		"WECHATPAY_PUBLIC_KEY_FILE":      "",
		"WECHATPAY_PUBLIC_KEY_ID":        "",
		"WECHATPAY_APIV3_KEY":            "",
	}
	return func(name string) string {
		if v, ok := dev[name]; ok {
			return v
		}
		v := base(name)
		switch {
		case v != "":
			return v
		case name == "WXCLOSE_RETRY_INITIAL":
			return "2s"
		case name == "WXCLOSE_HTTP_ADDR":
			return freeHTTPAddr()
		}
		return v
	}
}

// Close stops the sandbox and the embedded store.
func (e *Env) Close() {
	for i := len(e.shutdown) - 1; i >= 0; i-- {
		e.shutdown[i]()
	}
	e.shutdown = nil
}

// Demo is one demonstration order and the outcome it should reach.
type Demo struct {
	OutTradeNo string
	// Want is the tasks.Outcome* the close should end with; permanent
	// errors end archived.
	Want      string
	Archived  bool
	Scheduled tasks.Scheduled
}

// SeedDemo registers demonstration orders at the sandbox and enqueues their
// closes, due within a few seconds, covering every route: closed, already
// closed, paid (reconciliation), a transient error that then succeeds, and a
// permanent error that is archived.
func (e *Env) SeedDemo(ctx context.Context, p *tasks.Producer) ([]Demo, error) {
	// Created just under 5 minutes ago: WeChat Pay's rule holds, and the
	// closes run a few seconds after start.
	created := time.Now().Add(-tasks.MinCloseAge + 3*time.Second)
	demos := []struct {
		no       string
		state    sandbox.State
		script   []sandbox.Step
		want     string
		archived bool
	}{
		{"DEMO-CLOSE-1", sandbox.StateUnpaid, nil, tasks.OutcomeClosed, false},
		{"DEMO-CLOSED-2", sandbox.StateClosed, nil, tasks.OutcomeAlreadyClosed, false},
		{"DEMO-PAID-3", sandbox.StatePaid, nil, tasks.OutcomePaid, false},
		{"DEMO-FLAKY-4", sandbox.StateUnpaid, []sandbox.Step{sandbox.SystemError(), sandbox.SystemError()}, tasks.OutcomeClosed, false},
		{"DEMO-NOAUTH-5", sandbox.StateUnpaid, []sandbox.Step{sandbox.Fail(http.StatusForbidden, "NO_AUTH", "merchant has no permission for this API (demo)")}, tasks.OutcomePermanent, true},
	}
	var out []Demo
	var errs []error
	for _, d := range demos {
		e.Sandbox.AddOrder(sandbox.Order{OutTradeNo: d.no, CreatedAt: created, State: d.state})
		if len(d.script) > 0 {
			e.Sandbox.Script(d.no, d.script...)
		}
		s, err := p.EnqueueClose(ctx, tasks.CloseOrder{OutTradeNo: d.no, MchID: e.MchID, CreatedAt: created})
		if err != nil {
			errs = append(errs, fmt.Errorf("enqueue demo %s: %w", d.no, err))
			continue
		}
		out = append(out, Demo{OutTradeNo: d.no, Want: d.want, Archived: d.archived, Scheduled: s})
	}
	return out, errors.Join(errs...)
}

// Banner tells a newcomer where to look once the worker runs.
func (e *Env) Banner(httpAddr string, demos []Demo) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\nwxclose development mode: embedded Redis, WeChat Pay sandbox, generated keys. Nothing here is production.\n\n")
	fmt.Fprintf(&b, "  embedded Redis    %s\n", e.RedisURL)
	fmt.Fprintf(&b, "  WeChat Pay sandbox %s (merchant %s)\n", e.SandboxURL, e.MchID)
	fmt.Fprintf(&b, "  dashboard         http://%s/monitoring/\n", httpAddr)
	fmt.Fprintf(&b, "  metrics           http://%s/metrics\n", httpAddr)
	fmt.Fprintf(&b, "  health            http://%s/healthz  http://%s/readyz\n\n", httpAddr, httpAddr)
	fmt.Fprintf(&b, "Demo orders, closing within a few seconds:\n")
	for _, d := range demos {
		want := "completed, " + d.Want
		if d.Archived {
			want = "archived (" + d.Want + " error)"
		}
		fmt.Fprintf(&b, "  %-14s -> %s\n", d.OutTradeNo, want)
	}
	fmt.Fprintf(&b, "\nAdd more (the sandbox accepts any order number in this mode):\n")
	fmt.Fprintf(&b, "  REDIS_URL=%s go run ./cmd/enqueue --out-trade-no MY-ORDER-1 --mchid %s --created-at %s\n",
		e.RedisURL, e.MchID, time.Now().Add(-tasks.MinCloseAge).UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "  REDIS_URL=%s go run ./cmd/enqueue list --state completed\n", e.RedisURL)
	fmt.Fprintf(&b, "  REDIS_URL=%s go run ./cmd/enqueue status --out-trade-no DEMO-NOAUTH-5 --mchid %s\n\n", e.RedisURL, e.MchID)
	return b.String()
}

// freeHTTPAddr keeps the usual 127.0.0.1:8080 when it is free and otherwise
// lets the system pick a port, so a demo never fails on a busy port; the
// banner prints the address in use.
func freeHTTPAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:8080")
	if err != nil {
		return "127.0.0.1:0"
	}
	ln.Close()
	return "127.0.0.1:8080"
}
