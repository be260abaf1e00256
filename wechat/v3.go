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
)

// V3Client closes orders with WeChat Pay API v3 (JSON, SHA256-RSA2048).
// Create it with New or NewV3; it is safe for concurrent use.
//
// # Which responses are verified
//
// Every response that can become an Outcome is verified before it is
// believed: the 204 success, and the ORDERCLOSED, ORDERPAID and
// ORDER_NOT_EXIST replies (and a 404 without a WeChat error code). Its
// Wechatpay-Timestamp, -Nonce, -Signature and -Serial headers must be
// present, the timestamp within 5 minutes of Config.Now, the serial one of
// the trusted keys, and the SHA256withRSA signature valid over
// "TIMESTAMP\nNONCE\nBODY\n". A response that fails any of these checks is
// returned as a ClassRetryable *Error wrapping ErrUntrustedResponse, with
// the code it claimed in Code; it is never reported as an Outcome.
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
// /v3/global/certificates (/hk/v3/certificates for PathHK). Downloads happen
// lazily inside Close, with no background goroutine: before a call when the
// last download is older than Config.CertRefreshInterval, and once more
// (at most once a minute) when a response names a serial the client does not
// know, which is how a platform certificate rotation shows up.
//
// A download is itself verified, with the keys already held plus the
// certificates it contains, as the official SDKs do. When no certificate is
// configured, the first download therefore trusts the TLS connection to
// WeChat Pay and the APIv3 key (which must decrypt every certificate), not an
// independent signature. Configure PlatformCerts or PublicKey to pin the
// first download too.
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
	notBefore time.Time
}

// NewV3 validates cfg for API v3 and returns the client. Most callers use
// New; NewV3 gives access to RefreshCertificates without a type assertion.
// Configuration errors wrap ErrInvalidConfig and name the field.
func NewV3(cfg Config) (*V3Client, error) {
	if cfg.API != "" && cfg.API != APIv3 {
		return nil, configError("NewV3 needs Config.API %q or empty, not %q", APIv3, cfg.API)
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
		return nil, configError("Config.PathStyle must be %q or %q, not %q", PathGlobal, PathHK, cfg.PathStyle)
	}
	if cfg.PrivateKey == nil {
		return nil, configError("Config.PrivateKey is required for API v3 (load apiclient_key.pem with LoadPrivateKeyFile)")
	}
	if err := checkRSAKeySize(rsaBits(&cfg.PrivateKey.PublicKey), "Config.PrivateKey"); err != nil {
		return nil, err
	}
	c.key = cfg.PrivateKey
	if cfg.CertSerial == "" {
		return nil, configError("Config.CertSerial is required for API v3 (the merchant API certificate serial, openssl x509 -noout -serial)")
	}
	if !isHex(cfg.CertSerial) || len(cfg.CertSerial) > 64 {
		return nil, configError("Config.CertSerial must be the certificate serial in hex")
	}
	c.certSerial = strings.ToUpper(cfg.CertSerial)
	for i, pc := range cfg.PlatformCerts {
		if pc == nil {
			return nil, configError("Config.PlatformCerts[%d] is nil", i)
		}
		pub, ok := pc.PublicKey.(*rsa.PublicKey)
		if !ok {
			return nil, configError("Config.PlatformCerts[%d] (serial %s) does not hold an RSA public key", i, CertificateSerial(pc))
		}
		if err := checkRSAKeySize(rsaBits(pub), fmt.Sprintf("Config.PlatformCerts[%d]", i)); err != nil {
			return nil, err
		}
		s := CertificateSerial(pc)
		c.static[normalizeSerial(s)] = trustedKey{serial: s, pub: pub, notBefore: pc.NotBefore}
	}
	switch {
	case cfg.PublicKey != nil && cfg.PublicKeyID == "":
		return nil, configError("Config.PublicKeyID is required with Config.PublicKey (the PUB_KEY_ID_... shown next to the key)")
	case cfg.PublicKey == nil && cfg.PublicKeyID != "":
		return nil, configError("Config.PublicKey is required with Config.PublicKeyID (load pub_key.pem with LoadPublicKeyFile)")
	case cfg.PublicKey != nil:
		if !safeID(cfg.PublicKeyID) {
			return nil, configError("Config.PublicKeyID must contain only letters, digits, '_' and '-'")
		}
		if err := checkRSAKeySize(rsaBits(cfg.PublicKey), "Config.PublicKey"); err != nil {
			return nil, err
		}
		c.publicKeyID = cfg.PublicKeyID
		c.static[normalizeSerial(cfg.PublicKeyID)] = trustedKey{serial: cfg.PublicKeyID, pub: cfg.PublicKey}
	}
	if cfg.APIv3Key != "" {
		if len(cfg.APIv3Key) != 32 {
			return nil, configError("Config.APIv3Key must be exactly 32 bytes (it is %d)", len(cfg.APIv3Key))
		}
		c.apiv3Key = []byte(cfg.APIv3Key)
	}
	if len(c.static) == 0 && c.apiv3Key == nil {
		return nil, configError("API v3 needs a way to verify responses: set Config.PlatformCerts, Config.PublicKey with PublicKeyID, or Config.APIv3Key (download platform certificates)")
	}
	switch {
	case cfg.CertRefreshInterval < 0:
		return nil, configError("Config.CertRefreshInterval must not be negative")
	case cfg.CertRefreshInterval == 0:
		c.refreshEvery = defaultCertRefresh
	default:
		c.refreshEvery = cfg.CertRefreshInterval
	}
	return c, nil
}

