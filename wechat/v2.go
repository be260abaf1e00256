package wechat

import (
	"bytes"
	"context"
	"crypto/hmac"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
)

// V2Client closes orders with the legacy WeChat Pay API v2 (XML, MD5 or
// HMAC-SHA256). Create it with New or NewV2; it is safe for concurrent use.
//
// A reply with return_code=SUCCESS is believed only if its sign verifies:
// it is recomputed over every non-empty field received (unknown fields
// included) except sign, with the API key and the sign type that was sent,
// and compared in constant time. An unverifiable reply is returned as a
// ClassRetryable *Error wrapping ErrUntrustedResponse, never as an Outcome.
// A return_code=FAIL reply is not signed by WeChat Pay; it only ever becomes
// a ClassPermanent error, so believing a forged one cannot book an order.
type V2Client struct {
	common
	appID    string
	apiKey   string
	signType SignType
	url      string
}

// NewV2 validates cfg for API v2 and returns the client. Most callers use
// New. Configuration errors wrap ErrInvalidConfig and name the field.
func NewV2(cfg Config) (*V2Client, error) {
	if cfg.API != APIv2 {
		return nil, configError("NewV2 needs Config.API %q, not %q", APIv2, cfg.API)
	}
	cm, err := newCommon(cfg)
	if err != nil {
		return nil, err
	}
	c := &V2Client{common: cm}
	if cfg.AppID == "" {
		return nil, configError("Config.AppID is required for API v2")
	}
	if !safeID(cfg.AppID) {
		return nil, configError("Config.AppID must contain only letters, digits, '_' and '-'")
	}
	c.appID = cfg.AppID
	if cfg.APIKey == "" {
		return nil, configError("Config.APIKey is required for API v2 (the 32-character key from the merchant platform, API security)")
	}
	if len(cfg.APIKey) != 32 {
		return nil, configError("Config.APIKey must be 32 characters (it is %d); check for pasted whitespace", len(cfg.APIKey))
	}
	c.apiKey = cfg.APIKey
	switch cfg.SignType {
	case "", SignHMACSHA256:
		c.signType = SignHMACSHA256
	case SignMD5:
		c.signType = SignMD5
	default:
		return nil, configError("Config.SignType must be %q or %q, not %q", SignHMACSHA256, SignMD5, cfg.SignType)
	}
	c.url = c.baseStr + "/pay/closeorder"
	return c, nil
}

// Close asks WeChat Pay to close the order by out_trade_no (API v2 has no
// close by transaction id). See V2Client for how replies are verified.
func (c *V2Client) Close(ctx context.Context, req CloseRequest) (Outcome, error) {
	body, err := c.buildClose(req)
	if err != nil {
		return Outcome{}, err
	}
	hreq, herr := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if herr != nil {
		return Outcome{}, invalidRequest("build request: %v", herr)
	}
	hreq.Header.Set("Content-Type", "text/xml; charset=utf-8")
	hreq.Header.Set("Accept", "application/xml, text/xml")
	hreq.Header.Set("User-Agent", c.userAgent)
	resp, herr := c.http.Do(hreq)
	if herr != nil {
		return Outcome{}, transportError(herr)
	}
	defer resp.Body.Close()
	b, herr := readBody(resp.Body)
	if herr != nil {
		e := transportError(herr)
		e.HTTPStatus = resp.StatusCode
		return Outcome{}, e
	}
	return c.interpret(resp.StatusCode, resp.Header, b)
}

