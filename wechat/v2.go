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

	"github.com/wxclose/wxclose/internal/ids"
)

// V2Client closes and queries orders with the legacy WeChat Pay API v2
// (XML, MD5 or HMAC-SHA256). Create it with New or NewV2; it is safe for
// concurrent use.
//
// A reply with return_code=SUCCESS is believed only if its sign verifies:
// it is recomputed over every non-empty field received (unknown fields
// included) except sign, with the API key and the sign type that was sent,
// and compared in constant time. A return_code=FAIL reply is not signed by
// WeChat Pay; it only ever becomes a ClassPermanent error, so believing a
// forged one cannot book an order.
//
// A close reply that would end the close (result SUCCESS, ORDERCLOSED,
// ORDERPAID, ORDERNOTEXIST) but whose sign does not verify is confirmed
// with a signed /pay/orderquery answer, as V3Client does (see Querier and
// Close); when the query cannot settle it, Close returns a ClassRetryable
// *Error wrapping ErrUntrustedResponse, never an Outcome.
type V2Client struct {
	common
	appID    string
	apiKey   string
	signType SignType
	url      string
	queryURL string
}

// NewV2 validates cfg for API v2 and returns the client. Most callers use
// New. Configuration errors are *ConfigError and name the field.
func NewV2(cfg Config) (*V2Client, error) {
	if cfg.API != APIv2 {
		return nil, configError("API", "must be %q for NewV2, not %q", APIv2, cfg.API)
	}
	cm, err := newCommon(cfg)
	if err != nil {
		return nil, err
	}
	c := &V2Client{common: cm}
	if cfg.AppID == "" {
		return nil, configError("AppID", "is required for API v2")
	}
	if !ids.ValidAppID(cfg.AppID) {
		return nil, configError("AppID", "%s", ids.AppIDRule)
	}
	c.appID = cfg.AppID
	if cfg.APIKey == "" {
		return nil, configError("APIKey", "is required for API v2 (the 32-character key from the merchant platform, API security)")
	}
	if len(cfg.APIKey) != 32 {
		return nil, configError("APIKey", "must be 32 characters (it is %d); check for pasted whitespace", len(cfg.APIKey))
	}
	c.apiKey = cfg.APIKey
	switch cfg.SignType {
	case "", SignHMACSHA256:
		c.signType = SignHMACSHA256
	case SignMD5:
		c.signType = SignMD5
	default:
		return nil, configError("SignType", "must be %q or %q, not %q", SignHMACSHA256, SignMD5, cfg.SignType)
	}
	c.url = c.baseStr + "/pay/closeorder"
	c.queryURL = c.baseStr + "/pay/orderquery"
	return c, nil
}

// Close asks WeChat Pay to close the order by out_trade_no (API v2 has no
// close by transaction id). See V2Client for how replies are verified and
// when a Query Order confirms them.
func (c *V2Client) Close(ctx context.Context, req CloseRequest) (Outcome, error) {
	body, err := c.buildClose(req)
	if err != nil {
		return Outcome{}, err
	}
	status, h, b, herr := c.post(ctx, c.url, body)
	if herr != nil {
		return Outcome{}, herr
	}
	v := c.classify(status, h, b)
	if v.claim != 0 {
		return confirmByQuery(ctx, c, req, v.claim, v.err)
	}
	if v.err != nil {
		return Outcome{}, v.err
	}
	return v.out, nil
}

// Query asks /pay/orderquery for the order's state, by out_trade_no or by
// transaction_id. Only a signed answer about the same order is reported;
// see Querier.
func (c *V2Client) Query(ctx context.Context, req CloseRequest) (QueryResult, error) {
	body, err := c.buildRequest(req, true)
	if err != nil {
		return QueryResult{}, err
	}
	status, h, b, herr := c.post(ctx, c.queryURL, body)
	if herr != nil {
		return QueryResult{}, herr
	}
	res, qerr := c.interpretQuery(req, status, h, b)
	if qerr != nil {
		return QueryResult{}, qerr
	}
	return res, nil
}

