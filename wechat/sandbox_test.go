package wechat_test

import (
	"context"
	"crypto/x509"
	"errors"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxclose/wxclose/wechat"
	"github.com/wxclose/wxclose/wechat/sandbox"
)

// Integration tests against the independent sandbox over real HTTP.

var (
	sbCredsOnce sync.Once
	sbCreds     *sandbox.Credentials
	sbCredsErr  error
)

// sharedCredentials generates sandbox keys once per run: RSA key generation
// dominates the test time otherwise. Each sandbox keeps its own copy.
func sharedCredentials(t testing.TB) *sandbox.Credentials {
	t.Helper()
	sbCredsOnce.Do(func() { sbCreds, sbCredsErr = sandbox.GenerateCredentials("", "") })
	if sbCredsErr != nil {
		t.Fatal(sbCredsErr)
	}
	c := *sbCreds
	return &c
}

type sbEnv struct {
	sb    *sandbox.Server
	url   string
	creds sandbox.Credentials
	clock *testClock
}

// testClock is the client's clock: real time plus an offset, so tests can
// step past rate limits while staying inside the sandbox's 5-minute window.
type testClock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.off)
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.off += d
	c.mu.Unlock()
}

func newSandbox(t testing.TB, opts sandbox.Options) *sbEnv {
	t.Helper()
	if opts.Credentials == nil {
		opts.Credentials = sharedCredentials(t)
	}
	sb, err := sandbox.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sb.Handler())
	t.Cleanup(srv.Close)
	return &sbEnv{sb: sb, url: srv.URL, creds: sb.Credentials(), clock: &testClock{}}
}

// addOrder registers an order created long enough ago to be closable.
func (e *sbEnv) addOrder(o sandbox.Order) {
	if o.CreatedAt.IsZero() {
		o.CreatedAt = time.Now().Add(-10 * time.Minute)
	}
	e.sb.AddOrder(o)
}

type trustMode int

const (
	trustCert     trustMode = iota // Config.PlatformCerts
	trustDownload                  // Config.APIv3Key only
	trustPubKey                    // Config.PublicKey + PublicKeyID
)

