package wechat

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

const fuzzAPIKey = "192006250b4c09247ec02edce69f6a2d"

// FuzzParseV2Response feeds arbitrary bodies to the v2 reply parser and
// classifier. Besides not panicking, an Outcome may only come from a
// SUCCESS reply whose sign verifies.
func FuzzParseV2Response(f *testing.F) {
	signed := func(st SignType, fields map[string]string) string {
		s, err := SignV2(fields, fuzzAPIKey, st)
		if err != nil {
			f.Fatal(err)
		}
		var b strings.Builder
		b.WriteString("<xml>")
		for k, v := range fields {
			b.WriteString("<" + k + "><![CDATA[" + v + "]]></" + k + ">")
		}
		b.WriteString("<sign>" + s + "</sign></xml>")
		return b.String()
	}
	ok := map[string]string{"return_code": "SUCCESS", "result_code": "SUCCESS", "appid": "wx1", "mch_id": "1", "nonce_str": "n"}
	paid := map[string]string{"return_code": "SUCCESS", "result_code": "FAIL", "err_code": "ORDERPAID", "err_code_des": "已支付"}
	for _, seed := range []struct {
		body string
		md5  bool
	}{
		{signed(SignHMACSHA256, ok), false},
		{signed(SignMD5, ok), true},
		{signed(SignHMACSHA256, paid), false},
		{signed(SignMD5, paid), false}, // wrong type
		{"<xml><return_code><![CDATA[FAIL]]></return_code><return_msg><![CDATA[签名错误，请检查后再试]]></return_msg></xml>", false},
		{"<xml><return_code>SUCCESS</return_code><result_code>SUCCESS</result_code></xml>", true},
		{"<xml><a><b>nested</b></a></xml>", false},
		{"<xml><a>1</a><a>2</a></xml>", false},
		{"<?xml version=\"1.0\" encoding=\"GBK\"?><xml></xml>", false},
		{"<!DOCTYPE xml [<!ENTITY x \"y\">]><xml><a>&x;</a></xml>", false},
		{"<xml>", false},
		{"", false},
		{"{\"code\":\"ORDERPAID\"}", false},
	} {
		f.Add([]byte(seed.body), seed.md5)
	}
	f.Fuzz(func(t *testing.T, body []byte, md5 bool) {
		st := SignHMACSHA256
		if md5 {
			st = SignMD5
		}
		c, err := NewV2(Config{API: APIv2, MchID: "1", AppID: "wx1", APIKey: fuzzAPIKey, SignType: st})
		if err != nil {
			t.Fatal(err)
		}
		out, err := c.interpret(200, http.Header{}, body)
		if err != nil {
			if we := (*Error)(nil); !errors.As(err, &we) {
				t.Fatalf("error %T is not *Error", err)
			}
			if strings.Contains(err.Error(), fuzzAPIKey) {
				t.Fatal("error leaks the API key")
			}
			return
		}
		m, perr := parseV2XML(body)
		if perr != nil || m["return_code"] != "SUCCESS" {
			t.Fatalf("outcome %+v from a reply that is not SUCCESS XML", out)
		}
		want, _ := SignV2(m, fuzzAPIKey, st)
		if strings.ToUpper(strings.TrimSpace(m["sign"])) != want {
			t.Fatalf("outcome %+v from a reply whose sign does not verify", out)
		}
	})
}

// FuzzV3ResponseHeaders feeds arbitrary statuses, signature headers and
// bodies to the v3 classifier. An Outcome may only come from a response
// whose signature verifies with the trusted key under its ID, inside the
// timestamp window.
func FuzzV3ResponseHeaders(f *testing.F) {
	key := wechatpayGoTestKey(f)
	const keyID = "PUB_KEY_ID_0000000000000024101100397200000006"
	now := time.Unix(1700000000, 0)
	sign := func(ts, nonce, body string) string {
		s, err := SignV3(key, BuildV3ResponseMessage(ts, nonce, []byte(body)))
		if err != nil {
			f.Fatal(err)
		}
		return s
	}
	ts := strconv.FormatInt(now.Unix(), 10)
	paid := `{"code":"ORDERPAID","message":"paid"}`
	f.Add(204, ts, "NONCE", keyID, sign(ts, "NONCE", ""), []byte(nil))
	f.Add(400, ts, "NONCE", keyID, sign(ts, "NONCE", paid), []byte(paid))
	f.Add(404, ts, "NONCE", keyID, sign(ts, "NONCE", ""), []byte(""))
	f.Add(204, "1699999000", "NONCE", keyID, sign("1699999000", "NONCE", ""), []byte(nil))
	f.Add(204, "1699999700", "NONCE", keyID, sign("1699999700", "NONCE", ""), []byte(nil)) // exactly 300 s old
	f.Add(204, "1700000300", "NONCE", keyID, sign("1700000300", "NONCE", ""), []byte(nil)) // exactly 300 s ahead
	f.Add(204, ts, "NONCE", "UNKNOWN", sign(ts, "NONCE", ""), []byte(nil))
	f.Add(204, "", "", "", "", []byte(nil))
	f.Add(204, "99999999999999999999", "N", keyID, "!!!", []byte("x"))
	f.Add(204, "-9223372036854775808", "N", keyID, "AAAA", []byte(nil))
	f.Add(429, ts, "N", keyID, "", []byte(`{"code":"RATE_LIMITED"}`))
	f.Add(200, ts, "N", keyID, "", []byte(`{"code":`))
	f.Fuzz(func(t *testing.T, status int, ts, nonce, serial, sig string, body []byte) {
		c, err := NewV3(Config{
			MchID: "1900000109", PrivateKey: key, CertSerial: "F5765756002FDD77",
			PublicKey: &key.PublicKey, PublicKeyID: keyID,
			Now: func() time.Time { return now },
		})
		if err != nil {
			t.Fatal(err)
		}
		h := http.Header{}
		h.Set("Wechatpay-Timestamp", ts)
		h.Set("Wechatpay-Nonce", nonce)
		h.Set("Wechatpay-Serial", serial)
		h.Set("Wechatpay-Signature", sig)
		h.Set("Retry-After", ts)
		out, err := c.interpret(context.Background(), status, h, body)
		if err != nil {
			if we := (*Error)(nil); !errors.As(err, &we) {
				t.Fatalf("error %T is not *Error", err)
			}
			return
		}
		if normalizeSerial(serial) != normalizeSerial(keyID) {
			t.Fatalf("outcome %+v under serial %q", out, serial)
		}
		sec, perr := strconv.ParseInt(ts, 10, 64)
		if perr != nil || sec <= now.Unix()-300 || sec >= now.Unix()+300 {
			t.Fatalf("outcome %+v with timestamp %q", out, ts)
		}
		if VerifyV3(&key.PublicKey, BuildV3ResponseMessage(ts, nonce, body), sig) != nil {
			t.Fatalf("outcome %+v from an unverified response", out)
		}
	})
}