// post sends one v2 request, reads the reply and reports the Date header
// to Hooks.ServerClock (v2 replies carry no signed time).
func (c *V2Client) post(ctx context.Context, url string, body []byte) (int, http.Header, []byte, *Error) {
	hreq, herr := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if herr != nil {
		return 0, nil, nil, invalidRequest("build request: %v", herr)
	}
	hreq.Header.Set("Content-Type", "text/xml; charset=utf-8")
	hreq.Header.Set("Accept", "application/xml, text/xml")
	hreq.Header.Set("User-Agent", c.userAgent)
	sent := c.now()
	resp, herr := c.http.Do(hreq)
	if herr != nil {
		return 0, nil, nil, transportError(herr)
	}
	received := c.now()
	defer resp.Body.Close()
	c.reportClock(sent, received, resp.Header, 0)
	b, herr := readBody(resp.Body)
	if herr != nil {
		e := transportError(herr)
		e.HTTPStatus = resp.StatusCode
		return 0, nil, nil, e
	}
	return resp.StatusCode, resp.Header, b, nil
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
	return c.buildRequest(req, false)
}

// buildRequest builds a signed closeorder (or, with query, orderquery)
// request. orderquery also accepts a transaction_id.
func (c *V2Client) buildRequest(req CloseRequest, query bool) ([]byte, *Error) {
	if req.OutTradeNo != "" && req.TransactionID != "" {
		return nil, invalidRequest("set only one of CloseRequest.OutTradeNo and CloseRequest.TransactionID")
	}
	params := map[string]string{
		"appid":     c.appID,
		"nonce_str": newNonce(),
		// Sent even for MD5: WeChat Pay's default is MD5 and the reply is
		// verified with the type we name, so leave nothing implicit.
		"sign_type": string(c.signType),
	}
	switch {
	case req.OutTradeNo != "":
		if !ids.ValidOutTradeNo(req.OutTradeNo) {
			return nil, invalidRequest("CloseRequest.OutTradeNo %s", ids.OutTradeNoRule)
		}
		params["out_trade_no"] = req.OutTradeNo
	case query && req.TransactionID != "":
		if !ids.ValidTransactionID(req.TransactionID) {
			return nil, invalidRequest("CloseRequest.TransactionID %s", ids.TransactionIDRule)
		}
		params["transaction_id"] = req.TransactionID
	default:
		return nil, invalidRequest("CloseRequest.OutTradeNo is required")
	}
	mchID := req.MchID
	if mchID == "" {
		mchID = c.mchID
	}
	for _, f := range []struct {
		name, field, v string
		valid          func(string) bool
		rule           string
	}{
		{"mch_id", "CloseRequest.MchID", mchID, ids.ValidMchID, ids.MchIDRule},
		{"sub_mch_id", "CloseRequest.SubMchID", req.SubMchID, ids.ValidMchID, ids.MchIDRule},
		{"sub_appid", "CloseRequest.SubAppID", req.SubAppID, ids.ValidAppID, ids.AppIDRule},
	} {
		if f.v == "" {
			continue
		}
		if !f.valid(f.v) {
			return nil, invalidRequest("%s %s", f.field, f.rule)
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

// interpret turns a received v2 close reply into an Outcome or *Error,
// without confirming unverified final replies (Close does that).
func (c *V2Client) interpret(status int, h http.Header, body []byte) (Outcome, error) {
	v := c.classify(status, h, body)
	if v.err != nil {
		return Outcome{}, v.err
	}
	return v.out, nil
}

// parseReply parses a v2 reply up to its return_code: it returns the fields
// of a return_code=SUCCESS reply (not yet verified) and an error builder for
// it, or the error that stopped it earlier.
func (c *V2Client) parseReply(api string, status int, h http.Header, body []byte) (map[string]string, func(Class, string, string, error) *Error, *Error) {
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
		msg := fmt.Sprintf("HTTP %d from %s", status, api)
		if status >= 300 && status < 400 {
			msg = fmt.Sprintf("unexpected redirect to %q; check Config.BaseURL", redactURL(h.Get("Location")))
		}
		return nil, newErr, newErr(class, "", msg, nil)
	}
	m, err := parseV2XML(body)
	if err != nil {
		return nil, newErr, newErr(ClassRetryable, "", "reply is not v2 XML: "+err.Error(), ErrMalformedResponse)
	}
	switch m["return_code"] {
	case "SUCCESS":
	case "FAIL":
		msg := m["return_msg"]
		if isSignFailure(msg) {
			return nil, newErr, newErr(ClassPermanent, "SIGNERROR", msg+" (check Config.APIKey and Config.SignType)", nil)
		}
		return nil, newErr, newErr(ClassPermanent, "FAIL", msg, nil)
	default:
		return nil, newErr, newErr(ClassRetryable, "", fmt.Sprintf("return_code %q is neither SUCCESS nor FAIL", clip(m["return_code"], 32)), ErrMalformedResponse)
	}
	return m, newErr, nil
}

// classify decides what a v2 close reply means.
func (c *V2Client) classify(status int, h http.Header, body []byte) verdict {
	m, newErr, perr := c.parseReply("/pay/closeorder", status, h, body)
	if perr != nil {
		return verdict{err: perr}
	}
	reqID := clip(h.Get("Request-ID"), 128)
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
		v := verdict{err: newErr(ClassRetryable, code, "reply claimed "+clip(claim, 64)+" but was not trusted; retry (never treat it as closed)", err)}
		switch r, final := v3Outcomes[code]; {
		case m["result_code"] == "SUCCESS" && code == "":
			v.claim = ResultClosed
		case m["result_code"] == "FAIL" && final:
			v.claim = r
		}
		return v
	}
	switch m["result_code"] {
	case "SUCCESS":
		return verdict{out: Outcome{Result: ResultClosed, HTTPStatus: status, RequestID: reqID}}
	case "FAIL":
	default:
		return verdict{err: newErr(ClassRetryable, code, fmt.Sprintf("result_code %q is neither SUCCESS nor FAIL", clip(m["result_code"], 32)), ErrMalformedResponse)}
	}
	if r, ok := v3Outcomes[code]; ok {
		return verdict{out: Outcome{Result: r, Code: code, Message: clip(msg, 512), HTTPStatus: status, RequestID: reqID}}
	}
	if code == "" {
		return verdict{err: newErr(ClassPermanent, "FAIL", "result_code FAIL without err_code: "+msg, nil)}
	}
	class, ok := apiErrorClasses[code]
	if !ok {
		class = ClassPermanent
	}
	return verdict{err: newErr(class, code, msg, nil)}
}

// interpretQuery turns a /pay/orderquery reply into a QueryResult or *Error.
func (c *V2Client) interpretQuery(req CloseRequest, status int, h http.Header, body []byte) (QueryResult, *Error) {
	m, newErr, perr := c.parseReply("/pay/orderquery", status, h, body)
	if perr != nil {
		perr.Message = "Query Order: " + perr.Message
		return QueryResult{}, perr
	}
	reqID := clip(h.Get("Request-ID"), 128)
	code := m["err_code"]
	msg := m["err_code_des"]
	if err := c.verifyV2(m); err != nil {
		return QueryResult{}, newErr(ClassRetryable, code, "Query Order: reply was not trusted", err)
	}
	switch m["result_code"] {
	case "SUCCESS":
		state := m["trade_state"]
		if state == "" {
			return QueryResult{}, newErr(ClassRetryable, "", "Query Order: reply has no trade_state", ErrMalformedResponse)
		}
		if e := checkQueryBinding(req, c.mchID, m["out_trade_no"], m["transaction_id"], m["mch_id"], m["sub_mch_id"]); e != "" {
			return QueryResult{}, newErr(ClassRetryable, "", "Query Order: "+e, ErrUntrustedResponse)
		}
		return QueryResult{
			TradeState: clip(state, 32), TradeStateDesc: clip(m["trade_state_desc"], 256),
			OutTradeNo: clip(m["out_trade_no"], 64), TransactionID: clip(m["transaction_id"], 64),
			HTTPStatus: status, RequestID: reqID,
		}, nil
	case "FAIL":
	default:
		return QueryResult{}, newErr(ClassRetryable, code, fmt.Sprintf("Query Order: result_code %q is neither SUCCESS nor FAIL", clip(m["result_code"], 32)), ErrMalformedResponse)
	}
	if code == "ORDERNOTEXIST" || code == "ORDER_NOT_EXIST" {
		return QueryResult{NotFound: true, Code: code, TradeStateDesc: clip(msg, 256), HTTPStatus: status, RequestID: reqID}, nil
	}
	class, ok := apiErrorClasses[code]
	if !ok {
		class = ClassPermanent
	}
	return QueryResult{}, newErr(class, code, "Query Order: "+msg, nil)
}

// isSignFailure recognises WeChat Pay's "签名错误" return_msg and English
// variants ("Signature Failure", "sign error").
func isSignFailure(msg string) bool {
	return strings.Contains(msg, "签名") || strings.Contains(strings.ToLower(msg), "sign")
}
