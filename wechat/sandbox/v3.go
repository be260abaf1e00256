package sandbox

import (
	"bytes"
	"context"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// authScheme is the only v3 Authorization scheme WeChat Pay accepts.
const authScheme = "WECHATPAY2-SHA256-RSA2048"

// maxTimestampSkew is how far a request timestamp may be from the sandbox
// clock; WeChat Pay refuses requests more than 5 minutes off.
const maxTimestampSkew = 5 * time.Minute

// maxBody bounds request bodies; a close body is a few dozen bytes.
const maxBody = 64 << 10

// cst is China Standard Time, the zone of WeChat Pay's timestamps.
var cst = time.FixedZone("CST", 8*60*60)

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	for _, prefix := range []string{"/v3/global/transactions", "/hk/v3/transactions"} {
		mux.HandleFunc(prefix+"/out-trade-no/{no}/close", s.v3Close(false))
		mux.HandleFunc(prefix+"/id/{no}/close", s.v3Close(true))
		mux.HandleFunc(prefix+"/out-trade-no/{no}", s.v3Query(false))
		mux.HandleFunc(prefix+"/id/{no}", s.v3Query(true))
	}
	mux.HandleFunc("/v3/global/certificates", s.v3Certificates)
	mux.HandleFunc("/hk/v3/certificates", s.v3Certificates)
	mux.HandleFunc("/pay/closeorder", s.v2Close)
	mux.HandleFunc("/pay/orderquery", s.v2Query)
	s.adminRoutes(mux)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]string{
			"code":    "NOT_FOUND",
			"message": "the sandbox does not serve " + r.Method + " " + r.URL.Path,
		})
	})
	return mux
}

// authInfo is a parsed v3 Authorization header.
type authInfo struct {
	mchid, nonce, timestamp, serial, signature string
}

// parseAuthorization parses
// WECHATPAY2-SHA256-RSA2048 mchid="..",nonce_str="..",timestamp="..",serial_no="..",signature=".."
// with the parameters in any order. Every value must be double-quoted.
func parseAuthorization(h string) (authInfo, error) {
	scheme, rest, ok := strings.Cut(h, " ")
	if !ok || scheme != authScheme {
		return authInfo{}, fmt.Errorf("the Authorization header must start with %q and a space", authScheme)
	}
	params := map[string]string{}
	for {
		rest = strings.TrimLeft(rest, " ")
		key, after, ok := strings.Cut(rest, "=")
		if !ok || key == "" || strings.ContainsAny(key, ` ,"`) {
			return authInfo{}, errors.New(`the Authorization header's parameters must be key="value" pairs separated by commas`)
		}
		if !strings.HasPrefix(after, `"`) {
			return authInfo{}, fmt.Errorf("the Authorization header's parameter %s: value must be double-quoted", key)
		}
		end := strings.IndexByte(after[1:], '"')
		if end < 0 {
			return authInfo{}, fmt.Errorf("the Authorization header's parameter %s: missing closing quote", key)
		}
		if _, dup := params[key]; dup {
			return authInfo{}, fmt.Errorf("the Authorization header's parameter %s appears twice", key)
		}
		params[key] = after[1 : 1+end]
		rest = strings.TrimLeft(after[2+end:], " ")
		if rest == "" {
			break
		}
		if rest[0] != ',' {
			return authInfo{}, fmt.Errorf("the Authorization header's parameter %s: expected a comma after the value", key)
		}
		rest = rest[1:]
	}
	var a authInfo
	for _, f := range []struct {
		name string
		dst  *string
	}{
		{"mchid", &a.mchid}, {"nonce_str", &a.nonce}, {"timestamp", &a.timestamp},
		{"serial_no", &a.serial}, {"signature", &a.signature},
	} {
		v, ok := params[f.name]
		if !ok || v == "" {
			return authInfo{}, fmt.Errorf("the Authorization header's parameter %s is missing or empty", f.name)
		}
		*f.dst = v
	}
	return a, nil
}

// authError is a refused v3 authentication: 401 SIGN_ERROR or 403 NO_AUTH.
type authError struct {
	status  int
	code    string
	message string
}