// Close asks WeChat Pay to close the order. See V3Client for how responses
// are verified; see Closer for the error contract.
func (c *V3Client) Close(ctx context.Context, req CloseRequest) (Outcome, error) {
	rawURL, body, mchID, rerr := c.buildClose(req)
	if rerr != nil {
		return Outcome{}, rerr
	}
	if err := c.ensureKeys(ctx); err != nil {
		return Outcome{}, err
	}
	status, header, respBody, err := c.do(ctx, http.MethodPost, rawURL, body, mchID)
	if err != nil {
		return Outcome{}, err
	}
	return c.interpret(ctx, status, header, respBody)
}

// RefreshCertificates downloads the platform certificates now and replaces
// the downloaded set. Call it at start-up to fail fast on a wrong APIv3 key,
// merchant key or serial. Without Config.APIv3Key there is nothing to
// download and it returns nil. Errors are *Error.
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

func (c *V3Client) buildClose(req CloseRequest) (rawURL string, body []byte, mchID string, err *Error) {
	switch {
	case req.OutTradeNo != "" && req.TransactionID != "":
		return "", nil, "", invalidRequest("set only one of CloseRequest.OutTradeNo and CloseRequest.TransactionID")
	case req.OutTradeNo == "" && req.TransactionID == "":
		return "", nil, "", invalidRequest("CloseRequest.OutTradeNo or CloseRequest.TransactionID is required")
	}
	mchID = req.MchID
	if mchID == "" {
		mchID = c.mchID
	}
	if !safeID(mchID) {
		return "", nil, "", invalidRequest("CloseRequest.MchID must contain only letters, digits, '_' and '-'")
	}
	path := "/v3/global/transactions"
	if c.pathStyle == PathHK {
		path = "/hk/v3/transactions"
	}
	if req.OutTradeNo != "" {
		if e := checkOrderNo("CloseRequest.OutTradeNo", req.OutTradeNo); e != nil {
			return "", nil, "", e
		}
		path += "/out-trade-no/" + url.PathEscape(req.OutTradeNo) + "/close"
	} else {
		if e := checkOrderNo("CloseRequest.TransactionID", req.TransactionID); e != nil {
			return "", nil, "", e
		}
		path += "/id/" + url.PathEscape(req.TransactionID) + "/close"
	}
	var v any = struct {
		MchID string `json:"mchid"`
	}{mchID}
	if req.SubMchID != "" {
		if !safeID(req.SubMchID) {
			return "", nil, "", invalidRequest("CloseRequest.SubMchID must contain only letters, digits, '_' and '-'")
		}
		v = struct {
			SpMchID  string `json:"sp_mchid"`
			SubMchID string `json:"sub_mchid"`
		}{mchID, req.SubMchID}
	}
	b, jerr := json.Marshal(v)
	if jerr != nil { // cannot happen for two strings; kept so a future field cannot panic
		return "", nil, "", invalidRequest("encode request body: %v", jerr)
	}
	return c.baseStr + path, b, mchID, nil
}

