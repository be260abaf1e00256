package wechat

import (
	"crypto"
	"crypto/md5"
	"crypto/rsa"
	"crypto/sha256"
	"strconv"
	"testing"
)

// BenchmarkSignV3 measures one request signature: message build plus
// RSA-2048 PKCS#1 v1.5 SHA-256, the per-attempt CPU cost of a v3 close.
func BenchmarkSignV3(b *testing.B) {
	key := wechatpayGoTestKey(b)
	body := []byte(`{"mchid":"1900000109"}`)
	b.ReportAllocs()
	for b.Loop() {
		msg := BuildV3Message("POST", "/v3/global/transactions/out-trade-no/T1001/close", "1700000000", "5K8264ILTKCH16CQ2502SI8ZNMTM67VS", body)
		if _, err := SignV3(key, msg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyV3 measures one response verification (RSA-2048 public
// key operation), the per-response cost.
func BenchmarkVerifyV3(b *testing.B) {
	key := wechatpayGoTestKey(b)
	msg := BuildV3ResponseMessage("1700000000", "NONCE1234567890", nil)
	sig, err := SignV3(key, msg)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := VerifyV3(&key.PublicKey, msg, sig); err != nil {
			b.Fatal(err)
		}
	}
}

func benchmarkSignV2(b *testing.B, t SignType) {
	params := map[string]string{
		"appid": "wx8888888888888888", "mch_id": "1900000109", "out_trade_no": "1217752501201407033233368018",
		"nonce_str": "5K8264ILTKCH16CQ2502SI8ZNMTM67VS", "sign_type": string(t),
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		params["nonce_str"] = strconv.Itoa(i)
		if _, err := SignV2(params, "192006250b4c09247ec02edce69f6a2d", t); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSignV2MD5 measures a v2 MD5 sign of a close request.
func BenchmarkSignV2MD5(b *testing.B) { benchmarkSignV2(b, SignMD5) }

// BenchmarkSignV2HMACSHA256 measures a v2 HMAC-SHA256 sign of a close request.
func BenchmarkSignV2HMACSHA256(b *testing.B) { benchmarkSignV2(b, SignHMACSHA256) }

// BenchmarkBaselineRSASign is the floor BenchmarkSignV3 is read against:
// the bare standard-library RSA-2048 signature of the same message, with no
// message building or encoding.
func BenchmarkBaselineRSASign(b *testing.B) {
	key := wechatpayGoTestKey(b)
	digest := sha256.Sum256([]byte(BuildV3Message("POST", "/v3/global/transactions/out-trade-no/T1001/close", "1700000000", "5K8264ILTKCH16CQ2502SI8ZNMTM67VS", []byte(`{"mchid":"1900000109"}`))))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := rsa.SignPKCS1v15(nil, key, crypto.SHA256, digest[:]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBaselineMD5 is the floor for BenchmarkSignV2MD5: one MD5 of an
// already-built string to sign.
func BenchmarkBaselineMD5(b *testing.B) {
	s := []byte("appid=wx8888888888888888&mch_id=1900000109&nonce_str=5K8264ILTKCH16CQ2502SI8ZNMTM67VS&out_trade_no=1217752501201407033233368018&sign_type=MD5&key=192006250b4c09247ec02edce69f6a2d")
	b.ReportAllocs()
	for b.Loop() {
		_ = md5.Sum(s)
	}
}
