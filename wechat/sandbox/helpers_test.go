package sandbox_test

// A minimal, independent WeChat Pay test client: it signs v3 requests and
// v2 XML and verifies responses, written from the protocol document only.
// It deliberately does not use package wechat (whose correctness the
// sandbox exists to check) nor the sandbox's own signing code.

import (
	"bytes"
	"context"
	"crypto"
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxclose/wxclose/wechat/sandbox"
)

var (
	credsOnce   sync.Once
	sharedCreds *sandbox.Credentials
	credsErr    error
)

// testCreds returns credentials generated once per test binary: RSA key
// generation is too slow to repeat in every test.
func testCreds(t testing.TB) *sandbox.Credentials {
	t.Helper()
	credsOnce.Do(func() { sharedCreds, credsErr = sandbox.GenerateCredentials("", "") })
	if credsErr != nil {
		t.Fatal(credsErr)
	}
	c := *sharedCreds
	return &c
}

// clock is a settable sandbox and client clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// bundle is one fresh sandbox behind a real HTTP server plus a client for it.
type bundle struct {
	s     *sandbox.Server
	ts    *httptest.Server
	clock *clock
	creds sandbox.Credentials
	c     *client
}

func setup(t *testing.T, opts sandbox.Options) *bundle {
	t.Helper()
	clk := &clock{t: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)}
	if opts.Now == nil {
		opts.Now = clk.Now
	}
	if opts.Credentials == nil {
		opts.Credentials = testCreds(t)
	}
	s, err := sandbox.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	creds := s.Credentials()
	return &bundle{s: s, ts: ts, clock: clk, creds: creds, c: newClient(t, ts.URL, creds, opts.Now)}
}

// addAged registers an unpaid order created an hour ago (old enough to close).
func (b *bundle) addAged(no string, st sandbox.State) {
	b.s.AddOrder(sandbox.Order{OutTradeNo: no, TransactionID: "42" + no, CreatedAt: b.clock.Now().Add(-time.Hour), State: st})
}

type client struct {
	base     string
	mchid    string
	serial   string
	key      *rsa.PrivateKey
	apiKey   string
	appid    string
	platform *rsa.PublicKey
	now      func() time.Time
	hc       *http.Client
}

func newClient(t testing.TB, base string, c sandbox.Credentials, now func() time.Time) *client {
	t.Helper()
	blk, _ := pem.Decode(c.MerchantPrivateKeyPEM)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		t.Fatal("merchant key is not a PKCS#8 PEM")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return &client{
		base: base, mchid: c.MchID, serial: c.MerchantCertSerial, key: k.(*rsa.PrivateKey),
		apiKey: c.APIKey, appid: c.AppID, platform: certKey(t, c.PlatformCertPEM), now: now,
		hc: &http.Client{},
	}
}

