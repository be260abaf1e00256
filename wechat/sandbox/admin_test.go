package sandbox_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/wxclose/wxclose/wechat/sandbox"
)

func adminDo(t *testing.T, b *bundle, method, path, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, b.ts.URL+path, bytes.NewBufferString(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

func TestAdminEndpoints(t *testing.T) {
	b := setup(t, sandbox.Options{})
	created := b.clock.Now().Add(-10 * time.Minute).Format(time.RFC3339)
	st, body := adminDo(t, b, "POST", "/sandbox/orders", `{"out_trade_no":"adm1","transaction_id":"4200001","created_at":"`+created+`","state":"unpaid"}`)
	if st != 201 {
		t.Fatalf("add order: %d %s", st, body)
	}
	st, body = adminDo(t, b, "GET", "/sandbox/orders/4200001", "")
	var o map[string]string
	if err := json.Unmarshal(body, &o); st != 200 || err != nil || o["out_trade_no"] != "adm1" || o["state"] != "unpaid" || o["mchid"] != "1900000109" || o["created_at"] != created {
		t.Fatalf("get order: %d %s", st, body)
	}
	st, body = adminDo(t, b, "POST", "/sandbox/orders/adm1/script",
		`[{"status":500,"code":"SYSTEM_ERROR","message":"busy","retry_after":"3s"},{"signature":"missing","delay":"1ms"}]`)
	if st != 200 {
		t.Fatalf("script: %d %s", st, body)
	}
	r := b.c.close(t, "adm1")
	if r.status != 500 || wxCode(r) != "SYSTEM_ERROR" || r.header.Get("Retry-After") != "3" {
		t.Errorf("first scripted call: %d %s", r.status, r.body)
	}
	r = b.c.close(t, "adm1")
	if r.status != 204 || r.header.Get("Wechatpay-Signature") != "" {
		t.Errorf("second scripted call: %d %v", r.status, r.header)
	}
	_, body = adminDo(t, b, "GET", "/sandbox/orders/adm1", "")
	if err := json.Unmarshal(body, &o); err != nil || o["state"] != "closed" {
		t.Errorf("state after close: %s", body)
	}
	st, body = adminDo(t, b, "GET", "/sandbox/calls", "")
	var calls []sandbox.Call
	if err := json.Unmarshal(body, &calls); st != 200 || err != nil || len(calls) != 2 || calls[0].Outcome != "scripted" || calls[1].Outcome != "closed" || calls[0].OutTradeNo != "adm1" {
		t.Errorf("calls: %d %s", st, body)
	}
	st, body = adminDo(t, b, "POST", "/sandbox/platform-cert/rotate", "")
	if st != 200 || b.s.Credentials().PlatformCertSerial == b.creds.PlatformCertSerial {
		t.Errorf("rotate: %d %s", st, body)
	}
	// Default created_at is now; "paid" is honoured.
	if st, body = adminDo(t, b, "POST", "/sandbox/orders", `{"out_trade_no":"adm2","state":"paid"}`); st != 201 {
		t.Fatalf("%d %s", st, body)
	}
	if o, _ := b.s.Order("adm2"); o.State != sandbox.StatePaid || !o.CreatedAt.Equal(b.clock.Now()) {
		t.Errorf("adm2 %+v", o)
	}
}

func TestAdminRejectsBadInput(t *testing.T) {
	b := setup(t, sandbox.Options{})
	for _, tc := range []struct{ method, path, body string }{
		{"POST", "/sandbox/orders", `{}`},
		{"POST", "/sandbox/orders", `{"out_trade_no":"x","state":"refunded"}`},
		{"POST", "/sandbox/orders", `{"out_trade_no":"x","created_at":"yesterday"}`},
		{"POST", "/sandbox/orders", `{"out_trade_no":"x","colour":"red"}`},
		{"POST", "/sandbox/orders", `not json`},
		{"POST", "/sandbox/orders/x/script", `{"status":500}`},
		{"POST", "/sandbox/orders/x/script", `[{"delay":"soon"}]`},
		{"POST", "/sandbox/orders/x/script", `[{"signature":"forged"}]`},
		{"POST", "/sandbox/orders/x/script", `[{"status":42}]`},
	} {
		if st, body := adminDo(t, b, tc.method, tc.path, tc.body); st != 400 {
			t.Errorf("%s %s %s: %d %s", tc.method, tc.path, tc.body, st, body)
		}
	}
	if st, _ := adminDo(t, b, "GET", "/sandbox/orders/nope", ""); st != 404 {
		t.Errorf("unknown order: %d", st)
	}
}
