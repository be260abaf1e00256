package sandbox

import (
	"bytes"
	"crypto/hmac"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// parseV2XML decodes a v2 request: one <xml> root whose children are
// elements with text (or CDATA) only. Every field is kept, known or not,
// because the sign covers them all. DOCTYPE and other directives are refused,
// as WeChat Pay refuses them to prevent XXE.
//
// encoding/xml is the largest CPU cost of a sandbox v2 request, and in
// cmd/bench the sandbox shares CPUs with the worker being measured, so the
// plain bodies clients actually send are read by parseV2XMLFast instead.
// Everything else, and every error, comes from parseV2XMLStrict.
func parseV2XML(body []byte) (map[string]string, error) {
	if fields, ok := parseV2XMLFast(body); ok {
		return fields, nil
	}
	return parseV2XMLStrict(body)
}

// parseV2XMLFast reads only the shape
//
//	<xml><name>value</name>...</xml>
//
// with optional space, tab, CR or LF around the root and between elements,
// names matching [A-Za-z_][A-Za-z0-9_]* and values that are either plain
// text or one CDATA section. It is an optimisation, not a parser: it says
// ok only for documents on which parseV2XMLStrict returns the same map and
// no error, and gives up (ok false, never an error) on anything else,
// however harmless. Hence a value may hold only printable ASCII, tab and LF:
// encoding/xml rewrites CR and CRLF to LF, rejects some control characters
// and invalid UTF-8, and expands entities; a value with '<', '>' or '&' is
// left to it too, as are declarations, comments, attributes, nesting,
// duplicates and text mixed with CDATA.
func parseV2XMLFast(body []byte) (map[string]string, bool) {
	// One string for the whole body; names and values are slices of it,
	// which saves an allocation per string.
	s := string(body)
	i := skipV2Space(s, 0)
	if !strings.HasPrefix(s[i:], "<xml>") {
		return nil, false
	}
	i += len("<xml>")
	fields := make(map[string]string, 8)
	for {
		i = skipV2Space(s, i)
		if strings.HasPrefix(s[i:], "</xml>") {
			i += len("</xml>")
			break
		}
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
		if _, dup := fields[name]; dup {
			return nil, false
		}
		var value string
		if strings.HasPrefix(s[i:], "<![CDATA[") {
			i += len("<![CDATA[")
			end := strings.Index(s[i:], "]]>")
			if end < 0 {
				return nil, false
			}
			value = s[i : i+end]
			i += end + len("]]>")
		} else {
			end := strings.IndexByte(s[i:], '<')
			if end < 0 {
				return nil, false
			}
			value = s[i : i+end]
			i += end
		}
		if !plainV2Value(value) {
			return nil, false
		}
		if !strings.HasPrefix(s[i:], "</") || !strings.HasPrefix(s[i+2:], name) {
			return nil, false
		}
		i += 2 + len(name)
		if i >= len(s) || s[i] != '>' {
			return nil, false
		}
		i++
		fields[name] = value
	}
	if skipV2Space(s, i) != len(s) {
		return nil, false
	}
	return fields, true
}

func skipV2Space(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n') {
		i++
	}
	return i
}

// isV2NameByte is deliberately narrower than XML names: '-', '.' and ':'
// (namespaces) are left to encoding/xml. A digit may not start a name, as
// encoding/xml refuses it.
func isV2NameByte(c byte, first bool) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || c == '_' || !first && '0' <= c && c <= '9'
}

// plainV2Value reports whether encoding/xml would return v unchanged and
// without error, as text or as CDATA content.
func plainV2Value(v string) bool {
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '\t' || c == '\n':
		case c < 0x20 || c >= 0x7f || c == '<' || c == '>' || c == '&':
			return false
		}
	}
	return true
}

