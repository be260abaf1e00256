package sandbox_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/wxclose/wxclose/wechat/sandbox"
)

var (
	otherOnce  sync.Once
	otherCreds *sandbox.Credentials
	otherErr   error
)

// secondCreds returns a second merchant's credentials, generated once per
// test binary.
func secondCreds(t testing.TB) *sandbox.Credentials {
	t.Helper()
	otherOnce.Do(func() { otherCreds, otherErr = sandbox.GenerateCredentials("1900000200", "wx2421b1c4370ec43b") })
	if otherErr != nil {
		t.Fatal(otherErr)
	}
	c := *otherCreds
	return &c
}

// twoMerchants is a sandbox serving the primary merchant (b.c) and a second
// one (client c2), each with its own keys.
func twoMerchants(t *testing.T, opts sandbox.Options) (*bundle, *client) {
	t.Helper()
	opts.Merchants = []*sandbox.Credentials{secondCreds(t)}
	b := setup(t, opts)
	c2creds, ok := b.s.MerchantCredentials("1900000200")
	if !ok {
		t.Fatal("second merchant not served")
	}
	return b, newClient(t, b.ts.URL, c2creds, b.clock.Now)
}

// TestEachMerchantIsVerifiedWithItsOwnKeys: a close for merchant B is
// accepted only when signed with B's own key (v3 certificate, v2 API key),
// and answered with B's platform key; signed with A's key it is SIGN_ERROR.
func TestEachMerchantIsVerifiedWithItsOwnKeys(t *testing.T) {
	b, c2 := twoMerchants(t, sandbox.Options{})
	if got := b.s.MchIDs(); len(got) != 2 || got[0] != b.creds.MchID || got[1] != "1900000200" {
		t.Fatalf("MchIDs() = %v", got)
	}
	b.s.AddOrder(sandbox.Order{MchID: "1900000200", OutTradeNo: "B-1", CreatedAt: b.clock.Now().Add(-time.Hour)})
	b.s.AddOrder(sandbox.Order{MchID: "1900000200", OutTradeNo: "B-2", CreatedAt: b.clock.Now().Add(-time.Hour)})

	// v3: merchant B named, A's certificate and key.
	forged := &client{base: c2.base, mchid: c2.mchid, serial: b.c.serial, key: b.c.key, now: c2.now, hc: c2.hc}
	if r := forged.close(t, "B-1"); r.status != http.StatusUnauthorized || wxCode(r) != "SIGN_ERROR" {
		t.Fatalf("close for B signed with A's key: %d %s, want 401 SIGN_ERROR", r.status, r.body)
	}
	// B's serial but A's key.
	forged.serial = c2.serial
	if r := forged.close(t, "B-1"); r.status != http.StatusUnauthorized || wxCode(r) != "SIGN_ERROR" {
		t.Fatalf("close for B with B's serial, A's key: %d %s, want 401 SIGN_ERROR", r.status, r.body)
	}
	r := c2.close(t, "B-1")
	if r.status != http.StatusNoContent {
		t.Fatalf("close for B signed by B: %d %s", r.status, r.body)
	}
	if err := verifyV3(r, c2.platform); err != nil {
		t.Fatalf("B's answer does not verify with B's platform certificate: %v", err)
	}
	if err := verifyV3(r, b.c.platform); err == nil {
		t.Fatal("B's answer verifies with A's platform certificate: merchants share a key")
	}
	// A may not close B's order even when A signs correctly.
	if r := b.c.close(t, "B-2"); r.status != http.StatusForbidden || wxCode(r) != "NO_AUTH" {
		t.Fatalf("A closing B's order: %d %s, want 403 NO_AUTH", r.status, r.body)
	}

	// v2: merchant B named, signed with A's API key.
	forgedV2 := &client{base: c2.base, mchid: c2.mchid, appid: c2.appid, apiKey: b.c.apiKey, hc: c2.hc}
	if _, m := forgedV2.v2(t, "B-2", "HMAC-SHA256", nil); m["return_code"] != "FAIL" || m["return_msg"] != "签名错误" {
		t.Fatalf("v2 close for B signed with A's key: %v, want FAIL 签名错误", m)
	}
	_, m := c2.v2(t, "B-2", "HMAC-SHA256", nil)
	if m["result_code"] != "SUCCESS" || m["sign"] != v2Sign(m, c2.apiKey, "HMAC-SHA256") {
		t.Fatalf("v2 close for B signed by B: %v, want SUCCESS signed with B's key", m)
	}
	if o, _ := b.s.Order("B-2"); o.State != sandbox.StateClosed {
		t.Fatalf("B-2 is %v", o.State)
	}
}

