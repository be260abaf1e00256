package wechat

import (
	"bytes"
	"context"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/wxclose/wxclose/internal/ids"
)

// V3Client closes and queries orders with WeChat Pay API v3 (JSON,
// SHA256-RSA2048). Create it with New or NewV3; it is safe for concurrent
// use.
//
// # Which responses are verified
//
// Every response that can become an Outcome or a QueryResult is verified
// before it is believed: the 204 success, the ORDERCLOSED, ORDERPAID and
// ORDER_NOT_EXIST replies (and a 404 without a WeChat error code), and every
// Query Order answer that reports a state. Its Wechatpay-Timestamp, -Nonce,
// -Signature and -Serial headers must be present, the timestamp less than 5
// minutes (300 s, as the official SDK checks) before or after Config.Now,
// the serial one of the trusted keys (see below), and the SHA256withRSA
// signature valid over "TIMESTAMP\nNONCE\nBODY\n".
//
// A Close Order answer that would end the close but does not verify is not
// believed, and not simply retried either: Close confirms it with a signed
// Query Order call and acts on the signed trade_state (see Close). A Query
// Order answer that does not verify is never believed; Close then returns a
// ClassRetryable *Error wrapping ErrUntrustedResponse, with the code the
// close answer claimed in Code.
//
// Error replies that can only lead to a retry or a permanent error
// (SYSTEM_ERROR, RATE_LIMITED, PARAM_ERROR, 5xx and so on) are classified
// even when they are not signed, as the official SDKs do: WeChat Pay does
// not reliably sign error bodies, and believing a forged one can at worst
// delay a close or stop it for a person to look at, never book an order as
// closed or paid.
//
// # Trusted keys
//
// Responses are verified with Config.PlatformCerts (each under its own
// serial), Config.PublicKey (under Config.PublicKeyID) and, when
// Config.APIv3Key is set, platform certificates downloaded from
// /v3/global/certificates (/hk/v3/certificates for PathHK). A certificate,
// configured or downloaded, verifies nothing outside its validity period
// (NotBefore to NotAfter by Config.Now).
//
// Downloads happen lazily inside Close and Query, with no background
// goroutine: before a call when the last download is older than
// Config.CertRefreshInterval, and once more (at most once a minute) when a
// response names a serial the client does not know, which is how a platform
// certificate rotation shows up.
//
// A download must be signed by a key the client already trusts: a
// configured certificate or public key, or a certificate from an earlier
// verified download, valid now. Certificates that only the download itself
// vouches for are not trusted, so a list signed by a certificate inside it
// (self-signed by anyone who knows the APIv3 key) is rejected. WeChat Pay
// publishes a new platform certificate 24 hours before it signs with it, so
// a client that refreshes more often than that learns it from a list signed
// by the old one.
//
// The one exception is bootstrap: when neither PlatformCerts nor PublicKey
// is configured and no downloaded certificate is valid (before the first
// download, or after every downloaded certificate expired), a download may
// be verified by a certificate it contains, as the official SDKs do. The
// trust then rests on the APIv3 key, whose AES-256-GCM encryption of every
// certificate in the list authenticates it (no one without the key can
// produce a list that decrypts), and on the TLS connection to WeChat Pay;
// configure PlatformCerts or PublicKey to pin the first download too.
//
// A download that fails, does not decrypt or does not verify changes
// nothing: the client keeps the keys it trusted, calls
// Hooks.CertificateRefreshFailed and tries again at most once a minute. A
// Close or Query that cannot proceed because of it fails with a
// ClassRetryable *Error wrapping ErrCertificateDownload, never a permanent
// one.
type V3Client struct {
	common
	pathStyle    PathStyle
	key          *rsa.PrivateKey
	certSerial   string
	apiv3Key     []byte // nil: no certificate download
	refreshEvery time.Duration
	publicKeyID  string
	static       map[string]trustedKey // by normalizeSerial
	certsURL     string

	sem chan struct{} // one certificate download at a time

	mu          sync.Mutex
	downloaded  map[string]trustedKey
	gen         uint64 // successful downloads so far
	fetchedAt   time.Time
	lastAttempt time.Time // last failed download not caused by the caller's context
	lastErr     *Error    // its error
	lastUnknown time.Time // last download triggered by an unknown serial
}

type trustedKey struct {
	serial    string // as announced (upper-case)
	pub       *rsa.PublicKey
	notBefore time.Time // zero: no bound (a public key has none)
	notAfter  time.Time
}

// validAt reports whether the key may verify anything at t.
func (k trustedKey) validAt(t time.Time) bool {
	return (k.notBefore.IsZero() || !t.Before(k.notBefore)) && (k.notAfter.IsZero() || !t.After(k.notAfter))
}

// invalidReason says why a key that is not validAt(t) is not used.
func (k trustedKey) invalidReason(t time.Time) string {
	if !k.notAfter.IsZero() && t.After(k.notAfter) {
		return fmt.Sprintf("certificate %s expired at %s", k.serial, k.notAfter.UTC().Format(time.RFC3339))
	}
	return fmt.Sprintf("certificate %s is not valid before %s", k.serial, k.notBefore.UTC().Format(time.RFC3339))
}

