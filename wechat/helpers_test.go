package wechat_test

import (
	"crypto"
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxclose/wxclose/wechat"
)

// Test material for the stub servers below, generated once per run. The
// stubs sign and verify with their own few lines of crypto/rsa rather than
// the package's helpers, so a shared bug cannot hide itself.
type testKeys struct {
	merchant       *rsa.PrivateKey
	merchantPEM    []byte // PKCS#8
	merchantSerial string
	platform       *rsa.PrivateKey
	platformCert   *x509.Certificate
	platformPEM    []byte
	platformSerial string
	other          *rsa.PrivateKey // a key nobody trusts
}

var (
	keysOnce sync.Once
	keys     testKeys
)

func getKeys(t testing.TB) testKeys {
	t.Helper()
	keysOnce.Do(func() {
		gen := func() *rsa.PrivateKey {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			return k
		}
		keys.merchant = gen()
		der, err := x509.MarshalPKCS8PrivateKey(keys.merchant)
		if err != nil {
			panic(err)
		}
		keys.merchantPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
		keys.merchantSerial = "1DDE55AD98ED71D6EDD4A4A16996DE7B47773A8C"
		keys.platform = gen()
		keys.other = gen()
		tmpl := &x509.Certificate{
			SerialNumber: new(big.Int).SetBytes([]byte{0x5A, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77}),
			Subject:      pkix.Name{CommonName: "Tenpay.com Root CA test"},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(365 * 24 * time.Hour),
		}
		cder, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &keys.platform.PublicKey, keys.platform)
		if err != nil {
			panic(err)
		}
		keys.platformCert, err = x509.ParseCertificate(cder)
		if err != nil {
			panic(err)
		}
		keys.platformPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cder})
		keys.platformSerial = "5A11223344556677"
	})
	return keys
}

func rsaSignB64(k *rsa.PrivateKey, msg string) string {
	sum := sha256.Sum256([]byte(msg))
	sig, err := rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, sum[:])
	if err != nil {
		panic(err)
	}
	return base64.StdEncoding.EncodeToString(sig)
}

func rsaVerifyB64(pub *rsa.PublicKey, msg, sig string) bool {
	raw, err := base64.StdEncoding.DecodeString(sig)
	if err != nil {
		return false
	}
	sum := sha256.Sum256([]byte(msg))
	return rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], raw) == nil
}

// sigMode says how the v3 stub signs a reply.
type sigMode int

const (
	sigValid sigMode = iota
	sigMissing
	sigBad           // signed by a key nobody trusts, under the trusted serial
	sigStale         // valid signature, timestamp 6 minutes old
	sigUnknownSerial // valid signature, serial nobody knows
	sigWrongType     // valid, but Wechatpay-Signature-Type is something else
	sigTampered      // valid signature over a different body
)

type stubReply struct {
	status int
	body   string
	header map[string]string
	sig    sigMode
}

type recorded struct {
	method, uri string
	header      http.Header
	body        []byte
	authValid   bool // Authorization verified with the merchant public key
	authMchID   string
}

// stubV3 is a minimal WeChat Pay v3 look-alike answering every request with
// the next scripted reply (the last one repeats) and recording requests.
type stubV3 struct {
	t       testing.TB
	srv     *httptest.Server
	keys    testKeys
	mu      sync.Mutex
	replies []stubReply
	reqs    []recorded
}

func newStubV3(t testing.TB, replies ...stubReply) *stubV3 {
	s := &stubV3{t: t, keys: getKeys(t), replies: replies}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *stubV3) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rec := recorded{method: r.Method, uri: r.RequestURI, header: r.Header.Clone(), body: body}
	rec.authValid, rec.authMchID = checkAuthorization(r.Header.Get("Authorization"), r.Method, r.RequestURI, body, &s.keys.merchant.PublicKey, s.keys.merchantSerial)
	s.mu.Lock()
	s.reqs = append(s.reqs, rec)
	rep := stubReply{status: http.StatusNoContent}
	if len(s.replies) > 0 {
		rep = s.replies[0]
		if len(s.replies) > 1 {
			s.replies = s.replies[1:]
		}
	}
	s.mu.Unlock()
	writeSigned(w, rep, s.keys)
}