func TestMerchantsMustBeDistinct(t *testing.T) {
	if _, err := sandbox.New(sandbox.Options{Credentials: testCreds(t), Merchants: []*sandbox.Credentials{testCreds(t)}}); err == nil {
		t.Fatal("a merchant served twice was accepted")
	}
	if _, err := sandbox.New(sandbox.Options{RateLimit: sandbox.RateLimit{PerSecond: -1}}); err == nil {
		t.Fatal("a negative rate limit was accepted")
	}
}

// TestRateLimitPerMerchant: above its limit a merchant's closes are refused
// with 429 RATE_LIMITED (v2: FREQUENCY_LIMITED) without touching the order,
// while another merchant is unaffected; the bucket refills with time.
func TestRateLimitPerMerchant(t *testing.T) {
	b, c2 := twoMerchants(t, sandbox.Options{RateLimit: sandbox.RateLimit{PerSecond: 2, Burst: 2}})
	for _, no := range []string{"A-1", "A-2", "A-3", "A-4"} {
		b.addAged(no, sandbox.StateUnpaid)
	}
	b.s.AddOrder(sandbox.Order{MchID: "1900000200", OutTradeNo: "B-1", CreatedAt: b.clock.Now().Add(-time.Hour)})
	for _, no := range []string{"A-1", "A-2"} {
		if r := b.c.close(t, no); r.status != http.StatusNoContent {
			t.Fatalf("close %s within the burst: %d %s", no, r.status, r.body)
		}
	}
	r := b.c.close(t, "A-3")
	if r.status != http.StatusTooManyRequests || wxCode(r) != "RATE_LIMITED" {
		t.Fatalf("third close at the same instant: %d %s, want 429 RATE_LIMITED", r.status, r.body)
	}
	if err := verifyV3(r, b.c.platform); err != nil {
		t.Fatalf("RATE_LIMITED answer not signed: %v", err)
	}
	if o, _ := b.s.Order("A-3"); o.State != sandbox.StateUnpaid {
		t.Fatalf("a refused close changed the order to %v", o.State)
	}
	if _, m := b.c.v2(t, "A-3", "HMAC-SHA256", nil); m["err_code"] != "FREQUENCY_LIMITED" || m["sign"] != v2Sign(m, b.c.apiKey, "HMAC-SHA256") {
		t.Fatalf("v2 close above the limit: %v, want a signed FREQUENCY_LIMITED", m)
	}
	if r := c2.close(t, "B-1"); r.status != http.StatusNoContent {
		t.Fatalf("the other merchant was limited too: %d %s", r.status, r.body)
	}
	b.clock.Add(500 * time.Millisecond) // one more call's worth
	if r := b.c.close(t, "A-3"); r.status != http.StatusNoContent {
		t.Fatalf("close after the bucket refilled: %d %s", r.status, r.body)
	}
	limited := 0
	for _, c := range b.s.Calls() {
		if c.Outcome == "rate_limited" {
			limited++
		}
	}
	if limited != 2 {
		t.Fatalf("recorded %d rate_limited calls, want 2", limited)
	}
}

func TestAdminRateLimit(t *testing.T) {
	b, _ := twoMerchants(t, sandbox.Options{})
	post := func(body string) (int, []byte) {
		resp, err := http.Post(b.ts.URL+"/sandbox/rate-limit", "application/json", bytes.NewBufferString(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var buf bytes.Buffer
		if _, err := buf.ReadFrom(resp.Body); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, buf.Bytes()
	}
	if st, body := post(`{"per_second": 100}`); st != http.StatusOK {
		t.Fatalf("set every merchant's limit: %d %s", st, body)
	}
	if st, body := post(`{"mchid": "1900000200", "per_second": 5, "burst": 3}`); st != http.StatusOK {
		t.Fatalf("set one merchant's limit: %d %s", st, body)
	} else {
		var got []struct {
			MchID     string  `json:"mchid"`
			PerSecond float64 `json:"per_second"`
			Burst     int     `json:"burst"`
		}
		if err := json.Unmarshal(body, &got); err != nil || len(got) != 2 ||
			got[0].PerSecond != 100 || got[0].Burst != 100 || got[1].MchID != "1900000200" || got[1].PerSecond != 5 || got[1].Burst != 3 {
			t.Fatalf("limits = %s (%v)", body, err)
		}
	}
	if st, _ := post(`{"mchid": "1", "per_second": 5}`); st != http.StatusBadRequest {
		t.Fatalf("unknown merchant: %d, want 400", st)
	}
	if st, _ := post(`{"per_second": -5}`); st != http.StatusBadRequest {
		t.Fatalf("negative rate: %d, want 400", st)
	}
	if got := b.s.RateLimitOf(b.creds.MchID); got.PerSecond != 100 {
		t.Fatalf("RateLimitOf = %+v", got)
	}
}
