package sandbox_test

import (
	"context"
	"errors"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wxclose/wxclose/wechat/sandbox"
)

func TestV3ScriptedStepsConsumedInOrder(t *testing.T) {
	b := setup(t, sandbox.Options{})
	b.addAged("sc1", sandbox.StateUnpaid)
	b.addAged("other", sandbox.StateUnpaid)
	// Scripted by transaction id, called by out_trade_no: either number works.
	b.s.Script("42sc1",
		sandbox.SystemError(),
		sandbox.RateLimited(1500*time.Millisecond),
		sandbox.ServerError(http.StatusBadGateway),
		sandbox.MalformedBody(),
		sandbox.Fail(403, "NO_AUTH", "no permission"),
		sandbox.MissingSignature(),
	)
	// A request that fails authentication does not consume a step.
	if r, _ := b.c.v3(t, context.Background(), "POST", "/v3/global/transactions/out-trade-no/sc1/close", []byte(`{"mchid":"1900000109"}`), func(a *auth) { a.signed = "x" }); r.status != 401 {
		t.Fatalf("unauthenticated: %d", r.status)
	}
	// Other orders are not affected.
	if r := b.c.close(t, "other"); r.status != 204 {
		t.Fatalf("other order: %d %s", r.status, r.body)
	}
	type want struct {
		status     int
		code       string
		signed     bool
		retryAfter string
		json       bool
		outcome    string
	}
	for i, w := range []want{
		{500, "SYSTEM_ERROR", true, "", true, "scripted"},
		{429, "RATE_LIMITED", true, "2", true, "scripted"},
		{502, "", false, "", false, "scripted"},
		{200, "", true, "", false, "scripted"},
		{403, "NO_AUTH", true, "", true, "scripted"},
		{204, "", false, "", false, "closed"}, // MissingSignature: closed, unsigned
		{400, "ORDERCLOSED", true, "", true, "already_closed"},
	} {
		r := b.c.close(t, "sc1")
		if r.status != w.status {
			t.Fatalf("call %d: status %d %s, want %d", i, r.status, r.body, w.status)
		}
		if w.json && wxCode(r) != w.code {
			t.Errorf("call %d: code %q, want %q", i, wxCode(r), w.code)
		}
		if !w.json && w.status != 204 && wxCode(r) != "<non-json>" {
			t.Errorf("call %d: body %q should not be a JSON error", i, r.body)
		}
		if err := verifyV3(r, b.c.platform); (err == nil) != w.signed {
			t.Errorf("call %d: signed=%v, verify error %v", i, w.signed, err)
		}
		if r.header.Get("Retry-After") != w.retryAfter {
			t.Errorf("call %d: Retry-After %q, want %q", i, r.header.Get("Retry-After"), w.retryAfter)
		}
		if i == 4 {
			if o, _ := b.s.Order("sc1"); o.State != sandbox.StateUnpaid {
				t.Errorf("scripted errors changed the state to %v", o.State)
			}
		}
	}
	calls := b.s.CallsFor("sc1")
	if len(calls) != 8 {
		t.Fatalf("%d calls", len(calls))
	}
	var outcomes []string
	for _, c := range calls {
		outcomes = append(outcomes, c.Outcome)
	}
	if got := strings.Join(outcomes, ","); got != "auth_failed,scripted,scripted,scripted,scripted,scripted,closed,already_closed" {
		t.Errorf("outcomes %s", got)
	}
}

func TestV3BadSignatureStep(t *testing.T) {
	b := setup(t, sandbox.Options{})
	b.addAged("bs1", sandbox.StateUnpaid)
	b.s.Script("bs1", sandbox.BadSignature())
	r := b.c.close(t, "bs1")
	if r.status != 204 {
		t.Fatalf("status %d", r.status)
	}
	if r.header.Get("Wechatpay-Signature") == "" || r.header.Get("Wechatpay-Serial") != b.creds.PlatformCertSerial {
		t.Fatalf("a bad signature should look real: %v", r.header)
	}
	if err := verifyV3(r, b.c.platform); err == nil {
		t.Error("BadSignature reply verified")
	}
	// The close itself happened: the client must find out by other means.
	if o, _ := b.s.Order("bs1"); o.State != sandbox.StateClosed {
		t.Errorf("state %v", o.State)
	}
}

func TestV2ScriptedSteps(t *testing.T) {
	b := setup(t, sandbox.Options{})
	b.addAged("v2s", sandbox.StateUnpaid)
	b.s.Script("v2s",
		sandbox.SystemError(),
		sandbox.RateLimited(time.Second),
		sandbox.ServerError(503),
		sandbox.MalformedBody(),
		sandbox.BadSignature(),
	)
	const st = "HMAC-SHA256"
	r, m := b.c.v2(t, "v2s", st, nil)
	if m["result_code"] != "FAIL" || m["err_code"] != "SYSTEMERROR" || m["sign"] != v2Sign(m, b.creds.APIKey, st) {
		t.Errorf("SystemError: %s", r.body)
	}
	r, m = b.c.v2(t, "v2s", st, nil)
	if m["err_code"] != "FREQUENCY_LIMITED" || r.header.Get("Retry-After") != "1" {
		t.Errorf("RateLimited: %s %v", r.body, r.header)
	}
	r, m = b.c.v2(t, "v2s", st, nil)
	if r.status != 503 || m != nil {
		t.Errorf("ServerError: %d %s", r.status, r.body)
	}
	r, m = b.c.v2(t, "v2s", st, nil)
	if r.status != 200 || m != nil {
		t.Errorf("MalformedBody: %d %s", r.status, r.body)
	}
	if o, _ := b.s.Order("v2s"); o.State != sandbox.StateUnpaid {
		t.Errorf("state %v", o.State)
	}
	_, m = b.c.v2(t, "v2s", st, nil)
	if m["result_code"] != "SUCCESS" || m["sign"] == "" || m["sign"] == v2Sign(m, b.creds.APIKey, st) {
		t.Errorf("BadSignature: %v", m)
	}
	b.s.Script("v2s", sandbox.MissingSignature())
	if _, m = b.c.v2(t, "v2s", st, nil); m["err_code"] != "ORDERCLOSED" || m["sign"] != "" {
		t.Errorf("MissingSignature: %v", m)
	}
}