func writeSigned(w http.ResponseWriter, rep stubReply, k testKeys) {
	for name, v := range rep.header {
		w.Header().Set(name, v)
	}
	if w.Header().Get("Request-ID") == "" {
		w.Header().Set("Request-ID", "req-0001")
	}
	if rep.sig != sigMissing {
		ts := time.Now().Unix()
		if rep.sig == sigStale {
			ts -= 6 * 60
		}
		nonce := "NONCE1234567890"
		signed := rep.body
		if rep.sig == sigTampered {
			signed = rep.body + " "
		}
		msg := strconv.FormatInt(ts, 10) + "\n" + nonce + "\n" + signed + "\n"
		key, serial := k.platform, k.platformSerial
		switch rep.sig {
		case sigBad:
			key = k.other
		case sigUnknownSerial:
			serial = "7777777777777777"
		case sigWrongType:
			w.Header().Set("Wechatpay-Signature-Type", "WECHATPAY2-SM2-WITH-SM3")
		}
		w.Header().Set("Wechatpay-Timestamp", strconv.FormatInt(ts, 10))
		w.Header().Set("Wechatpay-Nonce", nonce)
		w.Header().Set("Wechatpay-Serial", serial)
		w.Header().Set("Wechatpay-Signature", rsaSignB64(key, msg))
	}
	if rep.body != "" && w.Header().Get("Content-Type") == "" {
		w.Header().Set("Content-Type", "application/json")
	}
	w.WriteHeader(rep.status)
	_, _ = io.WriteString(w, rep.body)
}

// checkAuthorization verifies a v3 Authorization header the way WeChat Pay
// does, independently of the package.
func checkAuthorization(h, method, uri string, body []byte, pub *rsa.PublicKey, serial string) (bool, string) {
	const scheme = "WECHATPAY2-SHA256-RSA2048 "
	if !strings.HasPrefix(h, scheme) {
		return false, ""
	}
	params := map[string]string{}
	for _, kv := range strings.Split(strings.TrimPrefix(h, scheme), ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
			return false, ""
		}
		params[k] = v[1 : len(v)-1]
	}
	msg := method + "\n" + uri + "\n" + params["timestamp"] + "\n" + params["nonce_str"] + "\n" + string(body) + "\n"
	ok := len(params) == 5 && params["serial_no"] == serial && rsaVerifyB64(pub, msg, params["signature"])
	return ok, params["mchid"]
}

func (s *stubV3) requests() []recorded {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]recorded(nil), s.reqs...)
}

// v3Config is a v3 config trusting the stub's platform certificate.
func v3Config(t testing.TB, baseURL string) wechat.Config {
	k := getKeys(t)
	return wechat.Config{
		BaseURL:       baseURL,
		MchID:         "1900000109",
		PrivateKey:    k.merchant,
		CertSerial:    k.merchantSerial,
		PlatformCerts: []*x509.Certificate{k.platformCert},
		Timeout:       5 * time.Second,
	}
}

// v2SignTest is an independent implementation of the v2 sign for stubs.
func v2SignTest(fields map[string]string, key, signType string) string {
	var names []string
	for k, v := range fields {
		if k != "sign" && v != "" {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	var b strings.Builder
	for _, k := range names {
		b.WriteString(k + "=" + fields[k] + "&")
	}
	b.WriteString("key=" + key)
	if signType == "HMAC-SHA256" {
		m := hmac.New(sha256.New, []byte(key))
		m.Write([]byte(b.String()))
		return strings.ToUpper(hex.EncodeToString(m.Sum(nil)))
	}
	sum := md5.Sum([]byte(b.String()))
	return strings.ToUpper(hex.EncodeToString(sum[:]))
}

func v2XML(fields map[string]string) string {
	var names []string
	for k := range fields {
		names = append(names, k)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("<xml>")
	for _, k := range names {
		b.WriteString("<" + k + "><![CDATA[" + fields[k] + "]]></" + k + ">")
	}
	b.WriteString("</xml>")
	return b.String()
}

func errorAs(t testing.TB, err error) *wechat.Error {
	t.Helper()
	if err == nil {
		t.Fatal("want an error, got nil")
	}
	var we *wechat.Error
	if !errors.As(err, &we) {
		t.Fatalf("error %v is %T, want *wechat.Error", err, err)
	}
	return we
}