func (e *sbEnv) v3Config(t testing.TB, mode trustMode) wechat.Config {
	t.Helper()
	key, err := wechat.LoadPrivateKey(e.creds.MerchantPrivateKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	cfg := wechat.Config{
		BaseURL:    e.url,
		MchID:      e.creds.MchID,
		PrivateKey: key,
		CertSerial: e.creds.MerchantCertSerial,
		Timeout:    10 * time.Second,
		Now:        e.clock.Now,
	}
	switch mode {
	case trustCert:
		certs, err := wechat.LoadCertificates(e.creds.PlatformCertPEM)
		if err != nil {
			t.Fatal(err)
		}
		cfg.PlatformCerts = certs
	case trustDownload:
		cfg.APIv3Key = e.creds.APIv3Key
	case trustPubKey:
		pub, err := wechat.LoadPublicKey(e.creds.PublicKeyPEM)
		if err != nil {
			t.Fatal(err)
		}
		cfg.PublicKey, cfg.PublicKeyID = pub, e.creds.PublicKeyID
	}
	return cfg
}

func (e *sbEnv) v2Config(st wechat.SignType) wechat.Config {
	return wechat.Config{API: wechat.APIv2, BaseURL: e.url, MchID: e.creds.MchID, AppID: e.creds.AppID,
		APIKey: e.creds.APIKey, SignType: st, Timeout: 10 * time.Second}
}

func (e *sbEnv) certificateCalls() int {
	n := 0
	for _, c := range e.sb.Calls() {
		if c.API == "certificates" {
			n++
		}
	}
	return n
}

// expect is what one Close should return.
type expect struct {
	result     wechat.Result // 0: an error
	class      wechat.Class
	code       string
	sentinel   error
	retryAfter time.Duration
	state      sandbox.State // the order's state at the sandbox afterwards
	confirmed  bool          // the outcome came from a Query Order answer
	tradeState string        // its trade_state
}

func checkClose(t *testing.T, out wechat.Outcome, err error, w expect) {
	t.Helper()
	if w.result != 0 {
		if err != nil {
			t.Fatalf("Close: %v, want %v", err, w.result)
		}
		if out.Result != w.result || out.Code != w.code {
			t.Fatalf("outcome %+v, want %v %q", out, w.result, w.code)
		}
		if out.ConfirmedByQuery != w.confirmed || out.TradeState != w.tradeState {
			t.Fatalf("outcome %+v, want ConfirmedByQuery %v with trade state %q", out, w.confirmed, w.tradeState)
		}
		return
	}
	if err == nil {
		t.Fatalf("Close returned %+v, want a %v error", out, w.class)
	}
	we := errorAs(t, err)
	if we.Class != w.class || (w.code != "" && we.Code != w.code) {
		t.Fatalf("error %v, want class %v code %q", err, w.class, w.code)
	}
	if w.sentinel != nil && !errors.Is(err, w.sentinel) {
		t.Fatalf("error %v does not wrap %v", err, w.sentinel)
	}
	if w.retryAfter != 0 && we.RetryAfter != w.retryAfter {
		t.Fatalf("RetryAfter %v, want %v", we.RetryAfter, w.retryAfter)
	}
}

func TestSandboxV3(t *testing.T) {
	tests := []struct {
		name    string
		opts    sandbox.Options
		mode    trustMode
		style   wechat.PathStyle
		timeout time.Duration
		order   *sandbox.Order // nil: unknown order
		script  []sandbox.Step
		qscript []sandbox.Step      // Query Order steps
		req     wechat.CloseRequest // OutTradeNo "T1" if zero
		want    expect
	}{
		{name: "204 closes", order: &sandbox.Order{OutTradeNo: "T1"},
			want: expect{result: wechat.ResultClosed, state: sandbox.StateClosed}},
		{name: "ORDERCLOSED", order: &sandbox.Order{OutTradeNo: "T1", State: sandbox.StateClosed},
			want: expect{result: wechat.ResultAlreadyClosed, code: "ORDERCLOSED", state: sandbox.StateClosed}},
		{name: "ORDERPAID", order: &sandbox.Order{OutTradeNo: "T1", State: sandbox.StatePaid},
			want: expect{result: wechat.ResultPaid, code: "ORDERPAID", state: sandbox.StatePaid}},
		{name: "not found",
			want: expect{result: wechat.ResultNotFound, code: "ORDER_NOT_EXIST"}},
		{name: "by transaction id", order: &sandbox.Order{OutTradeNo: "T1", TransactionID: "4200000001"},
			req:  wechat.CloseRequest{TransactionID: "4200000001"},
			want: expect{result: wechat.ResultClosed, state: sandbox.StateClosed}},
		{name: "institutional", order: &sandbox.Order{OutTradeNo: "T1", SubMchID: "20000100"},
			req:  wechat.CloseRequest{OutTradeNo: "T1", SubMchID: "20000100"},
			want: expect{result: wechat.ResultClosed, state: sandbox.StateClosed}},
		{name: "HK path family", style: wechat.PathHK, order: &sandbox.Order{OutTradeNo: "T1"},
			want: expect{result: wechat.ResultClosed, state: sandbox.StateClosed}},
		{name: "HK path by transaction id", style: wechat.PathHK, order: &sandbox.Order{OutTradeNo: "T1", TransactionID: "4200000001"},
			req:  wechat.CloseRequest{TransactionID: "4200000001"},
			want: expect{result: wechat.ResultClosed, state: sandbox.StateClosed}},
		{name: "public-key mode", mode: trustPubKey, opts: sandbox.Options{SignWithPublicKeyID: true}, order: &sandbox.Order{OutTradeNo: "T1"},
			want: expect{result: wechat.ResultClosed, state: sandbox.StateClosed}},
		{name: "platform certificate download", mode: trustDownload, order: &sandbox.Order{OutTradeNo: "T1"},
			want: expect{result: wechat.ResultClosed, state: sandbox.StateClosed}},
		{name: "download mode HK", mode: trustDownload, style: wechat.PathHK, order: &sandbox.Order{OutTradeNo: "T1", State: sandbox.StatePaid},
			want: expect{result: wechat.ResultPaid, code: "ORDERPAID", state: sandbox.StatePaid}},

		{name: "SYSTEM_ERROR", order: &sandbox.Order{OutTradeNo: "T1"}, script: []sandbox.Step{sandbox.SystemError()},
			want: expect{class: wechat.ClassRetryable, code: "SYSTEM_ERROR", state: sandbox.StateUnpaid}},
		{name: "bare 502", order: &sandbox.Order{OutTradeNo: "T1"}, script: []sandbox.Step{sandbox.ServerError(502)},
			want: expect{class: wechat.ClassRetryable, state: sandbox.StateUnpaid}},
		{name: "bare 503", order: &sandbox.Order{OutTradeNo: "T1"}, script: []sandbox.Step{sandbox.ServerError(503)},
			want: expect{class: wechat.ClassRetryable, state: sandbox.StateUnpaid}},
		{name: "429 with Retry-After", order: &sandbox.Order{OutTradeNo: "T1"}, script: []sandbox.Step{sandbox.RateLimited(3 * time.Second)},
			want: expect{class: wechat.ClassRateLimited, code: "RATE_LIMITED", retryAfter: 3 * time.Second, state: sandbox.StateUnpaid}},
		{name: "401 SIGN_ERROR", order: &sandbox.Order{OutTradeNo: "T1"}, script: []sandbox.Step{sandbox.Fail(401, "SIGN_ERROR", "bad signature")},
			want: expect{class: wechat.ClassPermanent, code: "SIGN_ERROR", state: sandbox.StateUnpaid}},
		{name: "403 NO_AUTH", order: &sandbox.Order{OutTradeNo: "T1"}, script: []sandbox.Step{sandbox.Fail(403, "NO_AUTH", "no permission")},
			want: expect{class: wechat.ClassPermanent, code: "NO_AUTH", state: sandbox.StateUnpaid}},
		{name: "400 PARAM_ERROR", order: &sandbox.Order{OutTradeNo: "T1"}, script: []sandbox.Step{sandbox.Fail(400, "PARAM_ERROR", "bad")},
			want: expect{class: wechat.ClassPermanent, code: "PARAM_ERROR", state: sandbox.StateUnpaid}},
		{name: "malformed body", order: &sandbox.Order{OutTradeNo: "T1"}, script: []sandbox.Step{sandbox.MalformedBody()},
			want: expect{class: wechat.ClassRetryable, sentinel: wechat.ErrMalformedResponse, state: sandbox.StateUnpaid}},
		// The sandbox closes the order and then spoils the reply: the
		// client must not believe it, and settles it with a signed query.
		{name: "forged signature", order: &sandbox.Order{OutTradeNo: "T1"}, script: []sandbox.Step{sandbox.BadSignature()},
			want: expect{result: wechat.ResultClosed, state: sandbox.StateClosed, confirmed: true, tradeState: "CLOSED"}},
		{name: "missing signature", order: &sandbox.Order{OutTradeNo: "T1"}, script: []sandbox.Step{sandbox.MissingSignature()},
			want: expect{result: wechat.ResultClosed, state: sandbox.StateClosed, confirmed: true, tradeState: "CLOSED"}},
		{name: "forged ORDERPAID", order: &sandbox.Order{OutTradeNo: "T1", State: sandbox.StatePaid}, script: []sandbox.Step{sandbox.BadSignature()},
			want: expect{result: wechat.ResultPaid, state: sandbox.StatePaid, confirmed: true, tradeState: "SUCCESS"}},
		{name: "forged in download mode", mode: trustDownload, order: &sandbox.Order{OutTradeNo: "T1"}, script: []sandbox.Step{sandbox.BadSignature()},
			want: expect{result: wechat.ResultClosed, state: sandbox.StateClosed, confirmed: true, tradeState: "CLOSED"}},
		// When the query answer is forged too, nothing is believed.
		{name: "forged signature, forged query", order: &sandbox.Order{OutTradeNo: "T1"}, script: []sandbox.Step{sandbox.BadSignature()}, qscript: []sandbox.Step{sandbox.BadSignature()},
			want: expect{class: wechat.ClassRetryable, sentinel: wechat.ErrUntrustedResponse, state: sandbox.StateClosed}},
		{name: "missing signature, unsigned query", order: &sandbox.Order{OutTradeNo: "T1"}, script: []sandbox.Step{sandbox.MissingSignature()}, qscript: []sandbox.Step{sandbox.MissingSignature()},
			want: expect{class: wechat.ClassRetryable, sentinel: wechat.ErrUntrustedResponse, state: sandbox.StateClosed}},
		{name: "forged ORDERPAID, query fails", order: &sandbox.Order{OutTradeNo: "T1", State: sandbox.StatePaid}, script: []sandbox.Step{sandbox.BadSignature()}, qscript: []sandbox.Step{sandbox.SystemError()},
			want: expect{class: wechat.ClassRetryable, code: "ORDERPAID", sentinel: wechat.ErrUntrustedResponse, state: sandbox.StatePaid}},
		{name: "forged in download mode, forged query", mode: trustDownload, order: &sandbox.Order{OutTradeNo: "T1"}, script: []sandbox.Step{sandbox.BadSignature()}, qscript: []sandbox.Step{sandbox.BadSignature()},
			want: expect{class: wechat.ClassRetryable, sentinel: wechat.ErrUntrustedResponse, state: sandbox.StateClosed}},
		{name: "slow beyond Timeout", timeout: 300 * time.Millisecond, order: &sandbox.Order{OutTradeNo: "T1"}, script: []sandbox.Step{sandbox.Slow(3 * time.Second)},
			want: expect{class: wechat.ClassRetryable, sentinel: wechat.ErrTransport, state: sandbox.StateClosed}},
		{name: "too early is refused", order: &sandbox.Order{OutTradeNo: "T1", CreatedAt: time.Now()},
			want: expect{class: wechat.ClassPermanent, code: "INVALID_REQUEST", state: sandbox.StateUnpaid}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newSandbox(t, tt.opts)
			if tt.order != nil {
				e.addOrder(*tt.order)
			}
			if len(tt.script) > 0 {
				e.sb.Script("T1", tt.script...)
			}
			if len(tt.qscript) > 0 {
				e.sb.ScriptQuery("T1", tt.qscript...)
			}
			cfg := e.v3Config(t, tt.mode)
			cfg.PathStyle = tt.style
			if tt.timeout != 0 {
				cfg.Timeout = tt.timeout
			}
			c, err := wechat.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			req := tt.req
			if req == (wechat.CloseRequest{}) {
				req.OutTradeNo = "T1"
			}
			out, err := c.Close(context.Background(), req)
			checkClose(t, out, err, tt.want)
			if tt.order != nil {
				o, _ := e.sb.Order("T1")
				if o.State != tt.want.state {
					t.Errorf("sandbox order state %v, want %v", o.State, tt.want.state)
				}
			}
			for _, call := range e.sb.Calls() {
				if call.Outcome == "auth_failed" || call.Outcome == "bad_request" {
					t.Errorf("sandbox rejected a request: %+v", call)
				}
			}
		})
	}
}

