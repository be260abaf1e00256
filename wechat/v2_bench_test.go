package wechat

import (
	"net/http"
	"testing"
)

// The v2 protocol code a close runs besides the HTTP exchange: building the
// signed request, and parsing and verifying the answer. Compare runs with
// benchstat:
//
//	go test ./wechat -run '^$' -bench 'V2' -count 5 | tee new.txt

const benchV2Key = "192006250b4c09247ec02edce69f6a2d"

// benchV2Reply is a signed close answer as WeChat Pay (and the sandbox)
// writes it: every value in CDATA.
func benchV2Reply(b *testing.B, st SignType) []byte {
	fields := map[string]string{
		"return_code": "SUCCESS", "return_msg": "OK", "appid": "wx8888888888888888", "mch_id": "1900000109",
		"nonce_str": "BbMQBq3pEfC0Tz1fWCXUVkB1Z2pA5Jqx", "result_code": "SUCCESS", "result_msg": "OK",
	}
	sign, err := SignV2(fields, benchV2Key, st)
	if err != nil {
		b.Fatal(err)
	}
	body := "<xml>"
	for _, k := range []string{"return_code", "return_msg", "appid", "mch_id", "nonce_str", "result_code", "result_msg"} {
		body += "<" + k + "><![CDATA[" + fields[k] + "]]></" + k + ">"
	}
	return []byte(body + "<sign><![CDATA[" + sign + "]]></sign></xml>")
}

func benchV2Client(b *testing.B, st SignType) *V2Client {
	c, err := NewV2(Config{API: APIv2, MchID: "1900000109", AppID: "wx8888888888888888", APIKey: benchV2Key, SignType: st})
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// BenchmarkV2BuildClose measures one signed closeorder request body.
func BenchmarkV2BuildClose(b *testing.B) {
	c := benchV2Client(b, SignHMACSHA256)
	req := CloseRequest{OutTradeNo: "P202611221030150000001"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.buildClose(req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkV2ParseXML measures parsing a signed close answer into fields.
func BenchmarkV2ParseXML(b *testing.B) {
	body := benchV2Reply(b, SignHMACSHA256)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parseV2XML(body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkV2Interpret measures parsing, verifying and classifying a signed
// close answer (HMAC-SHA256), as Close does after the HTTP exchange.
func BenchmarkV2Interpret(b *testing.B) {
	for _, st := range []SignType{SignHMACSHA256, SignMD5} {
		b.Run(string(st), func(b *testing.B) {
			c := benchV2Client(b, st)
			body := benchV2Reply(b, st)
			h := http.Header{}
			b.ReportAllocs()
			for b.Loop() {
				out, err := c.interpret(200, h, body)
				if err != nil || out.Result != ResultClosed {
					b.Fatal(out, err)
				}
			}
		})
	}
}
