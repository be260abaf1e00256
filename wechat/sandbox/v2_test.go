package sandbox_test

import (
	"strings"
	"testing"
	"time"

	"github.com/wxclose/wxclose/wechat/sandbox"
)

// TestV2SignerOfficialVector checks this file's independent test signer
// against the official vector (protocol doc §D); the sandbox's own signer
// is checked against it in crypto_test.go.
func TestV2SignerOfficialVector(t *testing.T) {
	f := map[string]string{"appid": "wxd930ea5d5a258f4f", "mch_id": "10000100", "device_info": "1000", "body": "test", "nonce_str": "ibuaiVcKdpRxkhJA"}
	const key = "192006250b4c09247ec02edce69f6a2d"
	if got := v2Sign(f, key, "MD5"); got != "9A0A8659F005D6984697E2CA0A9CF3B7" {
		t.Errorf("MD5 %s", got)
	}
	if got := v2Sign(f, key, "HMAC-SHA256"); got != "6A9AE1657590FD6257D693A078E1C3E4BB6BA4DC30B23E0EE2496E54170DACD6" {
		t.Errorf("HMAC-SHA256 %s", got)
	}
}

func TestV2Outcomes(t *testing.T) {
	states := []struct {
		name    string
		state   sandbox.State
		age     time.Duration // negative: unknown order
		result  string
		errCode string
		outcome string
		after   sandbox.State
	}{
		{"unpaid", sandbox.StateUnpaid, time.Hour, "SUCCESS", "", "closed", sandbox.StateClosed},
		{"paid", sandbox.StatePaid, time.Hour, "FAIL", "ORDERPAID", "paid", sandbox.StatePaid},
		{"closed", sandbox.StateClosed, time.Hour, "FAIL", "ORDERCLOSED", "already_closed", sandbox.StateClosed},
		{"unknown", 0, -1, "FAIL", "ORDERNOTEXIST", "not_found", 0},
		{"early", sandbox.StateUnpaid, time.Minute, "FAIL", "INVALID_REQUEST", "early", sandbox.StateUnpaid},
	}
	for _, signType := range []string{"MD5", "HMAC-SHA256", ""} {
		for _, tc := range states {
			t.Run(signType+"/"+tc.name, func(t *testing.T) {
				b := setup(t, sandbox.Options{})
				if tc.age >= 0 {
					b.s.AddOrder(sandbox.Order{OutTradeNo: "v2-1", CreatedAt: b.clock.Now().Add(-tc.age), State: tc.state})
				}
				r, m := b.c.v2(t, "v2-1", signType, nil)
				if r.status != 200 || m["return_code"] != "SUCCESS" || m["result_code"] != tc.result || m["err_code"] != tc.errCode {
					t.Fatalf("got %d %s", r.status, r.body)
				}
				if m["appid"] != b.creds.AppID || m["mch_id"] != b.creds.MchID || m["nonce_str"] == "" {
					t.Errorf("echoed fields %v", m)
				}
				st := signType
				if st == "" {
					st = "MD5"
				}
				if m["sign"] == "" || m["sign"] != v2Sign(m, b.creds.APIKey, st) {
					t.Errorf("response sign %q does not verify with %s", m["sign"], st)
				}
				if o, _ := b.s.Order("v2-1"); o.State != tc.after {
					t.Errorf("state %v, want %v", o.State, tc.after)
				}
				c := b.s.CallsFor("v2-1")
				if len(c) != 1 || c[0].API != "v2" || c[0].Outcome != tc.outcome || c[0].Code != tc.errCode || c[0].Status != 200 {
					t.Errorf("calls %+v", c)
				}
			})
		}
	}
}

func TestV2Institutional(t *testing.T) {
	b := setup(t, sandbox.Options{})
	b.s.AddOrder(sandbox.Order{OutTradeNo: "i1", SubMchID: "1900000200"})
	_, m := b.c.v2(t, "i1", "HMAC-SHA256", func(f map[string]string) {
		f["sub_mch_id"] = "1900000200"
		f["sub_appid"] = "wx1111111111111111"
		f["sign"] = v2Sign(f, b.creds.APIKey, "HMAC-SHA256")
	})
	if m["result_code"] != "SUCCESS" || m["sub_mch_id"] != "1900000200" || m["sub_appid"] != "wx1111111111111111" {
		t.Errorf("got %v", m)
	}
	if m["sign"] != v2Sign(m, b.creds.APIKey, "HMAC-SHA256") {
		t.Error("response sign does not verify")
	}
}

