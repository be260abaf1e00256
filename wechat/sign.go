package wechat

import (
	"crypto"
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"sort"
	"strings"
)

// AuthScheme is the Authorization scheme of API v3 requests.
const AuthScheme = "WECHATPAY2-SHA256-RSA2048"

// BuildV3Message returns the string a v3 request signature covers:
//
//	METHOD\nURI\nTIMESTAMP\nNONCE\nBODY\n
//
// uri is the request target exactly as sent (path plus "?query", as
// url.URL.RequestURI returns it), timestamp is Unix seconds, and body is the
// exact bytes sent ("" for GET). Every line ends in "\n", so a body that
// itself ends in "\n" yields a doubled final newline.
func BuildV3Message(method, uri, timestamp, nonce string, body []byte) string {
	var b strings.Builder
	b.Grow(len(method) + len(uri) + len(timestamp) + len(nonce) + len(body) + 5)
	b.WriteString(strings.ToUpper(method))
	b.WriteByte('\n')
	b.WriteString(uri)
	b.WriteByte('\n')
	b.WriteString(timestamp)
	b.WriteByte('\n')
	b.WriteString(nonce)
	b.WriteByte('\n')
	b.Write(body)
	b.WriteByte('\n')
	return b.String()
}

// BuildV3ResponseMessage returns the string a v3 response signature covers:
//
//	TIMESTAMP\nNONCE\nBODY\n
//
// with the raw response body; for an empty body (HTTP 204) the last line is
// just "\n".
func BuildV3ResponseMessage(timestamp, nonce string, body []byte) string {
	var b strings.Builder
	b.Grow(len(timestamp) + len(nonce) + len(body) + 3)
	b.WriteString(timestamp)
	b.WriteByte('\n')
	b.WriteString(nonce)
	b.WriteByte('\n')
	b.Write(body)
	b.WriteByte('\n')
	return b.String()
}

// SignV3 signs message with SHA256withRSA (RSASSA-PKCS1-v1_5 over SHA-256)
// and returns the standard base64 encoding, as WeChat Pay expects in the
// Authorization signature and sends in Wechatpay-Signature.
func SignV3(key *rsa.PrivateKey, message string) (string, error) {
	if key == nil {
		return "", errors.New("wechat: SignV3: nil private key")
	}
	sum := sha256.Sum256([]byte(message))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		return "", fmt.Errorf("wechat: SignV3: %w", err)
	}
	return base64.StdEncoding.EncodeToString(sig), nil
}

// VerifyV3 checks a base64 SHA256withRSA signature over message. It returns
// nil only for a valid signature.
func VerifyV3(key *rsa.PublicKey, message, signature string) error {
	if key == nil {
		return errors.New("wechat: VerifyV3: nil public key")
	}
	sig, err := base64.StdEncoding.DecodeString(signature)
	if err != nil {
		return errors.New("wechat: signature is not valid base64")
	}
	sum := sha256.Sum256([]byte(message))
	if err := rsa.VerifyPKCS1v15(key, crypto.SHA256, sum[:], sig); err != nil {
		return errors.New("wechat: signature does not match")
	}
	return nil
}

// AuthorizationHeader formats the v3 Authorization header value:
//
//	WECHATPAY2-SHA256-RSA2048 mchid="..",nonce_str="..",timestamp="..",serial_no="..",signature=".."
//
// serial is the merchant API certificate serial (not a platform one). The
// values are not escaped; callers pass digits, hex and base64 only.
func AuthorizationHeader(mchID, nonce, timestamp, serial, signature string) string {
	return AuthScheme + ` mchid="` + mchID + `",nonce_str="` + nonce + `",timestamp="` + timestamp +
		`",serial_no="` + serial + `",signature="` + signature + `"`
}

// SignV2 computes the API v2 sign of params with the merchant API key: the
// non-empty parameters other than "sign", sorted by name in byte order and
// joined as k=v&k=v with raw values, then "&key=<key>" appended, hashed with
// MD5 or HMAC-SHA256 (keyed with key) and hex-encoded in upper case. Pass
// "sign_type" in params when it is sent: it is signed like any other field.
func SignV2(params map[string]string, key string, t SignType) (string, error) {
	if key == "" {
		return "", errors.New("wechat: SignV2: empty API key")
	}
	var h hash.Hash
	switch t {
	case SignMD5:
		h = md5.New()
	case SignHMACSHA256:
		h = hmac.New(sha256.New, []byte(key))
	default:
		return "", fmt.Errorf("wechat: SignV2: unsupported sign type %q (want %q or %q)", t, SignMD5, SignHMACSHA256)
	}
	names := make([]string, 0, len(params))
	for k, v := range params {
		if k == "sign" || v == "" {
			continue
		}
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		h.Write([]byte(k))
		h.Write([]byte{'='})
		h.Write([]byte(params[k]))
		h.Write([]byte{'&'})
	}
	h.Write([]byte("key="))
	h.Write([]byte(key))
	return strings.ToUpper(hex.EncodeToString(h.Sum(nil))), nil
}

const nonceAlphabet = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

// newNonce returns 32 characters from [0-9a-zA-Z] drawn from crypto/rand,
// as the official SDK does. Rejection sampling keeps the characters uniform.
func newNonce() string {
	const n = 32
	out := make([]byte, 0, n)
	buf := make([]byte, 48)
	for len(out) < n {
		_, _ = rand.Read(buf) // never fails since Go 1.24
		for _, b := range buf {
			if b >= 248 { // 248 = 4*62; larger bytes would bias the first characters
				continue
			}
			out = append(out, nonceAlphabet[int(b)%62])
			if len(out) == n {
				break
			}
		}
	}
	return string(out)
}
