package sandbox_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/wxclose/wxclose/wechat/sandbox"
)

type queryAnswer struct {
	MchID         string `json:"mchid"`
	SpMchID       string `json:"sp_mchid"`
	SubMchID      string `json:"sub_mchid"`
	OutTradeNo    string `json:"out_trade_no"`
	TransactionID string `json:"transaction_id"`
	TradeState    string `json:"trade_state"`
}

func (c *client) query(t *testing.T, path string) response {
	t.Helper()
	r, err := c.v3(t, context.Background(), "GET", path, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestV3QueryOrder(t *testing.T) {
	b := setup(t, sandbox.Options{UnsignedFinalAnswers: true}) // queries stay signed
	b.addAged("q-unpaid", sandbox.StateUnpaid)
	b.addAged("q-paid", sandbox.StatePaid)
	b.addAged("q-closed", sandbox.StateClosed)
	b.s.AddOrder(sandbox.Order{OutTradeNo: "q-sub", TransactionID: "42q-sub", SubMchID: "1900000200", CreatedAt: b.clock.Now().Add(-time.Hour)})
	m := b.creds.MchID
	for _, prefix := range []string{"/v3/global/transactions", "/hk/v3/transactions"} {
		for _, tc := range []struct {
			path, state string
			sub         bool
		}{
			{"/out-trade-no/q-unpaid?mchid=" + m, "NOTPAY", false},
			{"/out-trade-no/q-paid?mchid=" + m, "SUCCESS", false},
			{"/id/42q-closed?mchid=" + m, "CLOSED", false},
			{"/out-trade-no/q-sub?sub_mchid=1900000200&sp_mchid=" + m, "NOTPAY", true},
			{"/id/42q-sub?sp_mchid=" + m + "&sub_mchid=1900000200", "NOTPAY", true},
		} {
			r := b.c.query(t, prefix+tc.path)
			var a queryAnswer
			if r.status != 200 || json.Unmarshal(r.body, &a) != nil || a.TradeState != tc.state {
				t.Errorf("%s: %d %s, want trade_state %s", tc.path, r.status, r.body, tc.state)
				continue
			}
			if err := verifyV3(r, b.c.platform); err != nil {
				t.Errorf("%s: answer not signed: %v", tc.path, err)
			}
			if tc.sub && (a.SpMchID != m || a.SubMchID != "1900000200" || a.MchID != "") ||
				!tc.sub && (a.MchID != m || a.SubMchID != "") || a.OutTradeNo == "" || a.TransactionID == "" {
				t.Errorf("%s: answer %s names the wrong merchant or order", tc.path, r.body)
			}
		}
		r := b.c.query(t, prefix+"/out-trade-no/q-unknown?mchid="+m)
		if r.status != 404 || wxCode(r) != "ORDER_NOT_EXIST" || verifyV3(r, b.c.platform) != nil {
			t.Errorf("unknown order: %d %s", r.status, r.body)
		}
	}
	if o, _ := b.s.Order("q-unpaid"); o.State != sandbox.StateUnpaid {
		t.Errorf("a query changed the order: %v", o.State)
	}
	for _, bad := range []struct {
		path   string
		status int
		code   string
	}{
		{"/v3/global/transactions/out-trade-no/q-unpaid", 400, "PARAM_ERROR"},
		{"/v3/global/transactions/out-trade-no/q-unpaid?mchid=1900000999", 400, "PARAM_ERROR"},
		{"/v3/global/transactions/out-trade-no/q-unpaid?mchid=" + m + "&mchid=" + m, 400, "PARAM_ERROR"},
		{"/v3/global/transactions/out-trade-no/q-unpaid?mchid=" + m + "&sub_mchid=1", 400, "PARAM_ERROR"},
		{"/v3/global/transactions/out-trade-no/q-unpaid?sp_mchid=" + m, 400, "PARAM_ERROR"},
		{"/v3/global/transactions/out-trade-no/q-unpaid?mchid=" + m + "&x=1", 400, "PARAM_ERROR"},
		{"/v3/global/transactions/out-trade-no/q-sub?mchid=" + m, 403, "NO_AUTH"},
	} {
		if r := b.c.query(t, bad.path); r.status != bad.status || wxCode(r) != bad.code {
			t.Errorf("%s: %d %s, want %d %s", bad.path, r.status, r.body, bad.status, bad.code)
		}
	}
	r, _ := b.c.v3(t, context.Background(), "GET", "/v3/global/transactions/out-trade-no/q-unpaid?mchid="+m, nil, func(a *auth) { a.signed = "x\n" })
	if r.status != 401 {
		t.Errorf("badly signed query: %d", r.status)
	}
	r, _ = b.c.v3(t, context.Background(), "POST", "/v3/global/transactions/out-trade-no/q-unpaid?mchid="+m, nil, nil)
	if r.status != 405 {
		t.Errorf("POST query: %d", r.status)
	}
	for _, c := range b.s.CallsFor("q-paid") {
		if c.API != "v3_query" || c.TradeState != "SUCCESS" || c.Outcome != "queried" {
			t.Errorf("call %+v", c)
		}
	}
}

func TestScriptQuery(t *testing.T) {
	b := setup(t, sandbox.Options{})
	b.addAged("sq", sandbox.StateClosed)
	b.s.Script("sq", sandbox.SystemError()) // for the close only
	b.s.ScriptQuery("sq", sandbox.BadSignature(), sandbox.MissingSignature(), sandbox.Fail(500, "SYSTEM_ERROR", "busy"))
	path := "/v3/global/transactions/out-trade-no/sq?mchid=" + b.creds.MchID
	r := b.c.query(t, path)
	if r.status != 200 || r.header.Get("Wechatpay-Signature") == "" || verifyV3(r, b.c.platform) == nil {
		t.Errorf("forged answer: %d, verifies %v", r.status, verifyV3(r, b.c.platform) == nil)
	}
	if r = b.c.query(t, path); r.status != 200 || r.header.Get("Wechatpay-Signature") != "" {
		t.Errorf("unsigned answer: %d %v", r.status, r.header)
	}
	if r = b.c.query(t, path); r.status != 500 || wxCode(r) != "SYSTEM_ERROR" {
		t.Errorf("scripted error: %d %s", r.status, r.body)
	}
	if r = b.c.query(t, path); r.status != 200 || verifyV3(r, b.c.platform) != nil {
		t.Errorf("after the script: %d", r.status)
	}
	if r = b.c.close(t, "sq"); r.status != 500 {
		t.Errorf("the close step was consumed by a query: %d", r.status)
	}
}

// v2At posts signed v2 fields to path.
func (c *client) v2At(t *testing.T, path string, f map[string]string, signType string) (response, map[string]string) {
	t.Helper()
	f["appid"], f["mch_id"], f["nonce_str"] = c.appid, c.mchid, randNonce()
	if signType != "" {
		f["sign_type"] = signType
	}
	f["sign"] = v2Sign(f, c.apiKey, signType)
	req, err := http.NewRequest("POST", c.base+path, bytes.NewReader(toXML(f)))
	if err != nil {
		t.Fatal(err)
	}
	r, err := c.do(req)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := parseXML(r.body)
	return r, m
}

func TestV2QueryOrder(t *testing.T) {
	b := setup(t, sandbox.Options{UnsignedFinalAnswers: true})
	b.addAged("q2-paid", sandbox.StatePaid)
	b.addAged("q2-closed", sandbox.StateClosed)
	for _, tc := range []struct {
		f     map[string]string
		state string
		code  string
	}{
		{map[string]string{"out_trade_no": "q2-paid"}, "SUCCESS", ""},
		{map[string]string{"transaction_id": "42q2-closed"}, "CLOSED", ""},
		{map[string]string{"out_trade_no": "q2-unknown"}, "", "ORDERNOTEXIST"},
	} {
		for _, st := range []string{"MD5", "HMAC-SHA256"} {
			_, m := b.c.v2At(t, "/pay/orderquery", tc.f, st)
			if m["return_code"] != "SUCCESS" || m["trade_state"] != tc.state || m["err_code"] != tc.code {
				t.Errorf("%v %s: %v", tc.f, st, m)
			}
			if m["sign"] == "" || m["sign"] != v2Sign(m, b.creds.APIKey, st) {
				t.Errorf("%v %s: answer not signed", tc.f, st)
			}
		}
	}
	_, m := b.c.v2At(t, "/pay/orderquery", map[string]string{}, "MD5")
	if m["return_code"] != "FAIL" {
		t.Errorf("query without an order number: %v", m)
	}
}

// Under UnsignedFinalAnswers the answers that end a close lose their
// signature; others keep it; and it can be switched at run time.
func TestUnsignedFinalAnswers(t *testing.T) {
	b := setup(t, sandbox.Options{UnsignedFinalAnswers: true})
	for _, no := range []string{"u1", "u2", "u3"} {
		b.addAged(no, sandbox.StateUnpaid)
	}
	b.addAged("u-paid", sandbox.StatePaid)
	b.s.Script("u3", sandbox.SystemError())
	for _, tc := range []struct {
		no       string
		status   int
		unsigned bool
	}{
		{"u1", 204, true}, {"u1", 400, true}, {"u-paid", 400, true}, {"u-none", 404, true}, {"u3", 500, false},
	} {
		r := b.c.close(t, tc.no)
		if r.status != tc.status || (r.header.Get("Wechatpay-Signature") == "") != tc.unsigned {
			t.Errorf("%s: %d signed=%v, want %d unsigned=%v", tc.no, r.status, r.header.Get("Wechatpay-Signature") != "", tc.status, tc.unsigned)
		}
	}
	_, m := b.c.v2(t, "u2", "MD5", nil)
	if m["result_code"] != "SUCCESS" || m["sign"] != "" {
		t.Errorf("v2 close: %v, want SUCCESS without sign", m)
	}
	_, m = b.c.v2(t, "u2", "MD5", nil)
	if m["err_code"] != "ORDERCLOSED" || m["sign"] != "" {
		t.Errorf("v2 close again: %v, want ORDERCLOSED without sign", m)
	}

	st, body := adminDo(t, b, "POST", "/sandbox/settings", `{"unsigned_final_answers":false}`)
	if st != 200 || string(bytes.TrimSpace(body)) != `{"unsigned_final_answers":false}` || b.s.UnsignedFinalAnswers() {
		t.Fatalf("settings: %d %s", st, body)
	}
	if r := b.c.close(t, "u1"); r.status != 400 || verifyV3(r, b.c.platform) != nil {
		t.Errorf("after switching off: %d, not signed", r.status)
	}
	if st, body = adminDo(t, b, "GET", "/sandbox/settings", ""); st != 200 || !bytes.Contains(body, []byte(`"unsigned_final_answers":false`)) {
		t.Errorf("GET settings: %d %s", st, body)
	}
	if st, _ = adminDo(t, b, "POST", "/sandbox/settings", `{"unsigned":true}`); st != 400 {
		t.Errorf("unknown setting accepted: %d", st)
	}
	if st, body = adminDo(t, b, "POST", "/sandbox/orders/u1/query-script", `[{"signature":"bad"}]`); st != 200 {
		t.Fatalf("query-script: %d %s", st, body)
	}
	if r := b.c.query(t, "/v3/global/transactions/out-trade-no/u1?mchid="+b.creds.MchID); verifyV3(r, b.c.platform) == nil {
		t.Error("scripted forged query answer verifies")
	}
}

// With CacheResponseSignatures an identical reply within a second reuses
// its signature (and still verifies); requests are still checked.
func TestCacheResponseSignatures(t *testing.T) {
	b := setup(t, sandbox.Options{CacheResponseSignatures: true})
	for _, no := range []string{"c1", "c2", "c3"} {
		b.addAged(no, sandbox.StateUnpaid)
	}
	r1, r2 := b.c.close(t, "c1"), b.c.close(t, "c2")
	for _, r := range []response{r1, r2} {
		if r.status != 204 || verifyV3(r, b.c.platform) != nil {
			t.Fatalf("close: %d, signature does not verify", r.status)
		}
	}
	if r1.header.Get("Wechatpay-Signature") != r2.header.Get("Wechatpay-Signature") || r1.header.Get("Wechatpay-Nonce") != r2.header.Get("Wechatpay-Nonce") {
		t.Error("identical replies within a second were signed twice")
	}
	if r := b.c.close(t, "c1"); r.status != 400 || verifyV3(r, b.c.platform) != nil || r.header.Get("Wechatpay-Signature") == r1.header.Get("Wechatpay-Signature") {
		t.Errorf("a different reply reused a signature: %d", r.status)
	}
	b.clock.Add(time.Second)
	if r := b.c.close(t, "c3"); verifyV3(r, b.c.platform) != nil || r.header.Get("Wechatpay-Signature") == r1.header.Get("Wechatpay-Signature") {
		t.Error("a signature was reused after a second")
	}
	r, _ := b.c.v3(t, context.Background(), "POST", "/v3/global/transactions/out-trade-no/c2/close", []byte(`{"mchid":"`+b.creds.MchID+`"}`), func(a *auth) { a.signed = "x\n" })
	if r.status != 401 {
		t.Errorf("badly signed request with the cache on: %d", r.status)
	}
	b2 := setup(t, sandbox.Options{})
	b2.addAged("n1", sandbox.StateUnpaid)
	b2.addAged("n2", sandbox.StateUnpaid)
	if b2.c.close(t, "n1").header.Get("Wechatpay-Nonce") == b2.c.close(t, "n2").header.Get("Wechatpay-Nonce") {
		t.Error("signatures reused without the option")
	}
}

// impostorPEM returns a self-signed certificate and key no client trusts.
func impostorPEM(t *testing.T) (keyPEM, certPEM []byte, key *rsa.PrivateKey) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(0x7e57), Subject: pkix.Name{CommonName: "impostor"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	p8, _ := x509.MarshalPKCS8PrivateKey(k)
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), k
}

// The certificate list is signed with the platform certificate the request
// names in Wechatpay-Serial, so a client can follow a rotation with what it
// trusts; an impersonator signs everything with its own key.
func TestCertificateListSigner(t *testing.T) {
	b := setup(t, sandbox.Options{})
	old := b.creds.PlatformCertSerial
	newSerial, err := b.s.RotatePlatformCert()
	if err != nil {
		t.Fatal(err)
	}
	list := func(announce string) response {
		r, err := b.c.v3Header(t, "/v3/global/certificates", "Wechatpay-Serial", announce)
		if err != nil || r.status != 200 {
			t.Fatalf("download: %v %d", err, r.status)
		}
		return r
	}
	if got := list(old).header.Get("Wechatpay-Serial"); got != old {
		t.Errorf("announcing the old serial: list signed by %s", got)
	}
	if r := list(old); verifyV3(r, b.c.platform) != nil {
		t.Error("list does not verify with the old certificate")
	}
	if got := list("").header.Get("Wechatpay-Serial"); got != newSerial {
		t.Errorf("announcing nothing: list signed by %s, want the current %s", got, newSerial)
	}
	if got := list("0123456789").header.Get("Wechatpay-Serial"); got != newSerial {
		t.Errorf("announcing an unknown serial: list signed by %s", got)
	}

	keyPEM, certPEM, key := impostorPEM(t)
	serial, err := b.s.ImpersonatePlatform(keyPEM, certPEM)
	if err != nil || serial != "7E57" {
		t.Fatalf("ImpersonatePlatform: %q %v", serial, err)
	}
	r := list(old)
	if r.header.Get("Wechatpay-Serial") != serial || verifyV3(r, &key.PublicKey) != nil {
		t.Errorf("impersonated list signed by %s", r.header.Get("Wechatpay-Serial"))
	}
	certs, _ := downloadCerts(t, b, "/v3/global/certificates")
	if len(certs) != 3 || !bytes.Equal(certs[serial], certPEM) {
		t.Errorf("impersonated list has %d certificates", len(certs))
	}
	b.addAged("imp", sandbox.StateUnpaid)
	if r := b.c.close(t, "imp"); verifyV3(r, &key.PublicKey) != nil {
		t.Error("close not signed by the impostor")
	}
	if _, err := b.s.RotatePlatformCert(); err != nil {
		t.Fatal(err)
	}
	if certs, _ := downloadCerts(t, b, "/v3/global/certificates"); len(certs) != 3 || certs[serial] != nil {
		t.Errorf("after a genuine rotation the impostor is still listed (%d certificates)", len(certs))
	}
	if _, err := b.s.ImpersonatePlatform(keyPEM, b.creds.PlatformCertPEM); err == nil {
		t.Error("ImpersonatePlatform accepted a certificate of another key")
	}
}

// v3Header sends a signed GET with one extra header (none if value is "").
func (c *client) v3Header(t *testing.T, path, name, value string) (response, error) {
	t.Helper()
	ts, nonce := strconv.FormatInt(c.now().Unix(), 10), randNonce()
	a := auth{scheme: "WECHATPAY2-SHA256-RSA2048", mchid: c.mchid, serial: c.serial, nonce: nonce, timestamp: ts,
		signature: rsaSign(t, c.key, "GET\n"+path+"\n"+ts+"\n"+nonce+"\n\n")}
	req, err := http.NewRequest("GET", c.base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", a.header())
	if value != "" {
		req.Header.Set(name, value)
	}
	return c.do(req)
}