// NewV3 validates cfg for API v3 and returns the client. Most callers use
// New; NewV3 gives access to RefreshCertificates without a type assertion.
// Configuration errors are *ConfigError and name the field.
func NewV3(cfg Config) (*V3Client, error) {
	if cfg.API != "" && cfg.API != APIv3 {
		return nil, configError("API", "must be %q or empty for NewV3, not %q", APIv3, cfg.API)
	}
	cm, err := newCommon(cfg)
	if err != nil {
		return nil, err
	}
	c := &V3Client{common: cm, sem: make(chan struct{}, 1), static: map[string]trustedKey{}}
	switch cfg.PathStyle {
	case "", PathGlobal:
		c.pathStyle = PathGlobal
		c.certsURL = c.baseStr + "/v3/global/certificates"
	case PathHK:
		c.pathStyle = PathHK
		c.certsURL = c.baseStr + "/hk/v3/certificates"
	default:
		return nil, configError("PathStyle", "must be %q or %q, not %q", PathGlobal, PathHK, cfg.PathStyle)
	}
	if cfg.PrivateKey == nil {
		return nil, configError("PrivateKey", "is required for API v3 (load apiclient_key.pem with LoadPrivateKeyFile)")
	}
	if err := checkRSAKeySize(rsaBits(&cfg.PrivateKey.PublicKey), "PrivateKey", ""); err != nil {
		return nil, err
	}
	c.key = cfg.PrivateKey
	if cfg.CertSerial == "" {
		return nil, configError("CertSerial", "is required for API v3 (the merchant API certificate serial, openssl x509 -noout -serial)")
	}
	if !ids.ValidCertSerial(cfg.CertSerial) {
		return nil, configError("CertSerial", "%s", ids.CertSerialRule)
	}
	c.certSerial = strings.ToUpper(cfg.CertSerial)
	for i, pc := range cfg.PlatformCerts {
		if pc == nil {
			return nil, configError("PlatformCerts", "[%d] is nil", i)
		}
		pub, ok := pc.PublicKey.(*rsa.PublicKey)
		if !ok {
			return nil, configError("PlatformCerts", "[%d] (serial %s) does not hold an RSA public key", i, CertificateSerial(pc))
		}
		if err := checkRSAKeySize(rsaBits(pub), "PlatformCerts", fmt.Sprintf("[%d] ", i)); err != nil {
			return nil, err
		}
		// An expired or not yet valid certificate is kept: it is simply
		// not used outside its validity period, and a file listing an old
		// certificate next to the current one must not stop the worker.
		s := CertificateSerial(pc)
		c.static[normalizeSerial(s)] = trustedKey{serial: s, pub: pub, notBefore: pc.NotBefore, notAfter: pc.NotAfter}
	}
	switch {
	case cfg.PublicKey != nil && cfg.PublicKeyID == "":
		return nil, configError("PublicKeyID", "is required with a WeChat Pay public key (the PUB_KEY_ID_... shown next to the key)")
	case cfg.PublicKey == nil && cfg.PublicKeyID != "":
		return nil, configError("PublicKey", "is required with a public key ID (load pub_key.pem with LoadPublicKeyFile)")
	case cfg.PublicKey != nil:
		if !ids.ValidPublicKeyID(cfg.PublicKeyID) {
			return nil, configError("PublicKeyID", "%s", ids.PublicKeyIDRule)
		}
		if err := checkRSAKeySize(rsaBits(cfg.PublicKey), "PublicKey", ""); err != nil {
			return nil, err
		}
		c.publicKeyID = cfg.PublicKeyID
		c.static[normalizeSerial(cfg.PublicKeyID)] = trustedKey{serial: cfg.PublicKeyID, pub: cfg.PublicKey}
	}
	if cfg.APIv3Key != "" {
		if len(cfg.APIv3Key) != 32 {
			return nil, configError("APIv3Key", "must be exactly 32 bytes (it is %d)", len(cfg.APIv3Key))
		}
		c.apiv3Key = []byte(cfg.APIv3Key)
	}
	if len(c.static) == 0 && c.apiv3Key == nil {
		return nil, configError("PlatformCerts", "is empty and neither a WeChat Pay public key nor an APIv3 key is set: API v3 needs at least one of the three to verify responses")
	}
	switch {
	case cfg.CertRefreshInterval < 0:
		return nil, configError("CertRefreshInterval", "must not be negative (it is %s)", cfg.CertRefreshInterval)
	case cfg.CertRefreshInterval == 0:
		c.refreshEvery = defaultCertRefresh
	default:
		c.refreshEvery = cfg.CertRefreshInterval
	}
	return c, nil
}

