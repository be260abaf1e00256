package wechat

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strings"
	"unicode/utf8"

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
	signer   *v2Signer
	url      string
	queryURL string
	// header is the request header every v2 call sends; each request gets
	// a map of its own that shares these values, which nothing modifies.
	header http.Header
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
	if c.signer, err = newV2Signer(c.apiKey, c.signType); err != nil {
		return nil, configError("APIKey", "%v", err)
	}
	c.url = c.baseStr + "/pay/closeorder"
	c.queryURL = c.baseStr + "/pay/orderquery"
	c.header = http.Header{
		"Content-Type": {"text/xml; charset=utf-8"},
		"Accept":       {"application/xml, text/xml"},
		"User-Agent":   {c.userAgent},
	}
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
	hreq.Header = make(http.Header, len(c.header))
	maps.Copy(hreq.Header, c.header)
	sent := c.now()
	resp, herr := c.http.Do(hreq)
	if herr != nil {
		return 0, nil, nil, transportError(herr)
	}
	received := c.now()
	defer resp.Body.Close()
	c.reportClock(sent, received, resp.Header, 0)
	b, herr := readBody(resp.Body, resp.ContentLength)
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
// request. orderquery also accepts a transaction_id. The parameters are
// listed in byte order of their names, which is both the order the sign
// covers them in and the order the XML lists them in, so neither needs a
// map or a sort.
func (c *V2Client) buildRequest(req CloseRequest, query bool) ([]byte, *Error) {
	if req.OutTradeNo != "" && req.TransactionID != "" {
		return nil, invalidRequest("set only one of CloseRequest.OutTradeNo and CloseRequest.TransactionID")
	}
	var outTradeNo, transactionID string
	switch {
	case req.OutTradeNo != "":
		if !ids.ValidOutTradeNo(req.OutTradeNo) {
			return nil, invalidRequest("CloseRequest.OutTradeNo %s", ids.OutTradeNoRule)
		}
		outTradeNo = req.OutTradeNo
	case query && req.TransactionID != "":
		if !ids.ValidTransactionID(req.TransactionID) {
			return nil, invalidRequest("CloseRequest.TransactionID %s", ids.TransactionIDRule)
		}
		transactionID = req.TransactionID
	default:
		return nil, invalidRequest("CloseRequest.OutTradeNo is required")
	}
	mchID := req.MchID
	if mchID == "" {
		mchID = c.mchID
	}
	switch {
	case !ids.ValidMchID(mchID):
		return nil, invalidRequest("CloseRequest.MchID %s", ids.MchIDRule)
	case req.SubMchID != "" && !ids.ValidMchID(req.SubMchID):
		return nil, invalidRequest("CloseRequest.SubMchID %s", ids.MchIDRule)
	case req.SubAppID != "" && !ids.ValidAppID(req.SubAppID):
		return nil, invalidRequest("CloseRequest.SubAppID %s", ids.AppIDRule)
	}
	params := [...]v2Param{
		{"appid", c.appID},
		{"mch_id", mchID},
		{"nonce_str", newNonce()},
		{"out_trade_no", outTradeNo},
		// Sent even for MD5: WeChat Pay's default is MD5 and the reply is
		// verified with the type we name, so leave nothing implicit.
		{"sign_type", string(c.signType)},
		{"sub_appid", req.SubAppID},
		{"sub_mch_id", req.SubMchID},
		{"transaction_id", transactionID},
	}
	var sign [2 * sha256.Size]byte
	return encodeV2Request(params[:], c.signer.signSorted(sign[:0], params[:])), nil
}

// encodeV2Request writes <xml> with one escaped element per non-empty
// parameter and the sign, in name order so requests are reproducible.
// params must be sorted by name and must not contain "sign".
func encodeV2Request(params []v2Param, sign []byte) []byte {
	n := len("<xml></xml><sign></sign>") + len(sign)
	for _, p := range params {
		n += 2*len(p.name) + len(p.value) + 5
	}
	b := make([]byte, 0, n)
	b = append(b, "<xml>"...)
	signed := false
	for _, p := range params {
		if !signed && p.name > "sign" {
			b = appendV2Element(b, "sign", sign)
			signed = true
		}
		if p.value != "" {
			b = appendV2Element(b, p.name, p.value)
		}
	}
	if !signed {
		b = appendV2Element(b, "sign", sign)
	}
	return append(b, "</xml>"...)
}

func appendV2Element[T string | []byte](b []byte, name string, value T) []byte {
	b = append(b, '<')
	b = append(b, name...)
	b = append(b, '>')
	b = appendXMLText(b, value)
	b = append(b, "</"...)
	b = append(b, name...)
	return append(b, '>')
}

// appendXMLText appends s escaped as xml.EscapeText escapes it. Request
// values are validated identifiers that need no escaping; anything else
// goes through xml.EscapeText itself.
func appendXMLText[T string | []byte](b []byte, s T) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '&' || c == '<' || c == '>' || c == '"' || c == '\'' {
			var esc bytes.Buffer
			_ = xml.EscapeText(&esc, []byte(s)) // a bytes.Buffer never fails
			return append(b, esc.Bytes()...)
		}
	}
	return append(b, s...)
}