// parseV2XMLStrict is parseV2XML with encoding/xml. It decides every
// document parseV2XMLFast does not accept, and is the reference the fast
// path is tested against.
func parseV2XMLStrict(body []byte) (map[string]string, error) {
	dec := xml.NewDecoder(bytes.NewReader(body))
	dec.Strict = true
	fields := map[string]string{}
	var (
		depth           int
		cur             string
		text            strings.Builder
		sawRoot, closed bool
	)
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("invalid XML: %v", err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			switch depth {
			case 0:
				if sawRoot {
					return nil, errors.New("more than one root element")
				}
				if t.Name.Local != "xml" {
					return nil, fmt.Errorf("root element must be <xml>, not <%s>", t.Name.Local)
				}
				sawRoot = true
			case 1:
				cur = t.Name.Local
				if _, dup := fields[cur]; dup {
					return nil, fmt.Errorf("field <%s> appears twice", cur)
				}
				text.Reset()
			default:
				return nil, fmt.Errorf("field <%s> must contain text, not elements", cur)
			}
			depth++
		case xml.EndElement:
			depth--
			switch depth {
			case 1:
				fields[cur] = text.String()
			case 0:
				closed = true
			}
		case xml.CharData:
			if depth == 2 {
				text.Write(t)
			} else if len(bytes.TrimSpace(t)) > 0 {
				return nil, errors.New("text outside a field element")
			}
		case xml.Directive:
			return nil, errors.New("DOCTYPE and other directives are not allowed")
		}
	}
	if !sawRoot || !closed {
		return nil, errors.New("no complete <xml> element")
	}
	return fields, nil
}

// appendCDATA appends v in a CDATA section, splitting any "]]>" inside it
// across two sections.
func appendCDATA(b []byte, v string) []byte {
	b = append(b, "<![CDATA["...)
	for {
		i := strings.Index(v, "]]>")
		if i < 0 {
			break
		}
		b = append(b, v[:i]...)
		b = append(b, "]]]]><![CDATA[>"...)
		v = v[i+len("]]>"):]
	}
	b = append(b, v...)
	return append(b, "]]>"...)
}

// kv is one v2 response field; order is kept for readability.
type kv struct{ k, v string }

func v2XML(fields []kv) []byte {
	n := len("<xml></xml>")
	for _, f := range fields {
		if f.v != "" {
			n += 2*len(f.k) + len(f.v) + len("<></>") + len("<![CDATA[]]>")
		}
	}
	// Grown once for the common case of no "]]>" in any value; append
	// copes with the rest.
	b := make([]byte, 0, n)
	b = append(b, "<xml>"...)
	for _, f := range fields {
		if f.v == "" {
			continue
		}
		b = append(b, '<')
		b = append(b, f.k...)
		b = append(b, '>')
		b = appendCDATA(b, f.v)
		b = append(b, "</"...)
		b = append(b, f.k...)
		b = append(b, '>')
	}
	return append(b, "</xml>"...)
}

// v2Code maps a v3-style code used in Steps to the v2 err_code.
func v2Code(code string) string {
	switch code {
	case "SYSTEM_ERROR":
		return "SYSTEMERROR"
	case "RATE_LIMITED":
		return "FREQUENCY_LIMITED"
	case "ORDER_NOT_EXIST":
		return "ORDERNOTEXIST"
	case "SIGN_ERROR":
		return "SIGNERROR"
	}
	return code
}

// v2Reply is a v2 response ready to write.
type v2Reply struct {
	status      int
	body        []byte
	contentType string
	code        string // recorded in Call.Code
	tradeState  string // recorded in Call.TradeState
}

// v2Fail is a communication-level failure: return_code FAIL, unsigned.
func v2Fail(msg string) v2Reply {
	return v2Reply{
		status:      http.StatusOK,
		body:        v2XML([]kv{{"return_code", "FAIL"}, {"return_msg", msg}}),
		contentType: "text/xml; charset=utf-8",
		code:        "FAIL",
	}
}