// Close asks WeChat Pay to close the order. See V3Client for how responses
// are verified; see Closer for the error contract.
//
// When an answer that would end the close (204, ORDERCLOSED, ORDERPAID,
// ORDER_NOT_EXIST or a bare 404) does not verify, Close asks Query Order and
// acts on its signed answer instead; see Querier for the mapping. The
// Outcome then has ConfirmedByQuery set.
func (c *V3Client) Close(ctx context.Context, req CloseRequest) (Outcome, error) {
	rawURL, body, mchID, rerr := c.buildClose(req)
	if rerr != nil {
		return Outcome{}, rerr
	}
	if err := c.ensureKeys(ctx); err != nil {
		return Outcome{}, err
	}
	resp, err := c.do(ctx, http.MethodPost, rawURL, body, mchID)
	if err != nil {
		return Outcome{}, err
	}
	v := c.classify(ctx, resp.status, resp.header, resp.body)
	c.reportClock(resp.sent, resp.received, resp.header, v.signedAt)
	if v.claim != 0 {
		return confirmByQuery(ctx, c, req, v.claim, v.err)
	}
	if v.err != nil {
		return Outcome{}, v.err
	}
	return v.out, nil
}

// Query asks WeChat Pay for the order's state (Query Order). Only a signed
// answer about the same order is reported; see Querier.
func (c *V3Client) Query(ctx context.Context, req CloseRequest) (QueryResult, error) {
	rawURL, mchID, rerr := c.buildQuery(req)
	if rerr != nil {
		return QueryResult{}, rerr
	}
	if err := c.ensureKeys(ctx); err != nil {
		return QueryResult{}, err
	}
	resp, err := c.do(ctx, http.MethodGet, rawURL, nil, mchID)
	if err != nil {
		return QueryResult{}, err
	}
	res, signedAt, qerr := c.interpretQuery(ctx, req, resp.status, resp.header, resp.body)
	c.reportClock(resp.sent, resp.received, resp.header, signedAt)
	if qerr != nil {
		return QueryResult{}, qerr
	}
	return res, nil
}

// RefreshCertificates downloads the platform certificates now and replaces
// the downloaded set. Call it at start-up to fail fast on a wrong APIv3 key
// (errors.Is(err, ErrCertificateDecrypt)), merchant key or serial. Without
// Config.APIv3Key there is nothing to download and it returns nil. Errors
// are *Error wrapping ErrCertificateDownload; the certificates trusted
// before are kept.
func (c *V3Client) RefreshCertificates(ctx context.Context) error {
	if c.apiv3Key == nil {
		return nil
	}
	c.mu.Lock()
	gen := c.gen
	c.mu.Unlock()
	if err := c.refresh(ctx, gen); err != nil {
		return err
	}
	return nil
}

// orderPath returns the transactions path naming the order, without a
// suffix, and the merchant that asks.
func (c *V3Client) orderPath(req CloseRequest) (path, mchID string, err *Error) {
	switch {
	case req.OutTradeNo != "" && req.TransactionID != "":
		return "", "", invalidRequest("set only one of CloseRequest.OutTradeNo and CloseRequest.TransactionID")
	case req.OutTradeNo == "" && req.TransactionID == "":
		return "", "", invalidRequest("CloseRequest.OutTradeNo or CloseRequest.TransactionID is required")
	}
	mchID = req.MchID
	if mchID == "" {
		mchID = c.mchID
	}
	if !ids.ValidMchID(mchID) {
		return "", "", invalidRequest("CloseRequest.MchID %s", ids.MchIDRule)
	}
	if req.SubMchID != "" && !ids.ValidMchID(req.SubMchID) {
		return "", "", invalidRequest("CloseRequest.SubMchID %s", ids.MchIDRule)
	}
	path = "/v3/global/transactions"
	if c.pathStyle == PathHK {
		path = "/hk/v3/transactions"
	}
	// The rules also keep the number intact in a URL path (no '/', no
	// "..", which servers would clean away); PathEscape stays as a second
	// line of defence.
	if req.OutTradeNo != "" {
		if !ids.ValidOutTradeNo(req.OutTradeNo) {
			return "", "", invalidRequest("CloseRequest.OutTradeNo %s", ids.OutTradeNoRule)
		}
		return path + "/out-trade-no/" + url.PathEscape(req.OutTradeNo), mchID, nil
	}
	if !ids.ValidTransactionID(req.TransactionID) {
		return "", "", invalidRequest("CloseRequest.TransactionID %s", ids.TransactionIDRule)
	}
	return path + "/id/" + url.PathEscape(req.TransactionID), mchID, nil
}

func (c *V3Client) buildClose(req CloseRequest) (rawURL string, body []byte, mchID string, err *Error) {
	path, mchID, err := c.orderPath(req)
	if err != nil {
		return "", nil, "", err
	}
	var v any = struct {
		MchID string `json:"mchid"`
	}{mchID}
	if req.SubMchID != "" {
		v = struct {
			SpMchID  string `json:"sp_mchid"`
			SubMchID string `json:"sub_mchid"`
		}{mchID, req.SubMchID}
	}
	b, jerr := json.Marshal(v)
	if jerr != nil { // cannot happen for two strings; kept so a future field cannot panic
		return "", nil, "", invalidRequest("encode request body: %v", jerr)
	}
	return c.baseStr + path + "/close", b, mchID, nil
}