func TestV2Rejections(t *testing.T) {
	tests := []struct {
		name    string
		body    string                  // raw body, if set
		edit    func(map[string]string) // applied after signing
		msg     string                  // substring of return_msg
		outcome string
	}{
		{name: "bad sign", edit: func(f map[string]string) { f["sign"] = strings.Repeat("A", 32) }, msg: "签名错误", outcome: "auth_failed"},
		{name: "field changed after signing", edit: func(f map[string]string) { f["out_trade_no"] = "other" }, msg: "签名错误", outcome: "auth_failed"},
		{name: "lower-case sign", edit: func(f map[string]string) { f["sign"] = strings.ToLower(f["sign"]) }, msg: "签名错误", outcome: "auth_failed"},
		{name: "sign_type mismatch", edit: func(f map[string]string) { f["sign_type"] = "HMAC-SHA256" }, msg: "签名错误", outcome: "auth_failed"},
		{name: "unknown sign_type", edit: func(f map[string]string) { f["sign_type"] = "SHA1" }, msg: "sign_type", outcome: "bad_request"},
		{name: "missing sign", edit: func(f map[string]string) { delete(f, "sign") }, msg: "sign", outcome: "bad_request"},
		{name: "missing nonce_str", edit: func(f map[string]string) { delete(f, "nonce_str") }, msg: "nonce_str", outcome: "bad_request"},
		{name: "foreign mch_id", edit: func(f map[string]string) { f["mch_id"] = "1900000999" }, msg: "mch_id", outcome: "auth_failed"},
		{name: "malformed XML", body: "<xml><appid>wx", msg: "XML_FORMAT_ERROR", outcome: "bad_request"},
		{name: "not XML", body: "appid=wx8888888888888888", msg: "XML_FORMAT_ERROR", outcome: "bad_request"},
		{name: "wrong root", body: "<root><appid>x</appid></root>", msg: "XML_FORMAT_ERROR", outcome: "bad_request"},
		{name: "nested element", body: "<xml><appid><a>x</a></appid></xml>", msg: "XML_FORMAT_ERROR", outcome: "bad_request"},
		{name: "doctype", body: `<!DOCTYPE xml [<!ENTITY x "y">]><xml><appid>&x;</appid></xml>`, msg: "XML_FORMAT_ERROR", outcome: "bad_request"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := setup(t, sandbox.Options{})
			b.addAged("r1", sandbox.StateUnpaid)
			var r response
			var m map[string]string
			if tc.body != "" {
				r, m = b.c.v2Raw(t, []byte(tc.body))
			} else {
				r, m = b.c.v2(t, "r1", "MD5", tc.edit)
			}
			if r.status != 200 || m["return_code"] != "FAIL" || !strings.Contains(m["return_msg"], tc.msg) {
				t.Fatalf("got %d %s", r.status, r.body)
			}
			if _, signed := m["sign"]; signed {
				t.Error("a return_code FAIL reply carries a sign")
			}
			if o, _ := b.s.Order("r1"); o.State != sandbox.StateUnpaid {
				t.Errorf("state %v", o.State)
			}
			if c := b.s.Calls(); len(c) != 1 || c[0].Outcome != tc.outcome || c[0].Code != "FAIL" {
				t.Errorf("calls %+v", c)
			}
		})
	}
}

func TestV2AppIDMustMatch(t *testing.T) {
	b := setup(t, sandbox.Options{})
	b.addAged("a1", sandbox.StateUnpaid)
	_, m := b.c.v2(t, "a1", "MD5", func(f map[string]string) {
		f["appid"] = "wx0000000000000000"
		f["sign"] = v2Sign(f, b.creds.APIKey, "MD5")
	})
	if m["return_code"] != "FAIL" {
		t.Errorf("got %v", m)
	}
}

func TestV2AcceptsCDATA(t *testing.T) {
	b := setup(t, sandbox.Options{})
	b.addAged("cd1", sandbox.StateUnpaid)
	f := map[string]string{"appid": b.creds.AppID, "mch_id": b.creds.MchID, "out_trade_no": "cd1", "nonce_str": "abc"}
	sign := v2Sign(f, b.creds.APIKey, "MD5")
	body := "<xml><appid><![CDATA[" + f["appid"] + "]]></appid><mch_id><![CDATA[" + f["mch_id"] + "]]></mch_id>" +
		"<out_trade_no><![CDATA[cd1]]></out_trade_no><nonce_str>abc</nonce_str><sign>" + sign + "</sign></xml>"
	if _, m := b.c.v2Raw(t, []byte(body)); m["result_code"] != "SUCCESS" {
		t.Errorf("got %v", m)
	}
}