func (s *Server) finishV2(w http.ResponseWriter, r *http.Request, call Call, rep v2Reply, outcome string, delay time.Duration, retryAfter time.Duration) {
	call.Outcome = outcome
	call.Code = rep.code
	call.TradeState = rep.tradeState
	if !wait(r.Context(), delay) {
		call.Status = 0
		s.record(call)
		return
	}
	call.Status = rep.status
	if retryAfter > 0 {
		w.Header().Set("Retry-After", fmt.Sprint(int64((retryAfter+time.Second-1)/time.Second)))
	}
	w.Header().Set("Content-Type", rep.contentType)
	w.WriteHeader(rep.status)
	w.Write(rep.body)
	s.record(call)
}

// admitV2 does what WeChat Pay does before looking at a v2 request (api is
// "closeorder" or "orderquery"): check the method, parse the XML, check the
// required fields, the merchant, the sign and the app id. When it fails it
// has already replied and recorded the call.
func (s *Server) admitV2(w http.ResponseWriter, r *http.Request, call *Call, api string) (map[string]string, string, bool) {
	fail := func(msg, outcome string) (map[string]string, string, bool) {
		s.finishV2(w, r, *call, v2Fail(msg), outcome, 0, 0)
		return nil, "", false
	}
	if r.Method != http.MethodPost {
		return fail("REQUIRE_POST_METHOD: "+api+" requires POST", "bad_request")
	}
	body, err := readBody(r)
	if err != nil {
		return fail("XML_FORMAT_ERROR: "+err.Error(), "bad_request")
	}
	f, err := parseV2XML(body)
	if err != nil {
		return fail("XML_FORMAT_ERROR: XML格式错误: "+err.Error(), "bad_request")
	}
	call.MchID, call.SubMchID, call.OutTradeNo, call.TransactionID = f["mch_id"], f["sub_mch_id"], f["out_trade_no"], f["transaction_id"]
	required := []string{"appid", "mch_id", "nonce_str", "sign"}
	if api == "closeorder" {
		required = append(required, "out_trade_no")
	} else if f["out_trade_no"] == "" && f["transaction_id"] == "" {
		return fail("缺少参数 out_trade_no 或 transaction_id (out_trade_no or transaction_id is required)", "bad_request")
	}
	for _, k := range required {
		if f[k] == "" {
			return fail("缺少参数 "+k+" (required field "+k+" is missing or empty)", "bad_request")
		}
	}
	signType := f["sign_type"]
	if signType == "" {
		signType = signTypeMD5 // WeChat Pay's documented default
	}
	if signType != signTypeMD5 && signType != signTypeHMACSHA256 {
		return fail("sign_type must be MD5 or HMAC-SHA256", "bad_request")
	}
	// Each merchant's own API key must have signed: a close signed with
	// merchant A's key for merchant B is a sign error.
	acct := s.accountFor(f["mch_id"])
	if acct == nil {
		return fail("mch_id "+f["mch_id"]+" is "+errNoMerchant.Error(), "auth_failed")
	}
	want, _ := v2Sign(f, acct.apiKey, signType)
	if !hmac.Equal([]byte(want), []byte(f["sign"])) {
		return fail("签名错误", "auth_failed")
	}
	if f["appid"] != acct.appid {
		return fail("appid和mch_id不匹配 (appid does not belong to mch_id)", "auth_failed")
	}
	if len(f["nonce_str"]) > 32 {
		return fail("nonce_str must be at most 32 characters", "bad_request")
	}
	for _, k := range []string{"out_trade_no", "transaction_id"} {
		if v, ok := f[k]; ok && !validOrderNo(v) {
			return fail(k+" must be 1 to 32 characters of digits, letters and _-|*@", "bad_request")
		}
	}
	return f, signType, true
}