// buildQuery returns the Query Order URL: GET .../out-trade-no/{no} or
// .../id/{id} with ?mchid=... in common mode and ?sub_mchid=...&sp_mchid=...
// in institutional mode (the order of WeChat Pay's example; the signature
// covers the query string exactly as sent).
func (c *V3Client) buildQuery(req CloseRequest) (rawURL, mchID string, err *Error) {
	path, mchID, err := c.orderPath(req)
	if err != nil {
		return "", "", err
	}
	q := "?mchid=" + url.QueryEscape(mchID)
	if req.SubMchID != "" {
		q = "?sub_mchid=" + url.QueryEscape(req.SubMchID) + "&sp_mchid=" + url.QueryEscape(mchID)
	}
	return c.baseStr + path + q, mchID, nil
}

// v3Response is one received response and when it was sent and received
// by Config.Now, for Hooks.ServerClock.
type v3Response struct {
	status         int
	header         http.Header
	body           []byte
	sent, received time.Time
}

// do signs and sends one request and reads the response. Each call signs
// afresh: WeChat Pay rejects stale timestamps, so a retry must never reuse an
// old signature.
func (c *V3Client) do(ctx context.Context, method, rawURL string, body []byte, mchID string) (v3Response, *Error) {
	var hreq *http.Request
	var err error
	if body != nil {
		hreq, err = http.NewRequestWithContext(ctx, method, rawURL, bytes.NewReader(body))
	} else {
		hreq, err = http.NewRequestWithContext(ctx, method, rawURL, nil)
	}
	if err != nil {
		return v3Response{}, invalidRequest("build request: %v", err)
	}
	sent := c.now()
	ts := strconv.FormatInt(sent.Unix(), 10)
	nonce := newNonce()
	sig, err := SignV3(c.key, BuildV3Message(method, hreq.URL.RequestURI(), ts, nonce, body))
	if err != nil {
		return v3Response{}, &Error{Class: ClassPermanent, Message: "sign request with Config.PrivateKey failed", Err: ErrInvalidConfig}
	}
	hreq.Header.Set("Authorization", AuthorizationHeader(mchID, nonce, ts, c.certSerial, sig))
	hreq.Header.Set("Accept", "application/json")
	if body != nil {
		hreq.Header.Set("Content-Type", "application/json")
	}
	hreq.Header.Set("User-Agent", c.userAgent)
	if s := c.announceSerial(); s != "" {
		hreq.Header.Set("Wechatpay-Serial", s)
	}
	resp, err := c.http.Do(hreq)
	if err != nil {
		return v3Response{}, transportError(err)
	}
	received := c.now()
	defer resp.Body.Close()
	b, err := readBody(resp.Body, resp.ContentLength)
	if err != nil {
		e := transportError(err)
		e.HTTPStatus = resp.StatusCode
		e.RequestID = resp.Header.Get("Request-ID")
		return v3Response{}, e
	}
	return v3Response{status: resp.StatusCode, header: resp.Header, body: b, sent: sent, received: received}, nil
}

// v3Outcomes are the codes that end the order's life. They are acted on
// only after the response verified.
var v3Outcomes = map[string]Result{
	"ORDERCLOSED":     ResultAlreadyClosed,
	"ORDERPAID":       ResultPaid,
	"ORDER_NOT_EXIST": ResultNotFound,
	"ORDERNOTEXIST":   ResultNotFound,
}

// apiErrorClasses classify error codes of both generations, whatever the
// HTTP status they come with.
var apiErrorClasses = map[string]Class{
	"SYSTEMERROR":         ClassRetryable,
	"SYSTEM_ERROR":        ClassRetryable,
	"SERVICE_UNAVAILABLE": ClassRetryable,
	"RATE_LIMITED":        ClassRateLimited,
	"FREQUENCY_LIMITED":   ClassRateLimited,
	"PARAM_ERROR":         ClassPermanent,
	"INVALID_REQUEST":     ClassPermanent,
	"SIGN_ERROR":          ClassPermanent,
	"SIGNERROR":           ClassPermanent,
	"NO_AUTH":             ClassPermanent,
	"REQUIRE_POST_METHOD": ClassPermanent,
	"XML_FORMAT_ERROR":    ClassPermanent,
}

// verdict is what one close answer says, before any confirmation.
type verdict struct {
	out Outcome
	err *Error
	// claim is the final result an answer that did not verify claimed; err
	// then wraps ErrUntrustedResponse. Zero otherwise.
	claim Result
	// signedAt is the verified Wechatpay-Timestamp, 0 if none verified.
	signedAt int64
}

// interpret turns a received v3 close response into an Outcome or *Error,
// without confirming unverified final answers (Close does that).
func (c *V3Client) interpret(ctx context.Context, status int, h http.Header, body []byte) (Outcome, error) {
	v := c.classify(ctx, status, h, body)
	if v.err != nil {
		return Outcome{}, v.err
	}
	return v.out, nil
}