// authenticate checks a v3 request the way WeChat Pay does: scheme and
// parameters, certificate serial, timestamp window, then the RSA signature
// over METHOD\nREQUEST_URI\nTIMESTAMP\nNONCE\nBODY\n, then that the
// signing merchant is one this sandbox serves. A request naming one of its
// merchants must be signed with that merchant's own certificate, so a close
// signed with merchant A's key for merchant B is a SIGN_ERROR; a well-signed
// request naming a merchant the sandbox does not serve is NO_AUTH. It
// returns the merchant the request names, if the sandbox serves it.
func (s *Server) authenticate(r *http.Request, body []byte) (authInfo, *account, *authError) {
	signErr := func(format string, args ...any) *authError {
		return &authError{http.StatusUnauthorized, "SIGN_ERROR", "签名错误: " + fmt.Sprintf(format, args...)}
	}
	hs := r.Header.Values("Authorization")
	if len(hs) == 0 {
		return authInfo{}, nil, signErr("missing Authorization header")
	}
	if len(hs) > 1 {
		return authInfo{}, nil, signErr("more than one Authorization header")
	}
	a, err := parseAuthorization(hs[0])
	if err != nil {
		return authInfo{}, nil, signErr("%v", err)
	}
	acct := s.accountFor(a.mchid)
	signer := acct
	if signer == nil {
		signer = s.accountBySerial(a.serial)
	}
	if signer == nil || a.serial != signer.merchantSerial {
		return a, acct, signErr("serial_no %q is not the serial of the merchant API certificate (upper-case hex, as openssl x509 -serial prints it)", a.serial)
	}
	if len(a.nonce) > 32 || strings.Trim(a.nonce, alnum) != "" {
		return a, acct, signErr("nonce_str must be 1 to 32 characters of [0-9A-Za-z]")
	}
	if len(a.timestamp) > 12 || !isDigits(a.timestamp) {
		return a, acct, signErr("timestamp %q must be Unix seconds in decimal", a.timestamp)
	}
	ts, _ := strconv.ParseInt(a.timestamp, 10, 64)
	if skew := s.opts.Now().Sub(time.Unix(ts, 0)); skew > maxTimestampSkew || skew < -maxTimestampSkew {
		return a, acct, signErr("timestamp %s is more than 5 minutes away from the server clock (timestamp 与发起时间相差超过 5 分钟)", a.timestamp)
	}
	msg := r.Method + "\n" + requestURI(r) + "\n" + a.timestamp + "\n" + a.nonce + "\n" + string(body) + "\n"
	if err := rsaVerify(signer.merchantPub, msg, a.signature); err != nil {
		return a, acct, signErr("%v; the signed message must be METHOD\\nREQUEST_URI\\nTIMESTAMP\\nNONCE\\nBODY\\n", err)
	}
	if acct == nil {
		return a, nil, &authError{http.StatusForbidden, "NO_AUTH", fmt.Sprintf("mchid %q in Authorization is %v", a.mchid, errNoMerchant)}
	}
	return a, acct, nil
}

// requestURI is the request-target as the client sent it: the part of the
// URL WeChat Pay signs (path plus "?query").
func requestURI(r *http.Request) string {
	u := r.RequestURI
	if u == "" || (!strings.HasPrefix(u, "/") && u != "*") {
		// Absolute form (through a proxy), or a handler invoked directly.
		if pu, err := url.Parse(u); err == nil && u != "" {
			return pu.RequestURI()
		}
		return r.URL.RequestURI()
	}
	return u
}

func readBody(r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return nil, fmt.Errorf("reading the request body: %v", err)
	}
	if len(b) > maxBody {
		return nil, fmt.Errorf("request body is larger than %d bytes", maxBody)
	}
	return b, nil
}

// wxError is the v3 error body.
type wxError struct {
	Code    string         `json:"code"`
	Message string         `json:"message"`
	Detail  *wxErrorDetail `json:"detail,omitempty"`
}

type wxErrorDetail struct {
	Field    string `json:"field,omitempty"`
	Value    string `json:"value,omitempty"`
	Issue    string `json:"issue,omitempty"`
	Location string `json:"location,omitempty"`
}

