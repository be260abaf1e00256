package sandbox_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxclose/wxclose/wechat/sandbox"
)

func TestV3RequestAuthentication(t *testing.T) {
	b := setup(t, sandbox.Options{})
	otherKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ts := func(d time.Duration) string { return strconv.FormatInt(b.clock.Now().Add(d).Unix(), 10) }
	const body = `{"mchid":"1900000109"}`
	tests := []struct {
		name     string
		path     string // default: close of the case's order
		body     string // default: body
		spoil    func(*auth)
		wantCode int
		wantWx   string
	}{
		{name: "good", wantCode: 204},
		{name: "parameters in another order", spoil: func(a *auth) { a.reorder = true }, wantCode: 204},
		{name: "timestamp 4m59s old", spoil: func(a *auth) { a.timestamp = ts(-299 * time.Second) }, wantCode: 204},
		{name: "timestamp 4m59s ahead", spoil: func(a *auth) { a.timestamp = ts(299 * time.Second) }, wantCode: 204},
		{name: "bad signature", spoil: func(a *auth) { a.signed = "something else\n" }, wantCode: 401, wantWx: "SIGN_ERROR"},
		{name: "signed by another key", spoil: func(a *auth) { a.key = otherKey }, wantCode: 401, wantWx: "SIGN_ERROR"},
		{name: "signature not base64", spoil: func(a *auth) { a.signature = "!!!" }, wantCode: 401, wantWx: "SIGN_ERROR"},
		{name: "wrong serial", spoil: func(a *auth) { a.serial = "1DDE55AD98ED71D6EDD4A4A16996DE7B47773A8C" }, wantCode: 401, wantWx: "SIGN_ERROR"},
		{name: "lower-case serial", spoil: func(a *auth) { a.serial = strings.ToLower(a.serial) }, wantCode: 401, wantWx: "SIGN_ERROR"},
		{name: "stale timestamp", spoil: func(a *auth) { a.timestamp = ts(-6 * time.Minute) }, wantCode: 401, wantWx: "SIGN_ERROR"},
		{name: "future timestamp", spoil: func(a *auth) { a.timestamp = ts(6 * time.Minute) }, wantCode: 401, wantWx: "SIGN_ERROR"},
		{name: "millisecond timestamp", spoil: func(a *auth) { a.timestamp = strconv.FormatInt(b.clock.Now().UnixMilli(), 10) }, wantCode: 401, wantWx: "SIGN_ERROR"},
		{name: "wrong mchid in header", spoil: func(a *auth) { a.mchid = "1900000999" }, wantCode: 403, wantWx: "NO_AUTH"},
		{name: "no Authorization", spoil: func(a *auth) { a.scheme = "-" }, wantCode: 401, wantWx: "SIGN_ERROR"},
		{name: "wrong scheme", spoil: func(a *auth) { a.scheme = "WECHATPAY2-SHA256-RSA" }, wantCode: 401, wantWx: "SIGN_ERROR"},
		{name: "empty nonce", spoil: func(a *auth) { a.nonce = "" }, wantCode: 401, wantWx: "SIGN_ERROR"},
		{name: "signed another path", spoil: func(a *auth) {
			a.signed = "POST\n/v3/global/transactions/out-trade-no/other/close\n" + a.timestamp + "\n" + a.nonce + "\n" + body + "\n"
		}, wantCode: 401, wantWx: "SIGN_ERROR"},
		{name: "signed without trailing newline", spoil: func(a *auth) {
			a.signed = "POST\n/v3/global/transactions/out-trade-no/o-nonl/close\n" + a.timestamp + "\n" + a.nonce + "\n" + body
		}, wantCode: 401, wantWx: "SIGN_ERROR"},
		{name: "body mchid differs from header", body: `{"mchid":"1900000999"}`, wantCode: 400, wantWx: "PARAM_ERROR"},
		{name: "mch_id instead of mchid", body: `{"mch_id":"1900000109"}`, wantCode: 400, wantWx: "PARAM_ERROR"},
		{name: "empty body", body: " ", wantCode: 400, wantWx: "PARAM_ERROR"},
		{name: "not JSON", body: `mchid=1900000109`, wantCode: 400, wantWx: "PARAM_ERROR"},
		{name: "sub_mchid without sp_mchid", body: `{"mchid":"1900000109","sub_mchid":"1"}`, wantCode: 400, wantWx: "PARAM_ERROR"},
		{name: "sp_mchid without sub_mchid", body: `{"sp_mchid":"1900000109"}`, wantCode: 400, wantWx: "PARAM_ERROR"},
		{name: "institutional", body: `{"sp_mchid":"1900000109","sub_mchid":"1900000200"}`, wantCode: 204},
		{name: "order number too long", path: "/v3/global/transactions/out-trade-no/" + strings.Repeat("1", 33) + "/close", wantCode: 400, wantWx: "PARAM_ERROR"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			no := "auth-" + strconv.Itoa(i)
			if strings.Contains(tc.name, "trailing newline") {
				no = "o-nonl"
			}
			b.addAged(no, sandbox.StateUnpaid)
			path := tc.path
			if path == "" {
				path = "/v3/global/transactions/out-trade-no/" + no + "/close"
			}
			bd := tc.body
			if bd == "" {
				bd = body
			}
			r, err := b.c.v3(t, context.Background(), "POST", path, []byte(bd), tc.spoil)
			if err != nil {
				t.Fatal(err)
			}
			if r.status != tc.wantCode {
				t.Fatalf("status %d (%s), want %d", r.status, r.body, tc.wantCode)
			}
			if tc.wantWx != "" && wxCode(r) != tc.wantWx {
				t.Errorf("code %q, want %q (body %s)", wxCode(r), tc.wantWx, r.body)
			}
			// Errors are signed too.
			if err := verifyV3(r, b.c.platform); err != nil {
				t.Errorf("response signature: %v", err)
			}
			o, _ := b.s.Order(no)
			if want := tc.wantCode == 204; (o.State == sandbox.StateClosed) != want {
				t.Errorf("order state %v after status %d", o.State, r.status)
			}
		})
	}
	if n := b.s.EarlyCalls(); n != 0 {
		t.Errorf("EarlyCalls = %d, want 0", n)
	}
	for _, c := range b.s.Calls() {
		if c.Status == 401 && c.Outcome != "auth_failed" {
			t.Errorf("401 recorded with outcome %q", c.Outcome)
		}
	}
}