func certKey(t testing.TB, p []byte) *rsa.PublicKey {
	t.Helper()
	blk, _ := pem.Decode(p)
	if blk == nil {
		t.Fatal("not PEM")
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert.PublicKey.(*rsa.PublicKey)
}

// auth is the Authorization content; tests spoil individual fields.
type auth struct {
	scheme, mchid, nonce, timestamp, serial, signature string
	// signed, if set, is signed instead of the correct message.
	signed string
	// reorder lists parameters in a different order.
	reorder bool
	// key signs instead of the merchant key.
	key *rsa.PrivateKey
}

func (a auth) header() string {
	p := []string{
		`mchid="` + a.mchid + `"`, `nonce_str="` + a.nonce + `"`, `timestamp="` + a.timestamp + `"`,
		`serial_no="` + a.serial + `"`, `signature="` + a.signature + `"`,
	}
	if a.reorder {
		p = []string{p[0], p[3], p[2], p[1], p[4]}
	}
	return a.scheme + " " + strings.Join(p, ",")
}

func rsaSign(t testing.TB, key *rsa.PrivateKey, msg string) string {
	t.Helper()
	sum := sha256.Sum256([]byte(msg))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(sig)
}

// response is a received reply.
type response struct {
	status int
	header http.Header
	body   []byte
}

// v3 sends a signed v3 request; spoil may change the auth before signing
// (fields it sets are kept) and the header after.
func (c *client) v3(t testing.TB, ctx context.Context, method, path string, body []byte, spoil func(*auth)) (response, error) {
	t.Helper()
	a := auth{
		scheme: "WECHATPAY2-SHA256-RSA2048", mchid: c.mchid, serial: c.serial,
		nonce: randNonce(), timestamp: strconv.FormatInt(c.now().Unix(), 10), key: c.key,
	}
	if spoil != nil {
		spoil(&a)
	}
	if a.signature == "" {
		msg := a.signed
		if msg == "" {
			msg = method + "\n" + path + "\n" + a.timestamp + "\n" + a.nonce + "\n" + string(body) + "\n"
		}
		a.signature = rsaSign(t, a.key, msg)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if a.scheme != "-" {
		req.Header.Set("Authorization", a.header())
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "sandbox-test/1")
	return c.do(req)
}

func (c *client) do(req *http.Request) (response, error) {
	resp, err := c.hc.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, err
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

// close sends a v3 close for out_trade_no with the common-mode body.
func (c *client) close(t testing.TB, no string) response {
	t.Helper()
	r, err := c.v3(t, context.Background(), "POST", "/v3/global/transactions/out-trade-no/"+no+"/close", []byte(`{"mchid":"`+c.mchid+`"}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func randNonce() string {
	b := make([]byte, 16)
	rand.Read(b)
	return strings.ToUpper(hex.EncodeToString(b))
}

// verifyV3 checks a response signature the way a client must: the
// Wechatpay-* headers over TS\nNONCE\nBODY\n with the given key.
func verifyV3(r response, pub *rsa.PublicKey) error {
	ts, nonce, sig := r.header.Get("Wechatpay-Timestamp"), r.header.Get("Wechatpay-Nonce"), r.header.Get("Wechatpay-Signature")
	if ts == "" || nonce == "" || sig == "" || r.header.Get("Wechatpay-Serial") == "" {
		return errors.New("missing Wechatpay-* headers")
	}
	raw, err := base64.StdEncoding.DecodeString(sig)
	if err != nil {
		return err
	}
	sum := sha256.Sum256([]byte(ts + "\n" + nonce + "\n" + string(r.body) + "\n"))
	return rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], raw)
}

// wxCode extracts the v3 error code from a JSON error body.
func wxCode(r response) string {
	var e struct {
		Code string `json:"code"`
	}
	if err := jsonUnmarshal(r.body, &e); err != nil {
		return "<non-json>"
	}
	return e.Code
}

// ---- v2 ----

func v2Sign(fields map[string]string, key, signType string) string {
	keys := make([]string, 0, len(fields))
	for k, v := range fields {
		if k != "sign" && v != "" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%s&", k, fields[k])
	}
	b.WriteString("key=" + key)
	h := md5.New()
	if signType == "HMAC-SHA256" {
		h = hmac.New(sha256.New, []byte(key))
	}
	h.Write([]byte(b.String()))
	return strings.ToUpper(hex.EncodeToString(h.Sum(nil)))
}

func toXML(fields map[string]string) []byte {
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b bytes.Buffer
	b.WriteString("<xml>")
	for _, k := range keys {
		b.WriteString("<" + k + ">")
		_ = xml.EscapeText(&b, []byte(fields[k])) // a bytes.Buffer never fails
		b.WriteString("</" + k + ">")
	}
	b.WriteString("</xml>")
	return b.Bytes()
}

func parseXML(b []byte) (map[string]string, error) {
	dec := xml.NewDecoder(bytes.NewReader(b))
	out := map[string]string{}
	depth, cur := 0, ""
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			if depth != 0 || len(out) == 0 {
				return nil, errors.New("incomplete xml")
			}
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			depth++
			if depth == 2 {
				cur = t.Name.Local
				out[cur] = ""
			}
		case xml.EndElement:
			depth--
		case xml.CharData:
			if depth == 2 {
				out[cur] += string(t)
			}
		}
	}
}

// v2 sends a v2 close with the given sign type ("" sends no sign_type and
// signs with MD5). edit may change the fields after signing.
func (c *client) v2(t testing.TB, no, signType string, edit func(map[string]string)) (response, map[string]string) {
	t.Helper()
	f := map[string]string{"appid": c.appid, "mch_id": c.mchid, "out_trade_no": no, "nonce_str": randNonce()}
	if signType != "" {
		f["sign_type"] = signType
	}
	f["sign"] = v2Sign(f, c.apiKey, signType)
	if edit != nil {
		edit(f)
	}
	return c.v2Raw(t, toXML(f))
}

func (c *client) v2Raw(t testing.TB, body []byte) (response, map[string]string) {
	t.Helper()
	req, err := http.NewRequest("POST", c.base+"/pay/closeorder", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "text/xml")
	r, err := c.do(req)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := parseXML(r.body)
	return r, m
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

func verifyMsg(pub *rsa.PublicKey, msg, sigB64 string) error {
	raw, err := base64.StdEncoding.DecodeString(sigB64)
	if err != nil {
		return err
	}
	sum := sha256.Sum256([]byte(msg))
	return rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], raw)
}