// v3Reply is a v3 response before it is signed and written.
type v3Reply struct {
	status      int
	body        []byte
	contentType string
	sig         SignatureFault
	retryAfter  time.Duration
	code        string // recorded in Call.Code
	tradeState  string // recorded in Call.TradeState
	// key and serial sign the reply instead of the current signing key.
	key    *rsa.PrivateKey
	serial string
}

// finalV3 reports whether rep is a close answer that ends a close.
func finalV3(rep v3Reply) bool {
	switch rep.code {
	case "ORDERCLOSED", "ORDERPAID", "ORDER_NOT_EXIST", "ORDERNOTEXIST":
		return true
	}
	return rep.code == "" && (rep.status == http.StatusNoContent || rep.status == http.StatusNotFound)
}

func errorReply(status int, code, message string, detail *wxErrorDetail) v3Reply {
	b, _ := json.Marshal(wxError{Code: code, Message: message, Detail: detail})
	return v3Reply{status: status, body: b, contentType: "application/json; charset=utf-8", code: code}
}

func paramError(field, location, value, issue string) v3Reply {
	return errorReply(http.StatusBadRequest, "PARAM_ERROR", issue, &wxErrorDetail{Field: field, Value: value, Issue: issue, Location: location})
}

// writeV3 signs (unless told otherwise) and writes rep. Every v3 reply
// carries Request-ID; signed ones carry Wechatpay-Timestamp, -Nonce,
// -Serial, -Signature and -Signature-Type over TS\nNONCE\nBODY\n.
func (s *Server) writeV3(w http.ResponseWriter, rep v3Reply, signer *account) {
	h := w.Header()
	h.Set("Request-ID", randomHex(16))
	if rep.contentType != "" && len(rep.body) > 0 {
		h.Set("Content-Type", rep.contentType)
	}
	if rep.retryAfter > 0 {
		h.Set("Retry-After", strconv.FormatInt(int64((rep.retryAfter+time.Second-1)/time.Second), 10))
	}
	if rep.sig != SigMissing {
		key, serial := rep.key, rep.serial
		if key == nil {
			key, serial = s.signingKey(signer)
		}
		sig, err := s.signV3(key, serial, rep)
		if err != nil {
			s.logf("sandbox: %v", err)
			http.Error(w, "sandbox: cannot sign the response", http.StatusInternalServerError)
			return
		}
		h.Set("Wechatpay-Timestamp", sig.ts)
		h.Set("Wechatpay-Nonce", sig.nonce)
		h.Set("Wechatpay-Serial", serial)
		h.Set("Wechatpay-Signature", sig.signature)
		h.Set("Wechatpay-Signature-Type", authScheme)
	}
	w.WriteHeader(rep.status)
	if len(rep.body) > 0 {
		w.Write(rep.body)
	}
}

// signV3 signs rep's body with key, or with SigBad a different one.
// With Options.CacheResponseSignatures a valid signature made less than a
// second ago for the same key, status and body is reused: RSA signing would
// otherwise bound a benchmark by the sandbox, not the client.
func (s *Server) signV3(key *rsa.PrivateKey, serial string, rep v3Reply) (cachedSig, error) {
	now := s.opts.Now()
	var ck string
	if s.opts.CacheResponseSignatures && rep.sig == SigValid {
		ck = serial + "\n" + strconv.Itoa(rep.status) + "\n" + string(rep.body)
		if c, ok := s.sigCache.get(ck, now); ok {
			return c, nil
		}
	}
	c := cachedSig{at: now, ts: strconv.FormatInt(now.Unix(), 10), nonce: randomString(32, alnum)}
	msg := c.ts + "\n" + c.nonce + "\n" + string(rep.body) + "\n"
	if rep.sig == SigBad {
		// A genuine signature by the right key over different bytes:
		// indistinguishable from a good one until verified.
		msg = c.ts + "\n" + c.nonce + "\n" + string(rep.body) + "tampered\n"
	}
	var err error
	if c.signature, err = rsaSign(key, msg); err != nil {
		return cachedSig{}, err
	}
	if ck != "" {
		s.sigCache.put(ck, c)
	}
	return c, nil
}