// parseV2XML reads a flat <xml><field>value</field>...</xml> document into a
// map, keeping every field (WeChat Pay may add fields, and the sign covers
// them all). CDATA is ordinary text. Anything ambiguous — nesting, duplicate
// fields, a second root, stray text — is rejected rather than guessed at,
// because the map is what the signature is checked against.
//
// WeChat Pay's answers take one plain shape, which parseV2Flat reads in a
// single pass without encoding/xml; it gives up on anything else (entities,
// comments, attributes, a declaration, '\r', errors...), which
// parseV2XMLStd, the encoding/xml reading, then decides. parseV2Flat only
// accepts documents that parseV2XMLStd reads the same way
// (FuzzParseV2Equivalence).
func parseV2XML(b []byte) (map[string]string, error) {
	if m, ok := parseV2Flat(b); ok {
		return m, nil
	}
	return parseV2XMLStd(b)
}

// maxV2Fields bounds the fields of a v2 answer (a close answer has about a
// dozen).
const maxV2Fields = 256

// parseV2Flat reads the one shape WeChat Pay's answers take:
//
//	<xml><name>text or <![CDATA[text]]>...</name>...</xml>
//
// with XML whitespace only around the root and between fields, ASCII
// element names ([A-Za-z_][A-Za-z0-9_]*) without attributes, and field
// text made of valid UTF-8 XML characters other than '&' and '\r' (which
// encoding/xml would rewrite), with no "]]>" outside CDATA. ok is false for
// any other input, well-formed or not, duplicate fields and more than
// maxV2Fields fields included; the caller then parses it with encoding/xml.
// Keys and values share one copy of b.
func parseV2Flat(b []byte) (m map[string]string, ok bool) {
	s := string(b)
	i := skipXMLSpace(s, 0)
	if !strings.HasPrefix(s[i:], "<xml>") {
		return nil, false
	}
	i += len("<xml>")
	m = make(map[string]string, 16)
	for {
		i = skipXMLSpace(s, i)
		if strings.HasPrefix(s[i:], "</xml>") {
			i += len("</xml>")
			break
		}
		// <name>
		if i >= len(s) || s[i] != '<' {
			return nil, false
		}
		i++
		start := i
		for i < len(s) && isV2NameByte(s[i], i == start) {
			i++
		}
		if i == start || i >= len(s) || s[i] != '>' {
			return nil, false
		}
		name := s[start:i]
		i++
		if _, dup := m[name]; dup || len(m) >= maxV2Fields {
			return nil, false
		}
		// Text and CDATA sections up to </name>.
		var value string
		for n := 0; ; n++ {
			var part string
			switch {
			case strings.HasPrefix(s[i:], "<![CDATA["):
				i += len("<![CDATA[")
				end := strings.Index(s[i:], "]]>")
				if end < 0 {
					return nil, false
				}
				part = s[i : i+end]
				i += end + len("]]>")
			case strings.HasPrefix(s[i:], "</"):
			case i < len(s) && s[i] != '<':
				end := strings.IndexByte(s[i:], '<')
				if end < 0 {
					return nil, false
				}
				part = s[i : i+end]
				if strings.IndexByte(part, '&') >= 0 || strings.Contains(part, "]]>") {
					return nil, false // entities, or text encoding/xml refuses
				}
				i += end
			default:
				return nil, false // a nested element, a comment, the end of input...
			}
			if part == "" && strings.HasPrefix(s[i:], "</") {
				break
			}
			if !validV2Text(part) {
				return nil, false
			}
			if n == 0 {
				value = part
			} else {
				value += part
			}
		}
		// </name>
		i += len("</")
		if !strings.HasPrefix(s[i:], name) || !strings.HasPrefix(s[i+len(name):], ">") {
			return nil, false
		}
		i += len(name) + 1
		m[name] = value
	}
	if skipXMLSpace(s, i) != len(s) {
		return nil, false
	}
	return m, true
}

// skipXMLSpace returns the index of the first byte at or after i that is
// not XML whitespace.
func skipXMLSpace(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
		i++
	}
	return i
}

func isV2NameByte(c byte, first bool) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || !first && c >= '0' && c <= '9'
}

// validV2Text reports whether s is text encoding/xml returns unchanged:
// valid UTF-8 of XML characters, and no '\r' (which it turns into '\n').
func validV2Text(s string) bool {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < 0x20 && c != '\t' && c != '\n' {
				return false
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 || !(r >= 0x20 && r <= 0xD7FF || r >= 0xE000 && r <= 0xFFFD || r >= 0x10000 && r <= 0x10FFFF) {
			return false
		}
		i += size
	}
	return true
}

// parseV2XMLStd is parseV2XML with encoding/xml, for every document
// parseV2Flat leaves.
func parseV2XMLStd(b []byte) (map[string]string, error) {
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
		if errors.Is(err, io.EOF) {
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

// verifyV2 checks the reply's sign over every received field. The
// received sign is compared in upper case, in constant time.
func (c *V2Client) verifyV2(m map[string]string) error {
	got := strings.TrimSpace(m["sign"])
	if got == "" {
		return fmt.Errorf("%w: reply has no sign", ErrUntrustedResponse)
	}
	var wantBuf, gotBuf [2 * sha256.Size]byte
	want := c.signer.signMap(wantBuf[:0], m)
	var upper []byte
	if len(got) <= len(gotBuf) && isASCII(got) {
		upper = gotBuf[:len(got)]
		for i := 0; i < len(got); i++ {
			b := got[i]
			if 'a' <= b && b <= 'z' {
				b -= 'a' - 'A'
			}
			upper[i] = b
		}
	} else {
		// Longer than any sign, or not ASCII (whose upper case may differ
		// in length): compared as it always was.
		upper = []byte(strings.ToUpper(got))
	}
	if !hmac.Equal(upper, want) {
		return fmt.Errorf("%w: sign does not match (%s)", ErrUntrustedResponse, c.signType)
	}
	return nil
}

// isASCII reports whether s is all ASCII.
func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
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