// TestDelayRespectsClientContext: a client that gives up frees the handler.
// If the handler ignored its context, ts.Close would block for an hour and
// the test would time out.
func TestDelayRespectsClientContext(t *testing.T) {
	b := setup(t, sandbox.Options{})
	b.addAged("slow", sandbox.StateUnpaid)
	b.s.Script("slow", sandbox.Slow(time.Hour))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := b.c.v3(t, ctx, "POST", "/v3/global/transactions/out-trade-no/slow/close", []byte(`{"mchid":"1900000109"}`), nil)
		done <- err
	}()
	// The order is closed before the delay starts, so its state says the
	// handler is now waiting.
	for {
		if o, _ := b.s.Order("slow"); o.State == sandbox.StateClosed {
			break
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("client error %v, want context.Canceled", err)
	}
	b.ts.Close()
	c := b.s.CallsFor("slow")
	if len(c) != 1 || c[0].Status != 0 || c[0].Outcome != "closed" {
		t.Errorf("calls %+v", c)
	}
}

func TestRandomFaults(t *testing.T) {
	tests := []struct {
		rates  sandbox.Rates
		status int
		signed bool
		state  sandbox.State
	}{
		{sandbox.Rates{SystemError: 1}, 500, true, sandbox.StateUnpaid},
		{sandbox.Rates{RateLimited: 1}, 429, true, sandbox.StateUnpaid},
		{sandbox.Rates{ServerError: 1}, 502, false, sandbox.StateUnpaid},
		{sandbox.Rates{Malformed: 1}, 200, true, sandbox.StateUnpaid},
		{sandbox.Rates{BadSignature: 1}, 204, false, sandbox.StateClosed},
		{sandbox.Rates{Slow: 1, SlowDelay: time.Millisecond}, 204, true, sandbox.StateClosed},
	}
	for _, tc := range tests {
		b := setup(t, sandbox.Options{Rates: tc.rates, Seed: 1})
		b.addAged("f1", sandbox.StateUnpaid)
		r := b.c.close(t, "f1")
		if r.status != tc.status || (verifyV3(r, b.c.platform) == nil) != tc.signed {
			t.Errorf("%+v: got %d %s", tc.rates, r.status, r.body)
		}
		if o, _ := b.s.Order("f1"); o.State != tc.state {
			t.Errorf("%+v: state %v", tc.rates, o.State)
		}
		if c := b.s.Calls()[0]; tc.state == sandbox.StateUnpaid && c.Outcome != "fault" {
			t.Errorf("%+v: outcome %q", tc.rates, c.Outcome)
		}
	}
	// Scripted steps take precedence over random faults.
	b := setup(t, sandbox.Options{Rates: sandbox.Rates{SystemError: 1}})
	b.addAged("f2", sandbox.StateUnpaid)
	b.s.Script("f2", sandbox.Step{})
	if r := b.c.close(t, "f2"); r.status != 204 {
		t.Errorf("scripted normal step under faults: %d", r.status)
	}
}

func TestRandomFaultsAreSeeded(t *testing.T) {
	run := func() string {
		b := setup(t, sandbox.Options{Rates: sandbox.Rates{SystemError: 0.5}, Seed: 7})
		var out []string
		for i := 0; i < 20; i++ {
			b.s.AddOrder(sandbox.Order{OutTradeNo: "s", State: sandbox.StateUnpaid})
			out = append(out, http.StatusText(b.c.close(t, "s").status))
		}
		return strings.Join(out, ",")
	}
	a, c := run(), run()
	if a != c {
		t.Errorf("same seed, different faults:\n%s\n%s", a, c)
	}
	if !strings.Contains(a, "No Content") || !strings.Contains(a, "Internal Server Error") {
		t.Errorf("rate 0.5 over 20 calls gave %s", a)
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	creds := testCreds(t)
	for name, o := range map[string]sandbox.Options{
		"negative rate":  {Rates: sandbox.Rates{SystemError: -0.1}},
		"rate above one": {Rates: sandbox.Rates{Slow: 1.5}},
		"NaN rate":       {Rates: sandbox.Rates{Malformed: math.NaN()}},
		"rates sum":      {Rates: sandbox.Rates{SystemError: 0.6, ServerError: 0.6}},
		"mchid mismatch": {MchID: "1234"},
		"appid mismatch": {AppID: "wx1"},
		"negative age":   {MinCloseAge: -time.Second},
		"policy":         {UnknownOrders: 9},
	} {
		o.Credentials = creds
		if _, err := sandbox.New(o); err == nil {
			t.Errorf("%s: New accepted %+v", name, o)
		}
	}
	broken := *creds
	broken.MerchantCertSerial = "00"
	if _, err := sandbox.New(sandbox.Options{Credentials: &broken}); err == nil {
		t.Error("New accepted a serial that does not match the certificate")
	}
}
