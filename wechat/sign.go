package wechat

import (
	"crypto"
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"slices"
	"strings"
	"sync"
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
	if err := checkV2Sign(key, t); err != nil {
		return "", err
	}
	st := newV2SignState(key, t)
	n := len("key=") + len(key)
	for k, v := range params {
		n += len(k) + len(v) + 2
	}
	st.buf = make([]byte, 0, n)
	var out [2 * sha256.Size]byte
	return string(st.signMap(out[:0], key, params)), nil
}

func checkV2Sign(key string, t SignType) error {
	if key == "" {
		return errors.New("wechat: SignV2: empty API key")
	}
	if t != SignMD5 && t != SignHMACSHA256 {
		return fmt.Errorf("wechat: SignV2: unsupported sign type %q (want %q or %q)", t, SignMD5, SignHMACSHA256)
	}
	return nil
}

// v2Signer computes v2 signs with one API key and sign type, as SignV2
// does. It keeps its hashers (an HMAC keeps its keyed state across Reset)
// and buffers in a pool, so a sign allocates nothing. It is safe for
// concurrent use.
type v2Signer struct {
	key  string
	typ  SignType
	pool sync.Pool // of *v2SignState
}

func newV2Signer(key string, t SignType) (*v2Signer, error) {
	if err := checkV2Sign(key, t); err != nil {
		return nil, err
	}
	return &v2Signer{key: key, typ: t}, nil
}

func (s *v2Signer) get() *v2SignState {
	if st, ok := s.pool.Get().(*v2SignState); ok {
		return st
	}
	return newV2SignState(s.key, s.typ)
}

// signMap appends the sign of params (see SignV2) to dst.
func (s *v2Signer) signMap(dst []byte, params map[string]string) []byte {
	st := s.get()
	dst = st.signMap(dst, s.key, params)
	s.pool.Put(st)
	return dst
}

// signSorted appends the sign of params, which must be sorted by name in
// byte order, to dst; as SignV2, it skips empty values and "sign".
func (s *v2Signer) signSorted(dst []byte, params []v2Param) []byte {
	st := s.get()
	for _, p := range params {
		if p.name != "sign" && p.value != "" {
			st.buf = appendV2Pair(st.buf, p.name, p.value)
		}
	}
	dst = st.finish(dst, s.key)
	s.pool.Put(st)
	return dst
}

// v2SignState is the scratch space of one sign: the hasher, the string to
// sign and the sorted names.
type v2SignState struct {
	h     hash.Hash
	buf   []byte
	names []string
	sum   [sha256.Size]byte
}

// newV2SignState returns a state for key and t. Its buffer grows to the
// longest string signed with it.
func newV2SignState(key string, t SignType) *v2SignState {
	st := &v2SignState{}
	if t == SignMD5 {
		st.h = md5.New()
	} else {
		st.h = hmac.New(sha256.New, []byte(key))
	}
	return st
}

// signMap writes the string to sign of params and appends its sign to dst.
func (st *v2SignState) signMap(dst []byte, key string, params map[string]string) []byte {
	names := st.names[:0]
	for k, v := range params {
		if k != "sign" && v != "" {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	for _, k := range names {
		st.buf = appendV2Pair(st.buf, k, params[k])
	}
	clear(names) // no references to the caller's strings stay in a pool
	st.names = names[:0]
	return st.finish(dst, key)
}

// finish appends "key=<key>" to the string to sign, hashes it and appends
// the upper-case hex sign to dst. The state is then ready for another sign.
func (st *v2SignState) finish(dst []byte, key string) []byte {
	st.buf = append(st.buf, "key="...)
	st.buf = append(st.buf, key...)
	st.h.Reset()
	st.h.Write(st.buf)
	dst = appendUpperHex(dst, st.h.Sum(st.sum[:0]))
	// The string to sign ends with the key: leave no copy in a pool.
	clear(st.buf)
	st.buf = st.buf[:0]
	return dst
}

// v2Param is one request parameter.
type v2Param struct{ name, value string }

func appendV2Pair(b []byte, k, v string) []byte {
	b = append(b, k...)
	b = append(b, '=')
	b = append(b, v...)
	return append(b, '&')
}

const upperHex = "0123456789ABCDEF"

// appendUpperHex appends src in upper-case hex, as WeChat Pay writes signs.
func appendUpperHex(dst, src []byte) []byte {
	for _, c := range src {
		dst = append(dst, upperHex[c>>4], upperHex[c&0x0f])
	}
	return dst
}

const nonceAlphabet = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

// newNonce returns 32 characters from [0-9a-zA-Z] drawn from crypto/rand,
// as the official SDK does. Rejection sampling keeps the characters uniform.
func newNonce() string {
	const n = 32
	var outBuf [n]byte
	var buf [48]byte
	out := outBuf[:0]
	for len(out) < n {
		_, _ = rand.Read(buf[:]) // never fails since Go 1.24
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