// apiError reads a v3 error body {"code","message"}.
func apiError(body []byte) (code, msg string, ok bool) {
	var e struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	if len(body) == 0 || json.Unmarshal(body, &e) != nil || strings.TrimSpace(e.Code) == "" {
		return "", "", false
	}
	return clip(strings.TrimSpace(e.Code), 64), clip(e.Message, 512), true
}

// classify decides what a v3 close response means.
func (c *V3Client) classify(ctx context.Context, status int, h http.Header, body []byte) verdict {
	reqID := clip(h.Get("Request-ID"), 128)
	code, msg, hasCode := apiError(body)

	newErr := func(class Class, message string, cause error) *Error {
		e := &Error{Class: class, Code: code, Message: message, HTTPStatus: status, RequestID: reqID, Err: cause}
		if class != ClassPermanent {
			e.RetryAfter = parseRetryAfter(h.Get("Retry-After"), c.now())
		}
		return e
	}
	// verified returns the outcome only if the response is authentic.
	verified := func(r Result) verdict {
		sec, err := c.verifyResponse(ctx, h, body)
		if err != nil {
			claim := "success"
			if code != "" {
				claim = code
			} else if r == ResultNotFound {
				claim = "not found"
			}
			return verdict{claim: r, err: newErr(ClassRetryable, "response claimed "+claim+" but was not trusted; retry (never treat it as closed)", err)}
		}
		return verdict{out: Outcome{Result: r, Code: code, Message: msg, HTTPStatus: status, RequestID: reqID}, signedAt: sec}
	}
	fail := func(class Class, message string, cause error) verdict {
		return verdict{err: newErr(class, message, cause)}
	}

	if !hasCode {
		code, msg = "", ""
		switch {
		case status == http.StatusNoContent:
			return verified(ResultClosed)
		case status >= 200 && status < 300:
			return fail(ClassRetryable, fmt.Sprintf("unexpected HTTP %d reply to close (want 204 or a WeChat error code)", status), ErrMalformedResponse)
		case status == http.StatusNotFound:
			return verified(ResultNotFound)
		case status >= 300 && status < 400:
			return fail(ClassPermanent, fmt.Sprintf("unexpected redirect to %q; check Config.BaseURL", redactURL(h.Get("Location"))), nil)
		}
		return fail(classByStatus(status), fmt.Sprintf("HTTP %d without a WeChat Pay error code", status), nil)
	}
	if r, ok := v3Outcomes[code]; ok {
		return verified(r)
	}
	class, known := apiErrorClasses[code]
	if !known {
		switch {
		case status >= 200 && status < 300:
			return fail(ClassRetryable, "unexpected error code in a 2xx reply: "+msg, ErrMalformedResponse)
		case status >= 300 && status < 400:
			class = ClassPermanent
		default:
			class = classByStatus(status)
		}
	}
	return fail(class, msg, nil)
}

// queryAnswer is the part of a v3 Query Order answer the client uses.
type queryAnswer struct {
	MchID          string `json:"mchid"`
	SpMchID        string `json:"sp_mchid"`
	SubMchID       string `json:"sub_mchid"`
	OutTradeNo     string `json:"out_trade_no"`
	TransactionID  string `json:"transaction_id"`
	TradeState     string `json:"trade_state"`
	TradeStateDesc string `json:"trade_state_desc"`
}

// interpretQuery turns a v3 Query Order response into a QueryResult or
// *Error. It also returns the verified Wechatpay-Timestamp (0 if none).
func (c *V3Client) interpretQuery(ctx context.Context, req CloseRequest, status int, h http.Header, body []byte) (QueryResult, int64, *Error) {
	reqID := clip(h.Get("Request-ID"), 128)
	code, msg, hasCode := apiError(body)
	newErr := func(class Class, message string, cause error) *Error {
		e := &Error{Class: class, Code: code, Message: "Query Order: " + message, HTTPStatus: status, RequestID: reqID, Err: cause}
		if class != ClassPermanent {
			e.RetryAfter = parseRetryAfter(h.Get("Retry-After"), c.now())
		}
		return e
	}
	untrusted := func(what string, err error) *Error {
		return newErr(ClassRetryable, "answer claimed "+what+" but was not trusted", err)
	}
	notFound := (status == http.StatusNotFound && !hasCode) || code == "ORDER_NOT_EXIST" || code == "ORDERNOTEXIST"
	switch {
	case status == http.StatusOK && !hasCode:
		sec, err := c.verifyResponse(ctx, h, body)
		if err != nil {
			return QueryResult{}, 0, untrusted("a trade state", err)
		}
		var a queryAnswer
		if json.Unmarshal(body, &a) != nil || a.TradeState == "" {
			return QueryResult{}, sec, newErr(ClassRetryable, "answer has no trade_state", ErrMalformedResponse)
		}
		mch := a.MchID
		if req.SubMchID != "" {
			mch = a.SpMchID
		}
		if e := checkQueryBinding(req, c.mchID, a.OutTradeNo, a.TransactionID, mch, a.SubMchID); e != "" {
			return QueryResult{}, sec, newErr(ClassRetryable, e, ErrUntrustedResponse)
		}
		return QueryResult{
			TradeState: clip(a.TradeState, 32), TradeStateDesc: clip(a.TradeStateDesc, 256),
			OutTradeNo: clip(a.OutTradeNo, 64), TransactionID: clip(a.TransactionID, 64),
			HTTPStatus: status, RequestID: reqID,
		}, sec, nil
	case notFound:
		sec, err := c.verifyResponse(ctx, h, body)
		if err != nil {
			return QueryResult{}, 0, untrusted("the order does not exist", err)
		}
		return QueryResult{NotFound: true, Code: code, TradeStateDesc: msg, HTTPStatus: status, RequestID: reqID}, sec, nil
	case status >= 200 && status < 300:
		return QueryResult{}, 0, newErr(ClassRetryable, fmt.Sprintf("unexpected HTTP %d reply (want 200 with a trade_state)", status), ErrMalformedResponse)
	case status >= 300 && status < 400:
		return QueryResult{}, 0, newErr(ClassPermanent, fmt.Sprintf("unexpected redirect to %q; check Config.BaseURL", redactURL(h.Get("Location"))), nil)
	case !hasCode:
		return QueryResult{}, 0, newErr(classByStatus(status), fmt.Sprintf("HTTP %d without a WeChat Pay error code", status), nil)
	}
	class, known := apiErrorClasses[code]
	if !known {
		class = classByStatus(status)
	}
	return QueryResult{}, 0, newErr(class, msg, nil)
}