// checkOrderNo rejects numbers that cannot be sent faithfully in a URL path
// (".." would be cleaned away by servers) or that no WeChat Pay order has.
func checkOrderNo(field, s string) *Error {
	if len(s) > 64 {
		return invalidRequest("%s is %d bytes; WeChat Pay order numbers have at most 32", field, len(s))
	}
	if s == "." || s == ".." {
		return invalidRequest("%s %q is not an order number", field, s)
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return invalidRequest("%s must be printable ASCII without spaces", field)
		}
	}
	return nil
}

// do signs and sends one request and reads the response. Each call signs
// afresh: WeChat Pay rejects stale timestamps, so a retry must never reuse an
// old signature.
func (c *V3Client) do(ctx context.Context, method, rawURL string, body []byte, mchID string) (int, http.Header, []byte, *Error) {
	var rd *bytes.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	var hreq *http.Request
	var err error
	if rd != nil {
		hreq, err = http.NewRequestWithContext(ctx, method, rawURL, rd)
	} else {
		hreq, err = http.NewRequestWithContext(ctx, method, rawURL, nil)
	}
	if err != nil {
		return 0, nil, nil, invalidRequest("build request: %v", err)
	}
	ts := strconv.FormatInt(c.now().Unix(), 10)
	nonce := newNonce()
	sig, err := SignV3(c.key, BuildV3Message(method, hreq.URL.RequestURI(), ts, nonce, body))
	if err != nil {
		return 0, nil, nil, &Error{Class: ClassPermanent, Message: "sign request with Config.PrivateKey failed", Err: ErrInvalidConfig}
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
		return 0, nil, nil, transportError(err)
	}
	defer resp.Body.Close()
	b, err := readBody(resp.Body)
	if err != nil {
		e := transportError(err)
		e.HTTPStatus = resp.StatusCode
		e.RequestID = resp.Header.Get("Request-ID")
		return 0, nil, nil, e
	}
	return resp.StatusCode, resp.Header, b, nil
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

// interpret turns a received v3 close response into an Outcome or *Error.
func (c *V3Client) interpret(ctx context.Context, status int, h http.Header, body []byte) (Outcome, error) {
	reqID := clip(h.Get("Request-ID"), 128)
	var apiErr struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	hasCode := len(body) > 0 && json.Unmarshal(body, &apiErr) == nil && strings.TrimSpace(apiErr.Code) != ""
	code := clip(strings.TrimSpace(apiErr.Code), 64)
	msg := clip(apiErr.Message, 512)

	newErr := func(class Class, message string, cause error) *Error {
		e := &Error{Class: class, Code: code, Message: message, HTTPStatus: status, RequestID: reqID, Err: cause}
		if class != ClassPermanent {
			e.RetryAfter = parseRetryAfter(h.Get("Retry-After"), c.now())
		}
		return e
	}
	// verified returns the outcome only if the response is authentic.
	verified := func(r Result) (Outcome, error) {
		if err := c.verifyResponse(ctx, h, body); err != nil {
			claim := "success"
			if code != "" {
				claim = code
			} else if r == ResultNotFound {
				claim = "not found"
			}
			return Outcome{}, newErr(ClassRetryable, "response claimed "+claim+" but was not trusted; retry (never treat it as closed)", err)
		}
		return Outcome{Result: r, Code: code, Message: msg, HTTPStatus: status, RequestID: reqID}, nil
	}

	if !hasCode {
		code, msg = "", ""
		switch {
		case status == http.StatusNoContent:
			return verified(ResultClosed)
		case status >= 200 && status < 300:
			return Outcome{}, newErr(ClassRetryable, fmt.Sprintf("unexpected HTTP %d reply to close (want 204 or a WeChat error code)", status), ErrMalformedResponse)
		case status == http.StatusNotFound:
			return verified(ResultNotFound)
		case status >= 300 && status < 400:
			return Outcome{}, newErr(ClassPermanent, fmt.Sprintf("unexpected redirect to %q; check Config.BaseURL", clip(h.Get("Location"), 200)), nil)
		}
		class := classByStatus(status)
		return Outcome{}, newErr(class, fmt.Sprintf("HTTP %d without a WeChat Pay error code", status), nil)
	}
	if r, ok := v3Outcomes[code]; ok {
		return verified(r)
	}
	class, known := apiErrorClasses[code]
	if !known {
		switch {
		case status >= 200 && status < 300:
			return Outcome{}, newErr(ClassRetryable, "unexpected error code in a 2xx reply: "+msg, ErrMalformedResponse)
		case status >= 300 && status < 400:
			class = ClassPermanent
		default:
			class = classByStatus(status)
		}
	}
	return Outcome{}, newErr(class, msg, nil)
}

// verifyResponse checks the Wechatpay-* signature of a response. Errors
// wrap ErrUntrustedResponse and say why, never quoting more than a short
// prefix of attacker-controlled headers.
func (c *V3Client) verifyResponse(ctx context.Context, h http.Header, body []byte) error {
	return verifyWith(h, body, c.now(), func(serial string) *rsa.PublicKey {
		return c.keyFor(ctx, serial)
	})
}

func verifyWith(h http.Header, body []byte, now time.Time, lookup func(string) *rsa.PublicKey) error {
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
		return fmt.Errorf("%w: missing %s", ErrUntrustedResponse, strings.Join(missing, ", "))
	}
	if st := h.Get("Wechatpay-Signature-Type"); st != "" && st != AuthScheme {
		return fmt.Errorf("%w: unsupported Wechatpay-Signature-Type %q", ErrUntrustedResponse, clip(st, 40))
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: Wechatpay-Timestamp %q is not Unix seconds", ErrUntrustedResponse, clip(ts, 24))
	}
	// Compare in seconds: time.Unix of an absurd value would overflow.
	skew := now.Unix() - sec
	if skew > int64(maxClockSkew/time.Second) || skew < -int64(maxClockSkew/time.Second) {
		return fmt.Errorf("%w: Wechatpay-Timestamp %d is more than 5 minutes from the local clock (%d); check the clock or a replay", ErrUntrustedResponse, sec, now.Unix())
	}
	pub := lookup(serial)
	if pub == nil {
		return fmt.Errorf("%w: unknown Wechatpay-Serial %q (not a configured or downloaded platform certificate, nor Config.PublicKeyID)", ErrUntrustedResponse, clip(serial, 64))
	}
	if err := VerifyV3(pub, BuildV3ResponseMessage(ts, nonce, body), sig); err != nil {
		return fmt.Errorf("%w: %w", ErrUntrustedResponse, err)
	}
	return nil
}

