package wechat

import (
	"crypto/rsa"
	"strings"
	"testing"
)

// The official API v2 signing example (security specification page,
// protocol reference §D).
var v2Vector = struct {
	params map[string]string
	key    string
	md5    string
	hmac   string
}{
	params: map[string]string{
		"appid":       "wxd930ea5d5a258f4f",
		"mch_id":      "10000100",
		"device_info": "1000",
		"body":        "test",
		"nonce_str":   "ibuaiVcKdpRxkhJA",
	},
	key:  "192006250b4c09247ec02edce69f6a2d",
	md5:  "9A0A8659F005D6984697E2CA0A9CF3B7",
	hmac: "6A9AE1657590FD6257D693A078E1C3E4BB6BA4DC30B23E0EE2496E54170DACD6",
}

func TestSignV2OfficialVector(t *testing.T) {
	tests := []struct {
		typ  SignType
		want string
	}{
		{SignMD5, v2Vector.md5},
		{SignHMACSHA256, v2Vector.hmac},
	}
	for _, tt := range tests {
		t.Run(string(tt.typ), func(t *testing.T) {
			got, err := SignV2(v2Vector.params, v2Vector.key, tt.typ)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("SignV2 = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestSignV2IgnoresEmptyAndSign(t *testing.T) {
	p := map[string]string{"sign": "WHATEVER", "empty": ""}
	for k, v := range v2Vector.params {
		p[k] = v
	}
	got, err := SignV2(p, v2Vector.key, SignMD5)
	if err != nil {
		t.Fatal(err)
	}
	if got != v2Vector.md5 {
		t.Errorf("sign and empty fields must not be signed: got %s, want %s", got, v2Vector.md5)
	}
}

func TestSignV2Errors(t *testing.T) {
	if _, err := SignV2(v2Vector.params, "", SignMD5); err == nil {
		t.Error("empty key: want error")
	}
	_, err := SignV2(v2Vector.params, v2Vector.key, "SHA1")
	if err == nil {
		t.Fatal("unknown sign type: want error")
	}
	if strings.Contains(err.Error(), v2Vector.key) {
		t.Errorf("error leaks the key: %v", err)
	}
}

// Layouts from wechatpay-go core/auth/credentials/wechat_pay_credential_test.go
// (protocol reference §E.3), which uses a mock signer "Sign:"+message and the
// scheme "WECHATPAY2-Mock".
func TestV3RequestLayouts(t *testing.T) {
	const (
		mchID  = "1234567890"
		nonce  = "A1B2C3D4E5F6G7"
		ts     = "1624523846"
		serial = "0123456789ABC"
	)
	tests := []struct {
		name, method string
		body         []byte
		wantMsg      string
	}{
		{"GET empty body", "GET", nil, "GET\n/v3/certificates\n1624523846\nA1B2C3D4E5F6G7\n\n"},
		{"POST body ending in newline", "POST", []byte("Hello World!\n"), "POST\n/v3/certificates\n1624523846\nA1B2C3D4E5F6G7\nHello World!\n\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := BuildV3Message(tt.method, "/v3/certificates", ts, nonce, tt.body)
			if msg != tt.wantMsg {
				t.Fatalf("message = %q, want %q", msg, tt.wantMsg)
			}
			h := AuthorizationHeader(mchID, nonce, ts, serial, "Sign:"+msg)
			mock := "WECHATPAY2-Mock" + strings.TrimPrefix(h, AuthScheme)
			want := `WECHATPAY2-Mock mchid="1234567890",nonce_str="A1B2C3D4E5F6G7",timestamp="1624523846",serial_no="0123456789ABC",signature="Sign:` + tt.wantMsg + `"`
			if mock != want {
				t.Errorf("header = %q, want %q", mock, want)
			}
		})
	}
}

// Layouts from wechatpay-go core/auth/validators/validator_test.go (§E.4).
func TestV3ResponseLayouts(t *testing.T) {
	tests := []struct {
		name string
		body []byte
		want string
	}{
		{"with body", []byte("BODY"), "1624523846\nNONCE1234567890\nBODY\n"},
		{"empty 204", nil, "1624523846\nNONCE1234567890\n\n"},
		{"empty non-nil", []byte{}, "1624523846\nNONCE1234567890\n\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := BuildV3ResponseMessage("1624523846", "NONCE1234567890", tt.body); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// testPrivateKeyStr is the published test key of wechatpay-go
// core/auth/signers/sha256withrsa_signer_test.go (label "TESTING KEY" as
// upstream, replaced with "PRIVATE KEY" before use). It is a public test
// vector, not a secret.
const testPrivateKeyStr = `-----BEGIN TESTING KEY-----
MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQDZUJN33V+dSfvd
fL0Mu+39XrZNXFFMQSy1V15FpncHeV47SmV0TzTqZc7hHB0ddqAdDi8Z5k3TKqb7
6sOwYr5TcAfuR6PIPaleyE0/0KrljBum2Isa2Nyq7Dgc3ElBQ6YN4l/a+DpvKaz1
FSKmKrhLNskqokWVSlu4g8OlKlbPXQ9ibII14MZRQrrkTmHYHzfi7GXXM0thAKuR
0HNvyhTHBh4/lrYM3GaMvmWwkwvsMavnOex6+eioZHBOb1/EIZ/LzC6zuHArPpyW
3daGaZ1rtQB1vVzTyERAVVFsXXgBHvfFud3w3ShsJYk8JvMwK2RpJ5/gV0QSARcm
LDRUAlPzAgMBAAECggEBAMc7rDeUaXiWv6bMGbZ3BTXpg1FhdddnWUnYE8HfX/km
OFI7XtBHXcgYFpcjYz4D5787pcsk7ezPidAj58zqenuclmjKnUmT3pfbI5eCA2v4
C9HnbYDrmUPK1ZcADtka4D6ScDccpNYNa1g2TFHzkIrEa6H+q7S3O2fqxY/DRVtN
0JIXalBb8daaqL5QVzSmM2BMVnHy+YITJWIkP2a3pKs9C0W65JGDsnG0wVrHinHF
+cnhFZIbaPEI//DAFMc9NkrWOKVRTEgcCUxCFaHOZVNxDWZD7A2ZfJB2rK6eg//y
gEiFDR2h6mTaDowMB4YF2n2dsIO4/dCG8vPHI20jn4ECgYEA/ZGu6lEMlO0XZnam
AZGtiNgLcCfM/C2ZERZE7QTRPZH1WdK92Al9ndldsswFw4baJrJLCmghjF/iG4zi
hhBvLnOLksnZUfjdumxoHDWXo2QBWbI5QsWIE7AuTiWgWj1I7X4fCXSQf6i+M/y2
6TogQ7d0ANpZFyOkTNMn/tiJvLECgYEA22XqlamG/yfAGWery5KNH2DGlTIyd6xJ
WtJ9j3jU99lZ0bCQ5xhiBbU9ImxCi3zgTsoqLWgA/p00HhNFNoUcTl9ofc0G3zwT
D1y0ZzcnVKxGJdZ6ohW52V0hJStAigtjYAsUgjm7//FH7PiQDBDP1Wa6xSRkDQU/
aSbQxvEE8+MCgYEA3bb8krW7opyM0XL9RHH0oqsFlVO30Oit5lrqebS0oHl3Zsr2
ZGgoBlWBsEzk3UqUhTFwm/DhJLTSJ/TQPRkxnhQ5/mewNhS9C7yua7wQkzVmWN+V
YeUGTvDGDF6qDz12/vJAgSwDDRym8x4NcXD5tTw7mmNRcwIfL22SkysThIECgYAV
BgccoEoXWS/HP2/u6fQr9ZIR6eV8Ij5FPbZacTG3LlS1Cz5XZra95UgebFFUHHtC
EY1JHJY7z8SWvTH8r3Su7eWNaIAoFBGffzqqSVazfm6aYZsOvRY6BfqPHT3p/H1h
Tq6AbBffxrcltgvXnCTORjHPglU0CjSxVs7awW3AEQKBgB5WtaC8VLROM7rkfVIq
+RXqE5vtJfa3e3N7W3RqxKp4zHFAPfr82FK5CX2bppEaxY7SEZVvVInKDc5gKdG/
jWNRBmvvftZhY59PILHO2X5vO4FXh7suEjy6VIh0gsnK36mmRboYIBGsNuDHjXLe
BDa+8mDLkWu5nHEhOxy2JJZl
-----END TESTING KEY-----`

const wechatpayGoExpectedSignature = "BKyAfU4iMCuvXMXS0Wzam3V/cnxZ+JaqigPM5OhljS2iOT95OO6Fsuml2JkFANJU9K6q9bLlDhPXuoVz+pp4hAm6" +
	"pHU4ld815U4jsKu1RkyaII+1CYBUYC8TK0XtJ8FwUXXz8vZHh58rrAVN1XwNyvD1vfpxrMT4SL536GLwvpUHlCqIMzoZUguLli/K8V29QiOh" +
	"uH6IEqLNJn8e9b3nwNcQ7be3CzYGpDAKBfDGPCqCv8Rw5zndhlffk2FEA70G4hvMwe51qMN/RAJbknXG23bSlObuTCN7Ndj1aJGH6/L+hdwf" +
	"LpUtJm4QYVazzW7DFD27EpSQEqA8bX9+8m1rLg=="

func wechatpayGoTestKey(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	k, err := LoadPrivateKey([]byte(strings.ReplaceAll(testPrivateKeyStr, "TESTING KEY", "PRIVATE KEY")))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// §E.2: wechatpay-go's SHA256WithRSASigner signs "source" with its test key
// to a fixed signature (PKCS#1 v1.5 is deterministic).
func TestSignV3OfficialVector(t *testing.T) {
	k := wechatpayGoTestKey(t)
	got, err := SignV3(k, "source")
	if err != nil {
		t.Fatal(err)
	}
	if got != wechatpayGoExpectedSignature {
		t.Errorf("SignV3 = %s\nwant      %s", got, wechatpayGoExpectedSignature)
	}
	if err := VerifyV3(&k.PublicKey, "source", got); err != nil {
		t.Errorf("VerifyV3 of own signature: %v", err)
	}
	if err := VerifyV3(&k.PublicKey, "sourcE", got); err == nil {
		t.Error("VerifyV3 accepted a signature over a different message")
	}
	if err := VerifyV3(&k.PublicKey, "source", "%%%"); err == nil {
		t.Error("VerifyV3 accepted non-base64")
	}
	if err := VerifyV3(nil, "source", got); err == nil {
		t.Error("VerifyV3 accepted a nil key")
	}
	if _, err := SignV3(nil, "source"); err == nil {
		t.Error("SignV3 accepted a nil key")
	}
}

func TestNewNonce(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		n := newNonce()
		if len(n) != 32 {
			t.Fatalf("nonce %q has length %d, want 32", n, len(n))
		}
		for _, r := range n {
			if !strings.ContainsRune(nonceAlphabet, r) {
				t.Fatalf("nonce %q has %q outside [0-9a-zA-Z]", n, r)
			}
		}
		if seen[n] {
			t.Fatalf("nonce %q repeated", n)
		}
		seen[n] = true
	}
}