// verifyResponse checks the Wechatpay-* signature of a response and returns
// its timestamp. Errors wrap ErrUntrustedResponse and say why, never quoting
// more than a short prefix of attacker-controlled headers.
func (c *V3Client) verifyResponse(ctx context.Context, h http.Header, body []byte) (int64, error) {
	now := c.now()
	return verifyWith(h, body, now, func(serial string) (*rsa.PublicKey, string) {
		return c.keyFor(ctx, serial, now)
	})
}

// maxSkewSeconds is the timestamp window: like the official Go SDK, a
// response whose timestamp is 300 s or more away from the local clock, in
// either direction, is refused.
const maxSkewSeconds = int64(maxClockSkew / time.Second)

// verifyWith checks the Wechatpay-* headers. lookup returns the trusted key
// for a serial, or nil and why not ("" for an unknown serial).
func verifyWith(h http.Header, body []byte, now time.Time, lookup func(string) (*rsa.PublicKey, string)) (int64, error) {
	ts := h.Get("Wechatpay-Timestamp")
	nonce := h.Get("Wechatpay-Nonce")
	sig := h.Get("Wechatpay-Signature")
	serial := h.Get("Wechatpay-Serial")
	var missing []string
	for _, p := range [...]struct{ name, v string }{
		{"Wechatpay-Timestamp", ts}, {"Wechatpay-Nonce", nonce}, {"Wechatpay-Signature", sig}, {"Wechatpay-Serial", serial},
	} {
		if p.v == "" {
			missing = append(missing, p.name)
		}
	}
	if len(missing) > 0 {
		return 0, fmt.Errorf("%w: missing %s", ErrUntrustedResponse, strings.Join(missing, ", "))
	}
	if st := h.Get("Wechatpay-Signature-Type"); st != "" && st != AuthScheme {
		return 0, fmt.Errorf("%w: unsupported Wechatpay-Signature-Type %q", ErrUntrustedResponse, clip(st, 40))
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: Wechatpay-Timestamp %q is not Unix seconds", ErrUntrustedResponse, clip(ts, 24))
	}
	// Compare whole seconds, as the official SDK does. Bounds around now
	// rather than now-sec: that subtraction could overflow for an absurd sec.
	if n := now.Unix(); sec <= n-maxSkewSeconds || sec >= n+maxSkewSeconds {
		return 0, fmt.Errorf("%w: Wechatpay-Timestamp %d is 5 minutes or more from the local clock (%d); check the clock or a replay", ErrUntrustedResponse, sec, now.Unix())
	}
	pub, why := lookup(serial)
	if pub == nil {
		if why != "" {
			return 0, fmt.Errorf("%w: Wechatpay-Serial %q: %s", ErrUntrustedResponse, clip(serial, 64), why)
		}
		return 0, fmt.Errorf("%w: unknown Wechatpay-Serial %q (not a configured or downloaded platform certificate, nor Config.PublicKeyID)", ErrUntrustedResponse, clip(serial, 64))
	}
	if err := VerifyV3(pub, BuildV3ResponseMessage(ts, nonce, body), sig); err != nil {
		return 0, fmt.Errorf("%w: %w", ErrUntrustedResponse, err)
	}
	return sec, nil
}