func (c *V2Client) buildClose(req CloseRequest) ([]byte, *Error) {
	switch {
	case req.OutTradeNo == "" && req.TransactionID != "":
		return nil, invalidRequest("v2 closeorder needs out_trade_no; CloseRequest.TransactionID is only supported by API v3")
	case req.OutTradeNo == "":
		return nil, invalidRequest("CloseRequest.OutTradeNo is required")
	case req.TransactionID != "":
		return nil, invalidRequest("set only CloseRequest.OutTradeNo for API v2, not TransactionID")
	}
	if e := checkOrderNo("CloseRequest.OutTradeNo", req.OutTradeNo); e != nil {
		return nil, e
	}
	mchID := req.MchID
	if mchID == "" {
		mchID = c.mchID
	}
	params := map[string]string{
		"appid":        c.appID,
		"mch_id":       mchID,
		"out_trade_no": req.OutTradeNo,
		"nonce_str":    newNonce(),
		// Sent even for MD5: WeChat Pay's default is MD5 and the reply is
		// verified with the type we name, so leave nothing implicit.
		"sign_type": string(c.signType),
	}
	for _, f := range []struct{ name, field, v string }{
		{"mch_id", "CloseRequest.MchID", mchID},
		{"sub_mch_id", "CloseRequest.SubMchID", req.SubMchID},
		{"sub_appid", "CloseRequest.SubAppID", req.SubAppID},
	} {
		if f.v == "" {
			continue
		}
		if !safeID(f.v) {
			return nil, invalidRequest("%s must contain only letters, digits, '_' and '-'", f.field)
		}
		params[f.name] = f.v
	}
	sign, err := SignV2(params, c.apiKey, c.signType)
	if err != nil {
		return nil, &Error{Class: ClassPermanent, Message: "sign request", Err: ErrInvalidConfig}
	}
	params["sign"] = sign
	return encodeV2XML(params), nil
}

// encodeV2XML writes <xml> with one escaped element per field, in name
// order so requests are reproducible.
func encodeV2XML(params map[string]string) []byte {
	names := make([]string, 0, len(params))
	for k := range params {
		names = append(names, k)
	}
	sort.Strings(names)
	var b bytes.Buffer
	b.WriteString("<xml>")
	for _, k := range names {
		b.WriteString("<" + k + ">")
		_ = xml.EscapeText(&b, []byte(params[k]))
		b.WriteString("</" + k + ">")
	}
	b.WriteString("</xml>")
	return b.Bytes()
}

// parseV2XML reads a flat <xml><field>value</field>...</xml> document into a
// map, keeping every field (WeChat Pay may add fields, and the sign covers
// them all). CDATA is ordinary text. Anything ambiguous — nesting, duplicate
// fields, a second root, stray text — is rejected rather than guessed at,
// because the map is what the signature is checked against.
func parseV2XML(b []byte) (map[string]string, error) {
	d := xml.NewDecoder(bytes.NewReader(b))
	d.Strict = true
	m := make(map[string]string)
	var (
		depth    int
		field    string
		text     strings.Builder
		rootSeen bool
		rootDone bool
	)
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, errors.New("not well-formed XML")
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if rootDone {
				return nil, errors.New("content after the <xml> root")
			}
			depth++
			switch depth {
			case 1:
				if t.Name.Local != "xml" {
					return nil, fmt.Errorf("root element is <%s>, want <xml>", clip(t.Name.Local, 32))
				}
				rootSeen = true
			case 2:
				field = t.Name.Local
				if _, dup := m[field]; dup {
					return nil, fmt.Errorf("field <%s> appears twice", clip(field, 32))
				}
				if len(m) >= 256 {
					return nil, errors.New("too many fields")
				}
				text.Reset()
			default:
				return nil, errors.New("nested elements inside a field")
			}
		case xml.EndElement:
			switch depth {
			case 2:
				m[field] = text.String()
			case 1:
				rootDone = true
			}
			depth--
		case xml.CharData:
			if depth == 2 {
				text.Write(t)
			} else if len(bytes.TrimSpace(t)) > 0 {
				return nil, errors.New("text outside a field")
			}
		}
	}
	if !rootSeen || !rootDone {
		return nil, errors.New("no <xml> document")
	}
	return m, nil
}