func TestV3Outcomes(t *testing.T) {
	tests := []struct {
		name    string
		state   sandbox.State
		age     time.Duration // negative: not registered
		unknown sandbox.UnknownOrderPolicy
		path    string // printf with the number
		byTxID  bool
		body    string
		status  int
		code    string
		outcome string
		after   sandbox.State
	}{
		{name: "unpaid closes", state: sandbox.StateUnpaid, age: time.Hour, status: 204, outcome: "closed", after: sandbox.StateClosed},
		{name: "unpaid at exactly 5 minutes", state: sandbox.StateUnpaid, age: 5 * time.Minute, status: 204, outcome: "closed", after: sandbox.StateClosed},
		{name: "early", state: sandbox.StateUnpaid, age: 4*time.Minute + 59*time.Second, status: 400, code: "INVALID_REQUEST", outcome: "early", after: sandbox.StateUnpaid},
		{name: "paid", state: sandbox.StatePaid, age: time.Hour, status: 400, code: "ORDERPAID", outcome: "paid", after: sandbox.StatePaid},
		{name: "closed", state: sandbox.StateClosed, age: time.Hour, status: 400, code: "ORDERCLOSED", outcome: "already_closed", after: sandbox.StateClosed},
		{name: "unknown", age: -1, status: 404, code: "ORDER_NOT_EXIST", outcome: "not_found"},
		{name: "unknown created", age: -1, unknown: sandbox.UnknownCreate, status: 204, outcome: "closed", after: sandbox.StateClosed},
		{name: "by transaction id", age: time.Hour, byTxID: true, path: "/v3/global/transactions/id/%s/close", status: 204, outcome: "closed", after: sandbox.StateClosed},
		{name: "hk path", age: time.Hour, path: "/hk/v3/transactions/out-trade-no/%s/close", status: 204, outcome: "closed", after: sandbox.StateClosed},
		{name: "hk by transaction id", age: time.Hour, byTxID: true, path: "/hk/v3/transactions/id/%s/close", status: 204, outcome: "closed", after: sandbox.StateClosed},
		{name: "institutional", age: time.Hour, body: `{"sp_mchid":"1900000109","sub_mchid":"1900000200"}`, status: 204, outcome: "closed", after: sandbox.StateClosed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := setup(t, sandbox.Options{UnknownOrders: tc.unknown})
			no, tx := "ord-1", "4200000001"
			if tc.age >= 0 {
				b.s.AddOrder(sandbox.Order{OutTradeNo: no, TransactionID: tx, CreatedAt: b.clock.Now().Add(-tc.age), State: tc.state})
			}
			id := no
			if tc.byTxID {
				id = tx
			}
			path := "/v3/global/transactions/out-trade-no/%s/close"
			if tc.path != "" {
				path = tc.path
			}
			body := tc.body
			if body == "" {
				body = `{"mchid":"1900000109"}`
			}
			r, err := b.c.v3(t, context.Background(), "POST", strings.Replace(path, "%s", id, 1), []byte(body), nil)
			if err != nil {
				t.Fatal(err)
			}
			if r.status != tc.status || (tc.code != "" && wxCode(r) != tc.code) {
				t.Fatalf("got %d %s, want %d %s", r.status, r.body, tc.status, tc.code)
			}
			if tc.status == 204 && len(r.body) != 0 {
				t.Errorf("204 with body %q", r.body)
			}
			if err := verifyV3(r, b.c.platform); err != nil {
				t.Errorf("response signature: %v", err)
			}
			if o, ok := b.s.Order(id); ok != (tc.age >= 0 || tc.unknown == sandbox.UnknownCreate) || o.State != tc.after {
				t.Errorf("order %+v (found %v), want state %v", o, ok, tc.after)
			}
			calls := b.s.CallsFor(id)
			if len(calls) != 1 {
				t.Fatalf("CallsFor(%q) = %d calls, want 1", id, len(calls))
			}
			c := calls[0]
			if c.API != "v3" || c.Outcome != tc.outcome || c.Status != tc.status || c.Code != tc.code || c.Early != (tc.outcome == "early") || c.MchID != "1900000109" || c.UserAgent == "" {
				t.Errorf("call %+v", c)
			}
			if want := map[bool]int{true: 1, false: 0}[tc.outcome == "early"]; b.s.EarlyCalls() != want {
				t.Errorf("EarlyCalls = %d, want %d", b.s.EarlyCalls(), want)
			}
		})
	}
}