// finishV3 waits out delay (or the client), writes rep and records call.
func (s *Server) finishV3(w http.ResponseWriter, r *http.Request, call Call, rep v3Reply, outcome string, delay time.Duration) {
	call.Outcome = outcome
	call.Code = rep.code
	call.TradeState = rep.tradeState
	if !wait(r.Context(), delay) {
		call.Status = 0
		s.record(call)
		return
	}
	call.Status = rep.status
	s.writeV3(w, rep, call.signer)
	s.record(call)
}

// wait sleeps for d or until ctx ends, and reports whether the full delay
// passed with ctx still alive.
func wait(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func (s *Server) newCall(api string, r *http.Request) Call {
	return Call{At: s.opts.Now(), API: api, Path: r.URL.Path, UserAgent: r.UserAgent()}
}

// validOrderNo reports whether n fits WeChat Pay's order number rules:
// 1 to 32 characters of digits, letters and _-|*@.
func validOrderNo(n string) bool {
	if n == "" || len(n) > 32 {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || strings.IndexByte("_-|*@", c) >= 0) {
			return false
		}
	}
	return true
}

// closeBody is the parsed v3 close body.
type closeBody struct {
	mchid, subMchid string // mchid is mchid or sp_mchid
}

// parseCloseBody checks the v3 close body: {"mchid"} in common mode or
// {"sp_mchid","sub_mchid"} in institutional mode.
func parseCloseBody(body []byte) (closeBody, *v3Reply) {
	fail := func(field, value, issue string) (closeBody, *v3Reply) {
		rep := paramError(field, "body", value, issue)
		return closeBody{}, &rep
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return fail("", "", `request body is empty; send {"mchid":"..."} or {"sp_mchid":"...","sub_mchid":"..."}`)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	var m map[string]json.RawMessage
	if err := dec.Decode(&m); err != nil || m == nil {
		return fail("", "", "request body must be a JSON object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return fail("", "", "request body has data after the JSON object")
	}
	str := func(k string) (string, bool, *v3Reply) {
		raw, ok := m[k]
		if !ok {
			return "", false, nil
		}
		var v string
		if err := json.Unmarshal(raw, &v); err != nil {
			_, rep := fail("#/"+k, string(raw), k+" must be a string")
			return "", true, rep
		}
		if v == "" || len(v) > 32 {
			_, rep := fail("#/"+k, v, k+" must be 1 to 32 characters")
			return "", true, rep
		}
		return v, true, nil
	}
	mchid, sub, rep := chooseMerchant(str, func(f, v, issue string) *v3Reply { _, rep := fail(f, v, issue); return rep },
		"#/", `mchid is required (or sp_mchid and sub_mchid in institutional mode); note the field is "mchid", not "mch_id"`)
	if rep != nil {
		return closeBody{}, rep
	}
	return closeBody{mchid: mchid, subMchid: sub}, nil
}

// chooseMerchant applies WeChat Pay's rule for who is asking, the same for a
// close body and for query parameters: mchid alone (common mode), or sp_mchid
// with sub_mchid (institutional mode). get reads one field; fail reports a
// problem with the field named prefix+field; missingMchid is the message when
// neither mode is sent.
func chooseMerchant(get func(string) (string, bool, *v3Reply), fail func(field, value, issue string) *v3Reply,
	prefix, missingMchid string) (mchid, subMchid string, rep *v3Reply) {
	mchid, hasMch, rep := get("mchid")
	if rep != nil {
		return "", "", rep
	}
	sp, hasSp, rep := get("sp_mchid")
	if rep != nil {
		return "", "", rep
	}
	sub, hasSub, rep := get("sub_mchid")
	if rep != nil {
		return "", "", rep
	}
	switch {
	case hasSp && hasMch:
		return "", "", fail(prefix+"mchid", mchid, "mchid (common mode) and sp_mchid (institutional mode) must not both be sent")
	case hasSp && !hasSub:
		return "", "", fail(prefix+"sub_mchid", "", "sub_mchid is required with sp_mchid (institutional mode)")
	case hasSp:
		return sp, sub, nil
	case !hasMch:
		return "", "", fail(prefix+"mchid", "", missingMchid)
	case hasSub:
		return "", "", fail(prefix+"sub_mchid", sub, "sub_mchid is only valid with sp_mchid (institutional mode)")
	}
	return mchid, "", nil
}

// v3Close serves POST .../out-trade-no/{no}/close and .../id/{no}/close.
func (s *Server) v3Close(byTxID bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		orderNo := r.PathValue("no")
		call := s.newCall("v3", r)
		if byTxID {
			call.TransactionID = orderNo
		} else {
			call.OutTradeNo = orderNo
		}
		a, body, ok := s.admitV3(w, r, &call, http.MethodPost, "REQUIRE_POST_METHOD")
		if !ok {
			return
		}
		if !validOrderNo(orderNo) {
			name := "out_trade_no"
			if byTxID {
				name = "transaction_id"
			}
			s.finishV3(w, r, call, paramError(name, "uri_template", orderNo, name+" must be 1 to 32 characters of digits, letters and _-|*@"), "bad_request", 0)
			return
		}
		cb, rep := parseCloseBody(body)
		if rep != nil {
			s.finishV3(w, r, call, *rep, "bad_request", 0)
			return
		}
		call.MchID, call.SubMchID = cb.mchid, cb.subMchid
		if cb.mchid != a.mchid {
			field := "#/mchid"
			if cb.subMchid != "" {
				field = "#/sp_mchid"
			}
			s.finishV3(w, r, call, paramError(field, "body", cb.mchid, "the merchant in the body must be the mchid of the Authorization header"), "bad_request", 0)
			return
		}
		if s.overLimit(call.signer) {
			s.finishV3(w, r, call, errorReply(http.StatusTooManyRequests, "RATE_LIMITED", "请求频率超限 (sandbox rate limit for this merchant)", nil), "rate_limited", 0)
			return
		}
		q := closeReq{orderNo: orderNo, byTxID: byTxID, mchid: cb.mchid, subMch: cb.subMchid}
		st, fault := s.nextStep(q)
		s.runV3Step(w, r, call, q, st, fault)
	}
}

// runV3Step replies to an authenticated close according to st.
func (s *Server) runV3Step(w http.ResponseWriter, r *http.Request, call Call, q closeReq, st Step, fault bool) {
	tag := "scripted"
	if fault {
		tag = "fault"
	}
	var rep v3Reply
	var outcome string
	switch {
	case st.Malformed:
		status := st.Status
		if status == 0 {
			status = http.StatusOK
		}
		rep = v3Reply{status: status, body: []byte(`{"code":"SYSTEM_ERR`), contentType: "application/json; charset=utf-8", code: st.Code}
		outcome = tag
	case st.bare():
		rep = v3Reply{status: st.Status, body: []byte(fmt.Sprintf("%d %s\n", st.Status, http.StatusText(st.Status))), contentType: "text/plain; charset=utf-8", sig: SigMissing}
		outcome = tag
	case st.replaces():
		msg := st.Message
		if msg == "" {
			msg = "sandbox scripted error " + st.Code
		}
		rep = errorReply(st.Status, st.Code, msg, nil)
		outcome = tag
	default:
		res := s.applyClose(q)
		rep = v3Result(res, s.opts.MinCloseAge)
		outcome = res.outcome()
		call.Early = res == resEarly
	}
	if rep.sig == SigValid {
		rep.sig = st.Signature
	}
	if rep.sig == SigValid && finalV3(rep) && s.unsignedFinal.Load() {
		rep.sig = SigMissing
		call.Unsigned = true
	}
	rep.retryAfter = st.RetryAfter
	s.finishV3(w, r, call, rep, outcome, st.Delay)
}

// v3Result maps a close result to the v3 reply WeChat Pay gives.
func v3Result(res closeResult, minAge time.Duration) v3Reply {
	switch res {
	case resClosed:
		return v3Reply{status: http.StatusNoContent}
	case resAlreadyClosed:
		return errorReply(http.StatusBadRequest, "ORDERCLOSED", "订单已关闭 (order already closed)", nil)
	case resPaid:
		return errorReply(http.StatusBadRequest, "ORDERPAID", "订单已支付 (order paid)", nil)
	case resNotFound:
		return errorReply(http.StatusNotFound, "ORDER_NOT_EXIST", "订单不存在 (order does not exist)", nil)
	case resEarly:
		return errorReply(http.StatusBadRequest, "INVALID_REQUEST", earlyMessage(minAge), nil)
	default: // resNoAuth
		return errorReply(http.StatusForbidden, "NO_AUTH", "the order does not belong to this merchant", nil)
	}
}

func earlyMessage(minAge time.Duration) string {
	if minAge == 5*time.Minute {
		return "order cannot be closed within 5 minutes of creation"
	}
	return "order cannot be closed within " + minAge.String() + " of creation"
}

// certificateItem is one entry of the certificates download.
type certificateItem struct {
	SerialNo           string             `json:"serial_no"`
	EffectiveTime      string             `json:"effective_time"`
	ExpireTime         string             `json:"expire_time"`
	EncryptCertificate encryptCertificate `json:"encrypt_certificate"`
}

type encryptCertificate struct {
	Algorithm      string `json:"algorithm"`
	Nonce          string `json:"nonce"`
	AssociatedData string `json:"associated_data"`
	Ciphertext     string `json:"ciphertext"`
}

// admitV3 does what WeChat Pay does before looking at a v3 request: check
// the method, read the body and verify the signature. When it fails it has
// already replied and recorded the call.
func (s *Server) admitV3(w http.ResponseWriter, r *http.Request, call *Call, method, methodCode string) (authInfo, []byte, bool) {
	if r.Method != method {
		s.finishV3(w, r, *call, errorReply(http.StatusMethodNotAllowed, methodCode, "this endpoint requires "+method, nil), "bad_request", 0)
		return authInfo{}, nil, false
	}
	body, err := readBody(r)
	if err != nil {
		s.finishV3(w, r, *call, paramError("", "body", "", err.Error()), "bad_request", 0)
		return authInfo{}, nil, false
	}
	a, acct, aerr := s.authenticate(r, body)
	call.MchID, call.signer = a.mchid, acct
	if aerr != nil {
		s.finishV3(w, r, *call, errorReply(aerr.status, aerr.code, aerr.message, nil), "auth_failed", 0)
		return authInfo{}, nil, false
	}
	return a, body, true
}

// v3Certificates serves GET /v3/global/certificates and /hk/v3/certificates:
// every platform certificate, each encrypted with the APIv3 key.
func (s *Server) v3Certificates(w http.ResponseWriter, r *http.Request) {
	call := s.newCall("certificates", r)
	_, _, ok := s.admitV3(w, r, &call, http.MethodGet, "METHOD_NOT_ALLOWED")
	if !ok {
		return
	}
	acct := s.orPrimary(call.signer)
	s.mu.Lock()
	platforms := append([]*platformKey(nil), acct.platforms...)
	s.mu.Unlock()
	items := make([]certificateItem, 0, len(platforms))
	for _, p := range platforms {
		nonce := randomString(12, alnum)
		ct, err := aesGCMSeal(acct.apiV3Key, nonce, "certificate", p.certPEM)
		if err != nil {
			s.finishV3(w, r, call, errorReply(http.StatusInternalServerError, "SYSTEM_ERROR", "sandbox cannot encrypt certificates", nil), "fault", 0)
			return
		}
		items = append(items, certificateItem{
			SerialNo:      p.serial,
			EffectiveTime: p.cert.NotBefore.In(cst).Format(time.RFC3339),
			ExpireTime:    p.cert.NotAfter.In(cst).Format(time.RFC3339),
			EncryptCertificate: encryptCertificate{
				Algorithm: "AEAD_AES_256_GCM", Nonce: nonce, AssociatedData: "certificate", Ciphertext: ct,
			},
		})
	}
	b, _ := json.Marshal(map[string]any{"data": items})
	key, serial := s.listSigningKey(acct, r.Header.Get("Wechatpay-Serial"))
	s.finishV3(w, r, call, v3Reply{status: http.StatusOK, body: b, contentType: "application/json; charset=utf-8", key: key, serial: serial}, "ok", 0)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}