// verifyV2 checks the reply's sign over every received field.
func (c *V2Client) verifyV2(m map[string]string) error {
	got := strings.TrimSpace(m["sign"])
	if got == "" {
		return fmt.Errorf("%w: reply has no sign", ErrUntrustedResponse)
	}
	want, err := SignV2(m, c.apiKey, c.signType)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUntrustedResponse, err)
	}
	if !hmac.Equal([]byte(strings.ToUpper(got)), []byte(want)) {
		return fmt.Errorf("%w: sign does not match (%s)", ErrUntrustedResponse, c.signType)
	}
	return nil
}

// interpret turns a received v2 reply into an Outcome or *Error.
func (c *V2Client) interpret(status int, h http.Header, body []byte) (Outcome, error) {
	reqID := clip(h.Get("Request-ID"), 128)
	newErr := func(class Class, code, msg string, cause error) *Error {
		e := &Error{Class: class, Code: clip(code, 64), Message: clip(msg, 512), HTTPStatus: status, RequestID: reqID, Err: cause}
		if class != ClassPermanent {
			e.RetryAfter = parseRetryAfter(h.Get("Retry-After"), c.now())
		}
		return e
	}
	if status < 200 || status >= 300 {
		class := classByStatus(status)
		msg := fmt.Sprintf("HTTP %d from /pay/closeorder", status)
		if status >= 300 && status < 400 {
			msg = fmt.Sprintf("unexpected redirect to %q; check Config.BaseURL", clip(h.Get("Location"), 200))
		}
		return Outcome{}, newErr(class, "", msg, nil)
	}
	m, err := parseV2XML(body)
	if err != nil {
		return Outcome{}, newErr(ClassRetryable, "", "reply is not v2 XML: "+err.Error(), ErrMalformedResponse)
	}
	switch m["return_code"] {
	case "SUCCESS":
	case "FAIL":
		msg := m["return_msg"]
		if isSignFailure(msg) {
			return Outcome{}, newErr(ClassPermanent, "SIGNERROR", msg+" (check Config.APIKey and Config.SignType)", nil)
		}
		return Outcome{}, newErr(ClassPermanent, "FAIL", msg, nil)
	default:
		return Outcome{}, newErr(ClassRetryable, "", fmt.Sprintf("return_code %q is neither SUCCESS nor FAIL", clip(m["return_code"], 32)), ErrMalformedResponse)
	}

	code := m["err_code"]
	msg := m["err_code_des"]
	if msg == "" {
		msg = m["result_msg"]
	}
	if err := c.verifyV2(m); err != nil {
		claim := code
		if claim == "" {
			claim = "result_code " + m["result_code"]
		}
		return Outcome{}, newErr(ClassRetryable, code, "reply claimed "+clip(claim, 64)+" but was not trusted; retry (never treat it as closed)", err)
	}
	switch m["result_code"] {
	case "SUCCESS":
		return Outcome{Result: ResultClosed, HTTPStatus: status, RequestID: reqID}, nil
	case "FAIL":
	default:
		return Outcome{}, newErr(ClassRetryable, code, fmt.Sprintf("result_code %q is neither SUCCESS nor FAIL", clip(m["result_code"], 32)), ErrMalformedResponse)
	}
	if r, ok := v3Outcomes[code]; ok {
		return Outcome{Result: r, Code: code, Message: clip(msg, 512), HTTPStatus: status, RequestID: reqID}, nil
	}
	if code == "" {
		return Outcome{}, newErr(ClassPermanent, "FAIL", "result_code FAIL without err_code: "+msg, nil)
	}
	class, ok := apiErrorClasses[code]
	if !ok {
		class = ClassPermanent
	}
	return Outcome{}, newErr(class, code, msg, nil)
}

// isSignFailure recognises WeChat Pay's "签名错误" return_msg and English
// variants ("Signature Failure", "sign error").
func isSignFailure(msg string) bool {
	return strings.Contains(msg, "签名") || strings.Contains(strings.ToLower(msg), "sign")
}