func TestV3OrderOwnership(t *testing.T) {
	b := setup(t, sandbox.Options{})
	b.s.AddOrder(sandbox.Order{OutTradeNo: "foreign", MchID: "1900000999"})
	b.s.AddOrder(sandbox.Order{OutTradeNo: "sub", SubMchID: "1900000200"})
	if r := b.c.close(t, "foreign"); r.status != 403 || wxCode(r) != "NO_AUTH" {
		t.Errorf("foreign merchant's order: %d %s", r.status, r.body)
	}
	r, err := b.c.v3(t, context.Background(), "POST", "/v3/global/transactions/out-trade-no/sub/close", []byte(`{"sp_mchid":"1900000109","sub_mchid":"1900000300"}`), nil)
	if err != nil || r.status != 403 {
		t.Errorf("another sub-merchant's order: %d %s %v", r.status, r.body, err)
	}
	r, err = b.c.v3(t, context.Background(), "POST", "/v3/global/transactions/out-trade-no/sub/close", []byte(`{"sp_mchid":"1900000109","sub_mchid":"1900000200"}`), nil)
	if err != nil || r.status != 204 {
		t.Errorf("own sub-merchant's order: %d %s %v", r.status, r.body, err)
	}
}

func TestV3MethodNotAllowed(t *testing.T) {
	b := setup(t, sandbox.Options{})
	b.addAged("m1", sandbox.StateUnpaid)
	r, err := b.c.v3(t, context.Background(), "GET", "/v3/global/transactions/out-trade-no/m1/close", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.status != http.StatusMethodNotAllowed || wxCode(r) != "REQUIRE_POST_METHOD" {
		t.Errorf("got %d %s", r.status, r.body)
	}
	if o, _ := b.s.Order("m1"); o.State != sandbox.StateUnpaid {
		t.Errorf("state %v", o.State)
	}
}

// TestResponseSignatureLayout checks the exact verification message a client
// must build, including the empty line for a 204.
func TestResponseSignatureLayout(t *testing.T) {
	b := setup(t, sandbox.Options{})
	b.addAged("s1", sandbox.StateUnpaid)
	r := b.c.close(t, "s1")
	if r.status != 204 {
		t.Fatalf("status %d", r.status)
	}
	h := r.header
	if h.Get("Wechatpay-Serial") != b.creds.PlatformCertSerial || h.Get("Request-ID") == "" {
		t.Errorf("headers %v", h)
	}
	if h.Get("Wechatpay-Timestamp") != strconv.FormatInt(b.clock.Now().Unix(), 10) {
		t.Errorf("timestamp %s", h.Get("Wechatpay-Timestamp"))
	}
	msg := h.Get("Wechatpay-Timestamp") + "\n" + h.Get("Wechatpay-Nonce") + "\n\n"
	if err := verifyMsg(b.c.platform, msg, h.Get("Wechatpay-Signature")); err != nil {
		t.Errorf("204 does not verify over TS\\nNONCE\\n\\n: %v", err)
	}
	r = b.c.close(t, "s1") // now ORDERCLOSED, with a body
	msg = r.header.Get("Wechatpay-Timestamp") + "\n" + r.header.Get("Wechatpay-Nonce") + "\n" + string(r.body) + "\n"
	if err := verifyMsg(b.c.platform, msg, r.header.Get("Wechatpay-Signature")); err != nil {
		t.Errorf("error body does not verify over TS\\nNONCE\\nBODY\\n: %v", err)
	}
}

func TestEarlyClosesAreRefusedAndCounted(t *testing.T) {
	b := setup(t, sandbox.Options{})
	b.s.AddOrder(sandbox.Order{OutTradeNo: "e1", CreatedAt: b.clock.Now()})
	const n = 20
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%2 == 0 {
				if r := b.c.close(t, "e1"); r.status != 400 || wxCode(r) != "INVALID_REQUEST" {
					t.Errorf("v3 early close: %d %s", r.status, r.body)
				}
				return
			}
			_, m := b.c.v2(t, "e1", "HMAC-SHA256", nil)
			if m["result_code"] != "FAIL" || m["err_code"] != "INVALID_REQUEST" {
				t.Errorf("v2 early close: %v", m)
			}
		}()
	}
	wg.Wait()
	if got := b.s.EarlyCalls(); got != n {
		t.Errorf("EarlyCalls = %d, want %d", got, n)
	}
	if o, _ := b.s.Order("e1"); o.State != sandbox.StateUnpaid {
		t.Errorf("early close changed state to %v", o.State)
	}
	b.clock.Add(5 * time.Minute)
	if r := b.c.close(t, "e1"); r.status != 204 {
		t.Errorf("close at CreatedAt+5m: %d %s", r.status, r.body)
	}
	if got := b.s.EarlyCalls(); got != n {
		t.Errorf("EarlyCalls = %d after a timely close, want %d", got, n)
	}
	for _, c := range b.s.CallsFor("e1")[:n] {
		if !c.Early || c.Outcome != "early" {
			t.Errorf("call %+v", c)
		}
	}
}