// keyFor finds the key for serial, downloading certificates once more if the
// serial is unknown: a rotation announces the new serial only in responses.
// The extra download is rate-limited so that forged serials cannot turn every
// close into two requests.
func (c *V3Client) keyFor(ctx context.Context, serial string, now time.Time) (*rsa.PublicKey, string) {
	if k, why := c.lookup(serial, now); k != nil || why != "" {
		return k, why
	}
	if c.apiv3Key == nil || strings.HasPrefix(strings.ToUpper(serial), "PUB_KEY_ID_") {
		return nil, ""
	}
	c.mu.Lock()
	allowed := c.lastUnknown.IsZero() || now.Sub(c.lastUnknown) >= unknownSerialRateLimit || now.Before(c.lastUnknown)
	// A download that just failed would fail again: one attempt a minute.
	if c.lastErr != nil && now.Sub(c.lastAttempt) < unknownSerialRateLimit && !now.Before(c.lastAttempt) {
		allowed = false
	}
	if allowed {
		c.lastUnknown = now
	}
	gen := c.gen
	c.mu.Unlock()
	if !allowed {
		return nil, ""
	}
	_ = c.refresh(ctx, gen) // a failed download leaves the serial unknown, which is reported
	return c.lookup(serial, c.now())
}

// lookup finds a trusted key valid at now without downloading. A known key
// outside its validity period is returned as nil with the reason.
func (c *V3Client) lookup(serial string, now time.Time) (*rsa.PublicKey, string) {
	n := normalizeSerial(serial)
	k, ok := c.static[n]
	if !ok {
		c.mu.Lock()
		k, ok = c.downloaded[n]
		c.mu.Unlock()
	}
	if !ok {
		return nil, ""
	}
	if !k.validAt(now) {
		return nil, k.invalidReason(now)
	}
	return k.pub, ""
}

// announceSerial picks the Wechatpay-Serial request header: the public key
// ID when configured (WeChat Pay then signs with that key), otherwise the
// newest platform certificate held that is valid now.
func (c *V3Client) announceSerial() string {
	if c.publicKeyID != "" {
		return c.publicKeyID
	}
	now := c.now()
	var best trustedKey
	pick := func(m map[string]trustedKey) {
		for _, k := range m {
			if !k.validAt(now) {
				continue
			}
			if best.serial == "" || k.notBefore.After(best.notBefore) ||
				(k.notBefore.Equal(best.notBefore) && k.serial > best.serial) {
				best = k
			}
		}
	}
	pick(c.static)
	c.mu.Lock()
	pick(c.downloaded)
	c.mu.Unlock()
	return best.serial
}

// hasValidKeyLocked reports whether any trusted key is valid at now.
// c.mu must be held.
func (c *V3Client) hasValidKeyLocked(now time.Time) bool {
	for _, m := range []map[string]trustedKey{c.static, c.downloaded} {
		for _, k := range m {
			if k.validAt(now) {
				return true
			}
		}
	}
	return false
}

// ensureKeys downloads certificates when they are due. A failed download
// does not block calls while a valid key is held; without any the error is
// returned, as nothing could be verified.
func (c *V3Client) ensureKeys(ctx context.Context) *Error {
	if c.apiv3Key == nil {
		return nil
	}
	c.mu.Lock()
	now := c.now()
	due := c.fetchedAt.IsZero() || now.Sub(c.fetchedAt) >= c.refreshEvery || now.Before(c.fetchedAt)
	backoff := c.lastErr != nil && now.Sub(c.lastAttempt) < unknownSerialRateLimit && !now.Before(c.lastAttempt)
	haveKeys := c.hasValidKeyLocked(now)
	lastErr := c.lastErr
	gen := c.gen
	c.mu.Unlock()
	if !due {
		return nil
	}
	if backoff {
		if haveKeys {
			return nil
		}
		return lastErr
	}
	if err := c.refresh(ctx, gen); err != nil && !haveKeys {
		return err
	}
	return nil
}

// refresh downloads certificates unless another download completed since
// the caller looked (gen), so concurrent callers share one download. A
// failure not caused by the caller's context is remembered (for the
// once-a-minute limit) and reported to Hooks.CertificateRefreshFailed.
func (c *V3Client) refresh(ctx context.Context, gen uint64) *Error {
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return transportError(ctx.Err())
	}
	defer func() { <-c.sem }()
	c.mu.Lock()
	done := c.gen != gen
	c.mu.Unlock()
	if done {
		return nil
	}
	certs, err := c.download(ctx)
	if err != nil {
		if ctx.Err() == nil { // the caller giving up says nothing about WeChat Pay
			c.mu.Lock()
			c.lastAttempt = c.now()
			c.lastErr = err
			c.mu.Unlock()
			if f := c.hooks.CertificateRefreshFailed; f != nil {
				f(err)
			}
		}
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.downloaded = certs
	c.gen++
	c.fetchedAt = c.now()
	c.lastErr = nil
	return nil
}

// downloadError marks err as a certificate download failure.
func downloadError(e *Error) *Error {
	if e.Err == nil {
		e.Err = ErrCertificateDownload
	} else {
		e.Err = fmt.Errorf("%w: %w", ErrCertificateDownload, e.Err)
	}
	if !strings.HasPrefix(e.Message, "download platform certificates: ") {
		e.Message = "download platform certificates: " + e.Message
	}
	return e
}