// After an untrusted reply (and an untrusted query) the order may have
// closed; the retry must find that out with a verified ORDERCLOSED.
func TestSandboxRetryAfterForgedReply(t *testing.T) {
	e := newSandbox(t, sandbox.Options{})
	e.addOrder(sandbox.Order{OutTradeNo: "T1"})
	e.sb.Script("T1", sandbox.BadSignature())
	e.sb.ScriptQuery("T1", sandbox.BadSignature())
	c, err := wechat.New(e.v3Config(t, trustCert))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Close(context.Background(), wechat.CloseRequest{OutTradeNo: "T1"})
	checkClose(t, wechat.Outcome{}, err, expect{class: wechat.ClassRetryable, sentinel: wechat.ErrUntrustedResponse})
	out, err := c.Close(context.Background(), wechat.CloseRequest{OutTradeNo: "T1"})
	checkClose(t, out, err, expect{result: wechat.ResultAlreadyClosed, code: "ORDERCLOSED"})
}

func TestSandboxCertificateDownload(t *testing.T) {
	e := newSandbox(t, sandbox.Options{})
	e.addOrder(sandbox.Order{OutTradeNo: "T1"})
	e.addOrder(sandbox.Order{OutTradeNo: "T2"})
	c, err := wechat.NewV3(e.v3Config(t, trustDownload))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.RefreshCertificates(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, no := range []string{"T1", "T2"} {
		out, err := c.Close(context.Background(), wechat.CloseRequest{OutTradeNo: no})
		checkClose(t, out, err, expect{result: wechat.ResultClosed})
	}
	if n := e.certificateCalls(); n != 1 {
		t.Errorf("%d certificate downloads, want 1 (the refresh interval has not passed)", n)
	}
	// Past the refresh interval, the next close downloads again first.
	e.clock.Advance(4 * time.Minute)
	cfg := e.v3Config(t, trustDownload)
	cfg.CertRefreshInterval = 3 * time.Minute
	c2, err := wechat.NewV3(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.addOrder(sandbox.Order{OutTradeNo: "T3"})
	out, err := c2.Close(context.Background(), wechat.CloseRequest{OutTradeNo: "T3"})
	checkClose(t, out, err, expect{result: wechat.ResultClosed})
	if n := e.certificateCalls(); n != 2 {
		t.Errorf("%d certificate downloads, want 2", n)
	}
}

// A certificate list that does not decrypt is a retryable problem, never a
// permanent one: it must not end (archive) a close. With nothing else to
// verify with, Close fails before sending; the hook hears of each download
// that failed, at most one a minute.
func TestSandboxWrongAPIv3Key(t *testing.T) {
	e := newSandbox(t, sandbox.Options{})
	e.addOrder(sandbox.Order{OutTradeNo: "T1"})
	cfg := e.v3Config(t, trustDownload)
	cfg.APIv3Key = strings.Repeat("k", 32)
	var hook hookRecorder
	cfg.Hooks.CertificateRefreshFailed = hook.refreshFailed
	c, err := wechat.NewV3(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = c.RefreshCertificates(context.Background())
	checkClose(t, wechat.Outcome{}, err, expect{class: wechat.ClassRetryable, sentinel: wechat.ErrCertificateDownload})
	if !errors.Is(err, wechat.ErrCertificateDecrypt) {
		t.Errorf("error %v does not wrap ErrCertificateDecrypt", err)
	}
	_, err = c.Close(context.Background(), wechat.CloseRequest{OutTradeNo: "T1"})
	checkClose(t, wechat.Outcome{}, err, expect{class: wechat.ClassRetryable, sentinel: wechat.ErrCertificateDecrypt})
	if o, _ := e.sb.Order("T1"); o.State != sandbox.StateUnpaid {
		t.Errorf("order %v, want unpaid", o.State)
	}
	if n := e.certificateCalls(); n != 1 {
		t.Errorf("%d certificate downloads within a minute, want 1", n)
	}
	if errs := hook.failures(); len(errs) != 1 || !errors.Is(errs[0], wechat.ErrCertificateDownload) {
		t.Errorf("CertificateRefreshFailed got %v, want one ErrCertificateDownload", errs)
	}
	for _, secret := range []string{cfg.APIv3Key, e.creds.APIv3Key} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error leaks an APIv3 key: %v", err)
		}
	}
}

func TestSandboxWrongMerchantKey(t *testing.T) {
	e := newSandbox(t, sandbox.Options{})
	e.addOrder(sandbox.Order{OutTradeNo: "T1"})
	cfg := e.v3Config(t, trustCert)
	cfg.PrivateKey = getKeys(t).other
	c, err := wechat.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Close(context.Background(), wechat.CloseRequest{OutTradeNo: "T1"})
	checkClose(t, wechat.Outcome{}, err, expect{class: wechat.ClassPermanent, code: "SIGN_ERROR"})
}

// A rotation shows up as an unknown Wechatpay-Serial. In download mode the
// client downloads once more and carries on; a second unknown serial within
// the rate-limit minute is not trusted, and after the minute it is.
func TestSandboxRotation(t *testing.T) {
	e := newSandbox(t, sandbox.Options{})
	c, err := wechat.NewV3(e.v3Config(t, trustDownload))
	if err != nil {
		t.Fatal(err)
	}
	closeNo := func(no string) (wechat.Outcome, error) {
		e.addOrder(sandbox.Order{OutTradeNo: no})
		return c.Close(context.Background(), wechat.CloseRequest{OutTradeNo: no})
	}
	out, err := closeNo("T1")
	checkClose(t, out, err, expect{result: wechat.ResultClosed})

	if _, err := e.sb.RotatePlatformCert(); err != nil {
		t.Fatal(err)
	}
	out, err = closeNo("T2")
	checkClose(t, out, err, expect{result: wechat.ResultClosed})
	if n := e.certificateCalls(); n != 2 {
		t.Fatalf("%d certificate downloads after a rotation, want 2", n)
	}

	if _, err := e.sb.RotatePlatformCert(); err != nil {
		t.Fatal(err)
	}
	_, err = closeNo("T3")
	checkClose(t, wechat.Outcome{}, err, expect{class: wechat.ClassRetryable, sentinel: wechat.ErrUntrustedResponse})
	if n := e.certificateCalls(); n != 2 {
		t.Fatalf("%d certificate downloads, want still 2 (rate limit)", n)
	}

	e.clock.Advance(61 * time.Second)
	out, err = c.Close(context.Background(), wechat.CloseRequest{OutTradeNo: "T3"})
	checkClose(t, out, err, expect{result: wechat.ResultAlreadyClosed, code: "ORDERCLOSED"})
	if n := e.certificateCalls(); n != 3 {
		t.Fatalf("%d certificate downloads, want 3", n)
	}
}

// With only a configured certificate there is nothing to download: after a
// rotation replies are untrusted until the new certificate is configured.
func TestSandboxRotationStaticCerts(t *testing.T) {
	e := newSandbox(t, sandbox.Options{})
	e.addOrder(sandbox.Order{OutTradeNo: "T1"})
	c, err := wechat.New(e.v3Config(t, trustCert))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.sb.RotatePlatformCert(); err != nil {
		t.Fatal(err)
	}
	_, err = c.Close(context.Background(), wechat.CloseRequest{OutTradeNo: "T1"})
	checkClose(t, wechat.Outcome{}, err, expect{class: wechat.ClassRetryable, sentinel: wechat.ErrUntrustedResponse})
	if e.certificateCalls() != 0 {
		t.Error("downloaded certificates without an APIv3 key")
	}
	// Both certificates configured: trusted again.
	cfg := e.v3Config(t, trustCert)
	e.creds = e.sb.Credentials()
	newCerts, err := wechat.LoadCertificates(e.creds.PlatformCertPEM)
	if err != nil {
		t.Fatal(err)
	}
	cfg.PlatformCerts = append([]*x509.Certificate{}, append(cfg.PlatformCerts, newCerts...)...)
	c, err = wechat.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.Close(context.Background(), wechat.CloseRequest{OutTradeNo: "T1"})
	checkClose(t, out, err, expect{result: wechat.ResultAlreadyClosed, code: "ORDERCLOSED"})
}

func TestSandboxV2(t *testing.T) {
	tests := []struct {
		name    string
		order   *sandbox.Order
		script  []sandbox.Step
		qscript []sandbox.Step
		apiKey  string // wrong key if set
		want    expect
	}{
		{name: "closes", order: &sandbox.Order{OutTradeNo: "T1"}, want: expect{result: wechat.ResultClosed, state: sandbox.StateClosed}},
		{name: "ORDERCLOSED", order: &sandbox.Order{OutTradeNo: "T1", State: sandbox.StateClosed}, want: expect{result: wechat.ResultAlreadyClosed, code: "ORDERCLOSED", state: sandbox.StateClosed}},
		{name: "ORDERPAID", order: &sandbox.Order{OutTradeNo: "T1", State: sandbox.StatePaid}, want: expect{result: wechat.ResultPaid, code: "ORDERPAID", state: sandbox.StatePaid}},
		{name: "ORDERNOTEXIST", want: expect{result: wechat.ResultNotFound, code: "ORDERNOTEXIST"}},
		{name: "institutional", order: &sandbox.Order{OutTradeNo: "T1", SubMchID: "20000100"}, want: expect{result: wechat.ResultClosed, state: sandbox.StateClosed}},
		{name: "SYSTEMERROR", order: &sandbox.Order{OutTradeNo: "T1"}, script: []sandbox.Step{sandbox.SystemError()}, want: expect{class: wechat.ClassRetryable, code: "SYSTEMERROR", state: sandbox.StateUnpaid}},
		{name: "FREQUENCY_LIMITED", order: &sandbox.Order{OutTradeNo: "T1"}, script: []sandbox.Step{sandbox.RateLimited(2 * time.Second)}, want: expect{class: wechat.ClassRateLimited, code: "FREQUENCY_LIMITED", state: sandbox.StateUnpaid}},
		{name: "HTTP 502", order: &sandbox.Order{OutTradeNo: "T1"}, script: []sandbox.Step{sandbox.ServerError(502)}, want: expect{class: wechat.ClassRetryable, state: sandbox.StateUnpaid}},
		{name: "malformed", order: &sandbox.Order{OutTradeNo: "T1"}, script: []sandbox.Step{sandbox.MalformedBody()}, want: expect{class: wechat.ClassRetryable, sentinel: wechat.ErrMalformedResponse, state: sandbox.StateUnpaid}},
		{name: "forged sign", order: &sandbox.Order{OutTradeNo: "T1"}, script: []sandbox.Step{sandbox.BadSignature()}, want: expect{result: wechat.ResultClosed, state: sandbox.StateClosed, confirmed: true, tradeState: "CLOSED"}},
		{name: "missing sign", order: &sandbox.Order{OutTradeNo: "T1"}, script: []sandbox.Step{sandbox.MissingSignature()}, want: expect{result: wechat.ResultClosed, state: sandbox.StateClosed, confirmed: true, tradeState: "CLOSED"}},
		{name: "forged sign, forged query", order: &sandbox.Order{OutTradeNo: "T1"}, script: []sandbox.Step{sandbox.BadSignature()}, qscript: []sandbox.Step{sandbox.BadSignature()}, want: expect{class: wechat.ClassRetryable, sentinel: wechat.ErrUntrustedResponse, state: sandbox.StateClosed}},
		{name: "missing sign, unsigned query", order: &sandbox.Order{OutTradeNo: "T1"}, script: []sandbox.Step{sandbox.MissingSignature()}, qscript: []sandbox.Step{sandbox.MissingSignature()}, want: expect{class: wechat.ClassRetryable, sentinel: wechat.ErrUntrustedResponse, state: sandbox.StateClosed}},
		{name: "return_code FAIL on wrong key", order: &sandbox.Order{OutTradeNo: "T1"}, apiKey: strings.Repeat("w", 32), want: expect{class: wechat.ClassPermanent, code: "SIGNERROR", state: sandbox.StateUnpaid}},
	}
	for _, st := range []wechat.SignType{wechat.SignMD5, wechat.SignHMACSHA256} {
		for _, tt := range tests {
			t.Run(string(st)+"/"+tt.name, func(t *testing.T) {
				e := newSandbox(t, sandbox.Options{})
				if tt.order != nil {
					e.addOrder(*tt.order)
				}
				if len(tt.script) > 0 {
					e.sb.Script("T1", tt.script...)
				}
				if len(tt.qscript) > 0 {
					e.sb.ScriptQuery("T1", tt.qscript...)
				}
				cfg := e.v2Config(st)
				if tt.apiKey != "" {
					cfg.APIKey = tt.apiKey
				}
				c, err := wechat.New(cfg)
				if err != nil {
					t.Fatal(err)
				}
				req := wechat.CloseRequest{OutTradeNo: "T1"}
				if tt.order != nil && tt.order.SubMchID != "" {
					req.SubMchID = tt.order.SubMchID
				}
				out, err := c.Close(context.Background(), req)
				checkClose(t, out, err, tt.want)
				if tt.order != nil {
					if o, _ := e.sb.Order("T1"); o.State != tt.want.state {
						t.Errorf("sandbox order state %v, want %v", o.State, tt.want.state)
					}
				}
				if err != nil {
					for _, secret := range []string{cfg.APIKey, e.creds.APIKey} {
						if strings.Contains(err.Error(), secret) {
							t.Errorf("error leaks the API key: %v", err)
						}
					}
				}
			})
		}
	}
}

// Concurrent closes share one certificate download.
func TestSandboxConcurrentClosesShareDownload(t *testing.T) {
	e := newSandbox(t, sandbox.Options{})
	c, err := wechat.New(e.v3Config(t, trustDownload))
	if err != nil {
		t.Fatal(err)
	}
	const n = 16
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		no := "C" + strings.Repeat("1", i+1)
		e.addOrder(sandbox.Order{OutTradeNo: no})
		go func() {
			out, err := c.Close(context.Background(), wechat.CloseRequest{OutTradeNo: no})
			if err == nil && out.Result != wechat.ResultClosed {
				err = errors.New("not closed: " + out.Result.String())
			}
			errs <- err
		}()
	}
	for i := 0; i < n; i++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if got := e.certificateCalls(); got != 1 {
		t.Errorf("%d certificate downloads, want 1", got)
	}
}