// v2Close serves POST /pay/closeorder.
func (s *Server) v2Close(w http.ResponseWriter, r *http.Request) {
	call := s.newCall("v2", r)
	f, signType, ok := s.admitV2(w, r, &call, "closeorder")
	if !ok {
		return
	}
	if s.overLimit(s.accountFor(f["mch_id"])) {
		rep := s.v2Result(f, signType, "FREQUENCY_LIMITED", "请求频率超限 (sandbox rate limit for this merchant)", SigValid, nil)
		s.finishV2(w, r, call, rep, "rate_limited", 0, 0)
		return
	}
	q := closeReq{orderNo: f["out_trade_no"], mchid: f["mch_id"], subMch: f["sub_mch_id"]}
	st, fault := s.nextStep(q)
	tag := "scripted"
	if fault {
		tag = "fault"
	}
	var rep v2Reply
	var outcome string
	// final says whether a reply with this err_code ends a close, and so
	// is sent unsigned under Options.UnsignedFinalAnswers.
	sig := st.Signature
	final := func(code string) SignatureFault {
		switch code {
		case "", "ORDERCLOSED", "ORDERPAID", "ORDERNOTEXIST":
			if sig == SigValid && s.unsignedFinal.Load() {
				call.Unsigned = true
				return SigMissing
			}
		}
		return sig
	}
	switch {
	case st.Malformed:
		rep = v2Reply{status: http.StatusOK, body: []byte("<xml><return_code><![CDATA[SUCC"), contentType: "text/xml; charset=utf-8", code: st.Code}
		outcome = tag
	case st.bare():
		rep = v2Reply{status: st.Status, body: []byte(fmt.Sprintf("%d %s\n", st.Status, http.StatusText(st.Status))), contentType: "text/plain; charset=utf-8"}
		outcome = tag
	case st.replaces():
		msg := st.Message
		if msg == "" {
			msg = "sandbox scripted error " + st.Code
		}
		code := v2Code(st.Code)
		rep = s.v2Result(f, signType, code, msg, final(code), nil)
		outcome = tag
	default:
		res := s.applyClose(q)
		code, msg := v2ResultCode(res, s.opts.MinCloseAge)
		rep = s.v2Result(f, signType, code, msg, final(code), nil)
		outcome = res.outcome()
		call.Early = res == resEarly
	}
	s.finishV2(w, r, call, rep, outcome, st.Delay, st.RetryAfter)
}

// v2ResultCode maps a close result to err_code and err_code_des ("" for
// success).
func v2ResultCode(res closeResult, minAge time.Duration) (string, string) {
	switch res {
	case resClosed:
		return "", ""
	case resAlreadyClosed:
		return "ORDERCLOSED", "订单已关闭"
	case resPaid:
		return "ORDERPAID", "订单已支付"
	case resNotFound:
		return "ORDERNOTEXIST", "订单不存在"
	case resEarly:
		return "INVALID_REQUEST", earlyMessage(minAge)
	default: // resNoAuth
		return "NO_AUTH", "the order does not belong to this merchant"
	}
}

// v2Result builds a return_code=SUCCESS reply, signed with the request's
// sign type unless sig says otherwise. An empty errCode means result
// SUCCESS; extra fields follow the standard ones.
func (s *Server) v2Result(req map[string]string, signType, errCode, errDes string, sig SignatureFault, extra []kv) v2Reply {
	result, resultMsg := "SUCCESS", "OK"
	if errCode != "" {
		result, resultMsg = "FAIL", errDes
	}
	fields := []kv{
		{"return_code", "SUCCESS"},
		{"return_msg", "OK"},
		{"appid", req["appid"]},
		{"mch_id", req["mch_id"]},
		{"sub_appid", req["sub_appid"]},
		{"sub_mch_id", req["sub_mch_id"]},
		{"nonce_str", randomString(32, alnum)},
		{"result_code", result},
		{"result_msg", resultMsg},
		{"err_code", errCode},
		{"err_code_des", errDes},
	}
	fields = append(fields, extra...)
	if sig != SigMissing {
		m := make(map[string]string, len(fields))
		for _, f := range fields {
			m[f.k] = f.v
		}
		if sig == SigBad {
			// A well-formed sign over different content.
			m["nonce_str"] += "x"
		}
		// admitV2 checked that the sandbox serves req's merchant.
		sign, _ := v2Sign(m, s.orPrimary(s.accountFor(req["mch_id"])).apiKey, signType)
		fields = append(fields, kv{"sign", sign})
	}
	return v2Reply{status: http.StatusOK, body: v2XML(fields), contentType: "text/xml; charset=utf-8", code: errCode}
}
