package wechat_test

import (
	"context"
	"encoding/xml"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/wxclose/wxclose/wechat"
)

const testAPIKey = "0123456789abcdefghijABCDEFGHIJ01"

// v2Reply builds the reply to one v2 request. sent is the parsed request.
type v2Reply func(sent map[string]string) (status int, body string)

// stubV2 is a minimal /pay/closeorder look-alike recording parsed requests.
type stubV2 struct {
	srv   *httptest.Server
	mu    sync.Mutex
	sent  []map[string]string
	reply v2Reply
}

func newStubV2(t testing.TB, reply v2Reply) *stubV2 {
	s := &stubV2{reply: reply}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var doc struct {
			Fields []struct {
				XMLName xml.Name
				Value   string `xml:",chardata"`
			} `xml:",any"`
		}
		m := map[string]string{"_path": r.URL.Path, "_method": r.Method}
		if err := xml.Unmarshal(b, &doc); err == nil {
			for _, f := range doc.Fields {
				m[f.XMLName.Local] = f.Value
			}
		}
		s.mu.Lock()
		s.sent = append(s.sent, m)
		s.mu.Unlock()
		status, body := s.reply(m)
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

// signedReply answers return_code SUCCESS with the given fields, signed
// with the sign type the request named (MD5 when absent, as WeChat does).
func signedReply(fields map[string]string) v2Reply {
	return func(sent map[string]string) (int, string) {
		st := sent["sign_type"]
		if st == "" {
			st = "MD5"
		}
		f := map[string]string{"return_code": "SUCCESS", "return_msg": "OK", "appid": sent["appid"], "mch_id": sent["mch_id"], "nonce_str": "BFK89FC6rxKCOjLX"}
		for k, v := range fields {
			f[k] = v
		}
		f["sign"] = v2SignTest(f, testAPIKey, st)
		return 200, v2XML(f)
	}
}

func v2Config(baseURL string, st wechat.SignType) wechat.Config {
	return wechat.Config{API: wechat.APIv2, BaseURL: baseURL, MchID: "1900000109", AppID: "wx8888888888888888", APIKey: testAPIKey, SignType: st}
}

func TestV2Classification(t *testing.T) {
	fail := func(code, des string) map[string]string {
		return map[string]string{"result_code": "FAIL", "err_code": code, "err_code_des": des}
	}
	raw := func(status int, body string) v2Reply {
		return func(map[string]string) (int, string) { return status, body }
	}
	tamper := func(r v2Reply) v2Reply {
		return func(sent map[string]string) (int, string) {
			s, b := r(sent)
			return s, strings.Replace(b, "FAIL", "SUCCESS", 1)
		}
	}
	wrongType := func(fields map[string]string) v2Reply {
		return func(sent map[string]string) (int, string) {
			other := "MD5"
			if sent["sign_type"] == "MD5" {
				other = "HMAC-SHA256"
			}
			return signedReply(fields)(map[string]string{"sign_type": other, "appid": sent["appid"], "mch_id": sent["mch_id"]})
		}
	}
	type want struct {
		result   wechat.Result
		class    wechat.Class
		code     string
		sentinel error
	}
	tests := []struct {
		name  string
		reply v2Reply
		want  want
	}{
		{"SUCCESS closes", signedReply(map[string]string{"result_code": "SUCCESS"}), want{result: wechat.ResultClosed}},
		{"unknown fields are signed too", signedReply(map[string]string{"result_code": "SUCCESS", "new_field": "x&y<z>", "result_msg": "OK"}), want{result: wechat.ResultClosed}},
		{"ORDERCLOSED", signedReply(fail("ORDERCLOSED", "closed")), want{result: wechat.ResultAlreadyClosed, code: "ORDERCLOSED"}},
		{"ORDERPAID", signedReply(fail("ORDERPAID", "paid")), want{result: wechat.ResultPaid, code: "ORDERPAID"}},
		{"ORDERNOTEXIST", signedReply(fail("ORDERNOTEXIST", "none")), want{result: wechat.ResultNotFound, code: "ORDERNOTEXIST"}},
		{"SYSTEMERROR", signedReply(fail("SYSTEMERROR", "busy")), want{class: wechat.ClassRetryable, code: "SYSTEMERROR"}},
		{"FREQUENCY_LIMITED", signedReply(fail("FREQUENCY_LIMITED", "slow")), want{class: wechat.ClassRateLimited, code: "FREQUENCY_LIMITED"}},
		{"SIGNERROR", signedReply(fail("SIGNERROR", "sign")), want{class: wechat.ClassPermanent, code: "SIGNERROR"}},
		{"REQUIRE_POST_METHOD", signedReply(fail("REQUIRE_POST_METHOD", "post")), want{class: wechat.ClassPermanent, code: "REQUIRE_POST_METHOD"}},
		{"XML_FORMAT_ERROR", signedReply(fail("XML_FORMAT_ERROR", "xml")), want{class: wechat.ClassPermanent, code: "XML_FORMAT_ERROR"}},
		{"unknown err_code", signedReply(fail("SOMETHING_NEW", "?")), want{class: wechat.ClassPermanent, code: "SOMETHING_NEW"}},
		{"FAIL without err_code", signedReply(map[string]string{"result_code": "FAIL"}), want{class: wechat.ClassPermanent, code: "FAIL"}},

		{"SUCCESS unsigned", raw(200, v2XML(map[string]string{"return_code": "SUCCESS", "result_code": "SUCCESS"})), want{class: wechat.ClassRetryable, sentinel: wechat.ErrUntrustedResponse}},
		{"SUCCESS tampered", tamper(signedReply(fail("SYSTEMERROR", "FAIL"))), want{class: wechat.ClassRetryable, code: "SYSTEMERROR", sentinel: wechat.ErrUntrustedResponse}},
		{"ORDERPAID forged sign", raw(200, v2XML(map[string]string{"return_code": "SUCCESS", "result_code": "FAIL", "err_code": "ORDERPAID", "sign": "9A0A8659F005D6984697E2CA0A9CF3B7"})), want{class: wechat.ClassRetryable, code: "ORDERPAID", sentinel: wechat.ErrUntrustedResponse}},
		{"signed with the other sign type", wrongType(map[string]string{"result_code": "SUCCESS"}), want{class: wechat.ClassRetryable, sentinel: wechat.ErrUntrustedResponse}},

		{"return FAIL signature", raw(200, v2XML(map[string]string{"return_code": "FAIL", "return_msg": "签名错误，请检查后再试"})), want{class: wechat.ClassPermanent, code: "SIGNERROR"}},
		{"return FAIL other", raw(200, v2XML(map[string]string{"return_code": "FAIL", "return_msg": "mch_id参数格式错误"})), want{class: wechat.ClassPermanent, code: "FAIL"}},
		{"return_code garbage", raw(200, v2XML(map[string]string{"return_code": "MAYBE"})), want{class: wechat.ClassRetryable, sentinel: wechat.ErrMalformedResponse}},
		{"non-XML body", raw(200, "<html>oops"), want{class: wechat.ClassRetryable, sentinel: wechat.ErrMalformedResponse}},
		{"empty body", raw(200, ""), want{class: wechat.ClassRetryable, sentinel: wechat.ErrMalformedResponse}},
		{"HTTP 500", raw(500, "oops"), want{class: wechat.ClassRetryable}},
		{"HTTP 502", raw(502, ""), want{class: wechat.ClassRetryable}},
		{"HTTP 429", raw(429, ""), want{class: wechat.ClassRateLimited}},
		{"HTTP 404", raw(404, ""), want{class: wechat.ClassPermanent}},
	}
	for _, st := range []wechat.SignType{wechat.SignHMACSHA256, wechat.SignMD5} {
		for _, tt := range tests {
			t.Run(string(st)+"/"+tt.name, func(t *testing.T) {
				s := newStubV2(t, tt.reply)
				c, err := wechat.New(v2Config(s.srv.URL, st))
				if err != nil {
					t.Fatal(err)
				}
				out, err := c.Close(context.Background(), wechat.CloseRequest{OutTradeNo: "T1001"})
				if tt.want.result != 0 {
					if err != nil {
						t.Fatalf("Close: %v, want %v", err, tt.want.result)
					}
					if out.Result != tt.want.result || out.Code != tt.want.code || out.HTTPStatus != 200 {
						t.Errorf("outcome %+v, want %v %q", out, tt.want.result, tt.want.code)
					}
					return
				}
				we := errorAs(t, err)
				if we.Class != tt.want.class || we.Code != tt.want.code {
					t.Errorf("error %v, want class %v code %q", err, tt.want.class, tt.want.code)
				}
				if tt.want.sentinel != nil && !errors.Is(err, tt.want.sentinel) {
					t.Errorf("error %v does not wrap %v", err, tt.want.sentinel)
				}
				if strings.Contains(err.Error(), testAPIKey) {
					t.Errorf("error leaks the API key: %v", err)
				}
			})
		}
	}
}

func TestV2Request(t *testing.T) {
	tests := []struct {
		name string
		st   wechat.SignType
		req  wechat.CloseRequest
		want map[string]string
	}{
		{"default HMAC", "", wechat.CloseRequest{OutTradeNo: "T1001"},
			map[string]string{"appid": "wx8888888888888888", "mch_id": "1900000109", "out_trade_no": "T1001", "sign_type": "HMAC-SHA256"}},
		{"MD5 sends sign_type", wechat.SignMD5, wechat.CloseRequest{OutTradeNo: "T1001"},
			map[string]string{"sign_type": "MD5"}},
		{"institutional", wechat.SignHMACSHA256, wechat.CloseRequest{OutTradeNo: "T|1*@_-", SubMchID: "20000100", SubAppID: "wx2421b1c4370ec43b"},
			map[string]string{"sub_mch_id": "20000100", "sub_appid": "wx2421b1c4370ec43b", "out_trade_no": "T|1*@_-"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStubV2(t, signedReply(map[string]string{"result_code": "SUCCESS"}))
			c, err := wechat.New(v2Config(s.srv.URL, tt.st))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Close(context.Background(), tt.req); err != nil {
				t.Fatal(err)
			}
			sent := s.sent[0]
			if sent["_path"] != "/pay/closeorder" || sent["_method"] != "POST" {
				t.Errorf("sent %s %s", sent["_method"], sent["_path"])
			}
			for k, v := range tt.want {
				if sent[k] != v {
					t.Errorf("%s = %q, want %q", k, sent[k], v)
				}
			}
			if n := len(sent["nonce_str"]); n != 32 {
				t.Errorf("nonce_str has %d characters, want 32", n)
			}
			fields := map[string]string{}
			for k, v := range sent {
				if !strings.HasPrefix(k, "_") {
					fields[k] = v
				}
			}
			if want := v2SignTest(fields, testAPIKey, sent["sign_type"]); sent["sign"] != want {
				t.Errorf("sign %s, want %s", sent["sign"], want)
			}
		})
	}
}

// TestV2InvalidRequests: identifiers outside the shared rules
// (internal/ids) are refused before anything is sent. Each was accepted
// before those rules were shared with tasks and config.
func TestV2InvalidRequests(t *testing.T) {
	s := newStubV2(t, signedReply(map[string]string{"result_code": "SUCCESS"}))
	c, err := wechat.New(v2Config(s.srv.URL, ""))
	if err != nil {
		t.Fatal(err)
	}
	for _, req := range []wechat.CloseRequest{
		{OutTradeNo: "T&<1>"},
		{OutTradeNo: strings.Repeat("9", 33)},
		{OutTradeNo: "T1", MchID: "merchant-1"},
		{OutTradeNo: "T1", SubMchID: "2000_0100"},
		{OutTradeNo: "T1", SubMchID: "20000100", SubAppID: "wx-1"},
	} {
		_, err := c.Close(context.Background(), req)
		if we := errorAs(t, err); we.Class != wechat.ClassPermanent || !errors.Is(err, wechat.ErrInvalidRequest) {
			t.Errorf("%+v: %v, want permanent ErrInvalidRequest", req, err)
		}
	}
	if len(s.sent) != 0 {
		t.Errorf("%d requests sent for invalid input", len(s.sent))
	}
}

func TestV2NeedsOutTradeNo(t *testing.T) {
	s := newStubV2(t, signedReply(map[string]string{"result_code": "SUCCESS"}))
	c, err := wechat.New(v2Config(s.srv.URL, ""))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Close(context.Background(), wechat.CloseRequest{TransactionID: "4200000001"})
	we := errorAs(t, err)
	if we.Class != wechat.ClassPermanent || !errors.Is(err, wechat.ErrInvalidRequest) || !strings.Contains(err.Error(), "out_trade_no") {
		t.Errorf("%v, want permanent ErrInvalidRequest mentioning out_trade_no", err)
	}
	if len(s.sent) != 0 {
		t.Error("a request was sent")
	}
}