func (c *V3Client) download(ctx context.Context) (map[string]trustedKey, *Error) {
	resp, rerr := c.do(ctx, http.MethodGet, c.certsURL, nil, c.mchID)
	if rerr != nil {
		return nil, downloadError(rerr)
	}
	got, sec, err := c.checkDownload(resp)
	c.reportClock(resp.sent, resp.received, resp.header, sec)
	if err != nil {
		return nil, downloadError(err)
	}
	return got, nil
}

// checkDownload decrypts and verifies a certificate list; see V3Client for
// the trust rules. It returns the verified timestamp (0 if none).
func (c *V3Client) checkDownload(resp v3Response) (map[string]trustedKey, int64, *Error) {
	status, h, body := resp.status, resp.header, resp.body
	reqID := clip(h.Get("Request-ID"), 128)
	if status != http.StatusOK {
		code, msg, _ := apiError(body)
		class, ok := apiErrorClasses[code]
		if !ok {
			class = classByStatus(status)
		}
		e := &Error{Class: class, Code: code, HTTPStatus: status, RequestID: reqID, Message: msg}
		if e.Message == "" {
			e.Message = fmt.Sprintf("HTTP %d", status)
		}
		if class != ClassPermanent {
			e.RetryAfter = parseRetryAfter(h.Get("Retry-After"), c.now())
		}
		return nil, 0, e
	}
	malformed := func(why string) *Error {
		return &Error{Class: ClassRetryable, HTTPStatus: status, RequestID: reqID, Message: why, Err: ErrMalformedResponse}
	}
	var payload struct {
		Data []struct {
			SerialNo           string `json:"serial_no"`
			EncryptCertificate struct {
				Algorithm      string `json:"algorithm"`
				Nonce          string `json:"nonce"`
				AssociatedData string `json:"associated_data"`
				Ciphertext     string `json:"ciphertext"`
			} `json:"encrypt_certificate"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &payload); err != nil {
		return nil, 0, malformed("body is not the certificate list JSON")
	}
	if len(payload.Data) == 0 {
		return nil, 0, malformed("empty certificate list")
	}
	got := make(map[string]trustedKey, len(payload.Data))
	for i, d := range payload.Data {
		ec := d.EncryptCertificate
		if ec.Algorithm != "AEAD_AES_256_GCM" {
			return nil, 0, malformed(fmt.Sprintf("certificate %d uses unsupported algorithm %q", i, clip(ec.Algorithm, 40)))
		}
		pemBytes, err := decryptAEADAES256GCM(c.apiv3Key, ec.Nonce, ec.AssociatedData, ec.Ciphertext)
		if err != nil {
			if errors.Is(err, errAEADAuth) {
				// Retryable: a wrong key is a configuration problem, but so
				// is a tampered list, and neither may end a close.
				return nil, 0, &Error{Class: ClassRetryable, HTTPStatus: status, RequestID: reqID,
					Message: "Config.APIv3Key does not decrypt the platform certificates; check it on the merchant platform (API security)",
					Err:     ErrCertificateDecrypt}
			}
			return nil, 0, malformed(fmt.Sprintf("certificate %d: %v", i, err))
		}
		certs, err := LoadCertificates(pemBytes)
		if err != nil {
			return nil, 0, malformed(fmt.Sprintf("certificate %d: %v", i, err))
		}
		cert := certs[0]
		serial := CertificateSerial(cert)
		if d.SerialNo != "" && normalizeSerial(d.SerialNo) != normalizeSerial(serial) {
			return nil, 0, malformed(fmt.Sprintf("certificate %d: serial_no %q does not match the certificate (%s)", i, clip(d.SerialNo, 64), serial))
		}
		got[normalizeSerial(serial)] = trustedKey{serial: serial, pub: cert.PublicKey.(*rsa.PublicKey), notBefore: cert.NotBefore, notAfter: cert.NotAfter}
	}
	now := c.now()
	c.mu.Lock()
	bootstrap := len(c.static) == 0 && !c.hasValidKeyLocked(now)
	c.mu.Unlock()
	sec, verr := verifyWith(h, body, now, func(serial string) (*rsa.PublicKey, string) {
		if k, why := c.lookup(serial, now); k != nil || why != "" {
			return k, why
		}
		k, ok := got[normalizeSerial(serial)]
		switch {
		case !ok:
			return nil, ""
		case !bootstrap:
			return nil, "is only vouched for by this download itself; a certificate list must be signed by a key already trusted (Config.PlatformCerts, Config.PublicKey or an earlier verified download)"
		case !k.validAt(now):
			return nil, k.invalidReason(now)
		}
		return k.pub, ""
	})
	if verr != nil {
		return nil, 0, &Error{Class: ClassRetryable, HTTPStatus: status, RequestID: reqID,
			Message: "response not trusted", Err: verr}
	}
	return got, sec, nil
}

// clip shortens s to at most n bytes on a rune boundary. WeChat messages and
// headers end up in logs; an unbounded one would flood them.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