// keyFor finds the key for serial, downloading certificates once more if the
// serial is unknown: a rotation announces the new serial only in responses.
// The extra download is rate-limited so that forged serials cannot turn every
// close into two requests.
func (c *V3Client) keyFor(ctx context.Context, serial string) *rsa.PublicKey {
	if k := c.lookup(serial); k != nil {
		return k
	}
	if c.apiv3Key == nil || strings.HasPrefix(strings.ToUpper(serial), "PUB_KEY_ID_") {
		return nil
	}
	c.mu.Lock()
	now := c.now()
	allowed := c.lastUnknown.IsZero() || now.Sub(c.lastUnknown) >= unknownSerialRateLimit || now.Before(c.lastUnknown)
	if allowed {
		c.lastUnknown = now
	}
	gen := c.gen
	c.mu.Unlock()
	if !allowed {
		return nil
	}
	_ = c.refresh(ctx, gen) // a failed download leaves the serial unknown, which is reported
	return c.lookup(serial)
}

// lookup finds a trusted key without downloading.
func (c *V3Client) lookup(serial string) *rsa.PublicKey {
	n := normalizeSerial(serial)
	if k, ok := c.static[n]; ok {
		return k.pub
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if k, ok := c.downloaded[n]; ok {
		return k.pub
	}
	return nil
}

// announceSerial picks the Wechatpay-Serial request header: the public key
// ID when configured (WeChat Pay then signs with that key), otherwise the
// newest platform certificate held.
func (c *V3Client) announceSerial() string {
	if c.publicKeyID != "" {
		return c.publicKeyID
	}
	var best trustedKey
	pick := func(m map[string]trustedKey) {
		for _, k := range m {
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

// ensureKeys downloads certificates when they are due. A failed download
// does not block closes while older keys are held; without any key the
// error is returned, as nothing could be verified.
func (c *V3Client) ensureKeys(ctx context.Context) *Error {
	if c.apiv3Key == nil {
		return nil
	}
	c.mu.Lock()
	now := c.now()
	due := c.fetchedAt.IsZero() || now.Sub(c.fetchedAt) >= c.refreshEvery || now.Before(c.fetchedAt)
	backoff := c.lastErr != nil && now.Sub(c.lastAttempt) < unknownSerialRateLimit && !now.Before(c.lastAttempt)
	haveKeys := len(c.static)+len(c.downloaded) > 0
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
// the caller looked (gen), so concurrent callers share one download.
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
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		if ctx.Err() == nil { // the caller giving up says nothing about WeChat Pay
			c.lastAttempt = c.now()
			c.lastErr = err
		}
		return err
	}
	c.downloaded = certs
	c.gen++
	c.fetchedAt = c.now()
	c.lastErr = nil
	return nil
}

func (c *V3Client) download(ctx context.Context) (map[string]trustedKey, *Error) {
	status, h, body, rerr := c.do(ctx, http.MethodGet, c.certsURL, nil, c.mchID)
	if rerr != nil {
		rerr.Message = "download platform certificates: " + rerr.Message
		return nil, rerr
	}
	reqID := clip(h.Get("Request-ID"), 128)
	if status != http.StatusOK {
		var apiErr struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		}
		_ = json.Unmarshal(body, &apiErr)
		code := clip(strings.TrimSpace(apiErr.Code), 64)
		class, ok := apiErrorClasses[code]
		if !ok {
			class = classByStatus(status)
		}
		e := &Error{Class: class, Code: code, HTTPStatus: status, RequestID: reqID,
			Message: "download platform certificates: " + clip(apiErr.Message, 512)}
		if class != ClassPermanent {
			e.RetryAfter = parseRetryAfter(h.Get("Retry-After"), c.now())
		}
		return nil, e
	}
	malformed := func(why string) *Error {
		return &Error{Class: ClassRetryable, HTTPStatus: status, RequestID: reqID,
			Message: "download platform certificates: " + why, Err: ErrMalformedResponse}
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
		return nil, malformed("body is not the certificate list JSON")
	}
	if len(payload.Data) == 0 {
		return nil, malformed("empty certificate list")
	}
	got := make(map[string]trustedKey, len(payload.Data))
	for i, d := range payload.Data {
		ec := d.EncryptCertificate
		if ec.Algorithm != "AEAD_AES_256_GCM" {
			return nil, malformed(fmt.Sprintf("certificate %d uses unsupported algorithm %q", i, clip(ec.Algorithm, 40)))
		}
		pemBytes, err := decryptAEADAES256GCM(c.apiv3Key, ec.Nonce, ec.AssociatedData, ec.Ciphertext)
		if err != nil {
			if errors.Is(err, errAEADAuth) {
				return nil, &Error{Class: ClassPermanent, HTTPStatus: status, RequestID: reqID,
					Message: "Config.APIv3Key does not decrypt the platform certificates; check it on the merchant platform (API security)",
					Err:     ErrInvalidConfig}
			}
			return nil, malformed(fmt.Sprintf("certificate %d: %v", i, err))
		}
		certs, err := LoadCertificates(pemBytes)
		if err != nil {
			return nil, malformed(fmt.Sprintf("certificate %d: %v", i, err))
		}
		cert := certs[0]
		serial := CertificateSerial(cert)
		if d.SerialNo != "" && normalizeSerial(d.SerialNo) != normalizeSerial(serial) {
			return nil, malformed(fmt.Sprintf("certificate %d: serial_no %q does not match the certificate (%s)", i, clip(d.SerialNo, 64), serial))
		}
		got[normalizeSerial(serial)] = trustedKey{serial: serial, pub: cert.PublicKey.(*rsa.PublicKey), notBefore: cert.NotBefore}
	}
	verr := verifyWith(h, body, c.now(), func(serial string) *rsa.PublicKey {
		n := normalizeSerial(serial)
		if k, ok := got[n]; ok {
			return k.pub
		}
		return c.lookup(n)
	})
	if verr != nil {
		return nil, &Error{Class: ClassRetryable, HTTPStatus: status, RequestID: reqID,
			Message: "download platform certificates: response not trusted", Err: verr}
	}
	return got, nil
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