func TestMinCloseAgeOption(t *testing.T) {
	b := setup(t, sandbox.Options{MinCloseAge: time.Minute})
	b.s.AddOrder(sandbox.Order{OutTradeNo: "a1", CreatedAt: b.clock.Now().Add(-time.Minute)})
	if r := b.c.close(t, "a1"); r.status != 204 {
		t.Errorf("got %d %s", r.status, r.body)
	}
}

func TestConcurrentClosesCloseOnce(t *testing.T) {
	b := setup(t, sandbox.Options{})
	b.addAged("c1", sandbox.StateUnpaid)
	const n = 16
	statuses := make(chan int, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses <- b.c.close(t, "c1").status
		}()
	}
	wg.Wait()
	close(statuses)
	count := map[int]int{}
	for s := range statuses {
		count[s]++
	}
	if count[204] != 1 || count[400] != n-1 {
		t.Errorf("statuses %v, want one 204 and %d 400", count, n-1)
	}
}

func TestUnknownPathIs404(t *testing.T) {
	b := setup(t, sandbox.Options{})
	r, err := b.c.v3(t, context.Background(), "POST", "/v3/pay/transactions/out-trade-no/x/close", []byte(`{"mchid":"1900000109"}`), nil)
	if err != nil || r.status != 404 {
		t.Errorf("got %d %v", r.status, err)
	}
	if n := len(b.s.Calls()); n != 0 {
		t.Errorf("%d calls recorded for an unknown path", n)
	}
}
