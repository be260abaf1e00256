package sandbox

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
)

// Query Order, as WeChat Pay documents it for Global and Hong Kong
// merchants:
//
//	v3: GET {/v3/global|/hk/v3}/transactions/out-trade-no/{out_trade_no}?mchid=...
//	    GET {/v3/global|/hk/v3}/transactions/id/{transaction_id}?mchid=...
//	    institutional mode: ?sub_mchid=...&sp_mchid=... instead of mchid
//	v2: POST /pay/orderquery (XML, signed like closeorder)
//
// The answer reports the order book's state as trade_state: an unpaid order
// is NOTPAY, a paid one SUCCESS, a closed one CLOSED; an unknown order is
// 404 ORDER_NOT_EXIST (v2 err_code ORDERNOTEXIST). Answers are signed like
// every v3 reply, also under Options.UnsignedFinalAnswers; ScriptQuery
// spoils them on request.

// queryParams is the parsed query string of a v3 Query Order call.
type queryParams struct {
	mchid, subMchid string // mchid is mchid or sp_mchid
}

// parseQueryParams checks the query string: mchid alone (common mode) or
// sp_mchid with sub_mchid (institutional mode), each once, nothing else.
func parseQueryParams(raw string) (queryParams, *v3Reply) {
	fail := func(field, value, issue string) (queryParams, *v3Reply) {
		rep := paramError(field, "query", value, issue)
		return queryParams{}, &rep
	}
	vals, err := url.ParseQuery(raw)
	if err != nil {
		return fail("", "", "the query string is not valid URL encoding")
	}
	get := func(k string) (string, bool, *v3Reply) {
		vs, ok := vals[k]
		if !ok {
			return "", false, nil
		}
		if len(vs) != 1 {
			_, rep := fail(k, "", k+" must be given once")
			return "", true, rep
		}
		if vs[0] == "" || len(vs[0]) > 32 {
			_, rep := fail(k, vs[0], k+" must be 1 to 32 characters")
			return "", true, rep
		}
		return vs[0], true, nil
	}
	for k := range vals {
		if k != "mchid" && k != "sp_mchid" && k != "sub_mchid" {
			return fail(k, "", "unknown query parameter "+k+"; send mchid, or sp_mchid and sub_mchid")
		}
	}
	mchid, sub, rep := chooseMerchant(get, func(f, v, issue string) *v3Reply { _, rep := fail(f, v, issue); return rep },
		"", "mchid is required as a query parameter (or sp_mchid and sub_mchid in institutional mode)")
	if rep != nil {
		return queryParams{}, rep
	}
	return queryParams{mchid: mchid, subMchid: sub}, nil
}

// v3QueryAnswer is the 200 body of a v3 Query Order answer.
type v3QueryAnswer struct {
	MchID          string `json:"mchid,omitempty"`
	AppID          string `json:"appid,omitempty"`
	SpMchID        string `json:"sp_mchid,omitempty"`
	SubMchID       string `json:"sub_mchid,omitempty"`
	OutTradeNo     string `json:"out_trade_no,omitempty"`
	TransactionID  string `json:"transaction_id,omitempty"`
	TradeType      string `json:"trade_type,omitempty"`
	TradeState     string `json:"trade_state"`
	TradeStateDesc string `json:"trade_state_desc"`
}

// v3Query serves GET .../out-trade-no/{no} and .../id/{no}.
func (s *Server) v3Query(byTxID bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		orderNo := r.PathValue("no")
		call := s.newCall("v3_query", r)
		name := "out_trade_no"
		if byTxID {
			call.TransactionID = orderNo
			name = "transaction_id"
		} else {
			call.OutTradeNo = orderNo
		}
		a, body, ok := s.admitV3(w, r, &call, http.MethodGet, "METHOD_NOT_ALLOWED")
		if !ok {
			return
		}
		if len(body) > 0 {
			s.finishV3(w, r, call, paramError("", "body", "", "Query Order is a GET without a body"), "bad_request", 0)
			return
		}
		if !validOrderNo(orderNo) {
			s.finishV3(w, r, call, paramError(name, "uri_template", orderNo, name+" must be 1 to 32 characters of digits, letters and _-|*@"), "bad_request", 0)
			return
		}
		qp, rep := parseQueryParams(r.URL.RawQuery)
		if rep != nil {
			s.finishV3(w, r, call, *rep, "bad_request", 0)
			return
		}
		call.MchID, call.SubMchID = qp.mchid, qp.subMchid
		if qp.mchid != a.mchid {
			field := "mchid"
			if qp.subMchid != "" {
				field = "sp_mchid"
			}
			s.finishV3(w, r, call, paramError(field, "query", qp.mchid, "the merchant in the query must be the mchid of the Authorization header"), "bad_request", 0)
			return
		}
		q := closeReq{orderNo: orderNo, byTxID: byTxID, mchid: qp.mchid, subMch: qp.subMchid}
		st := s.nextQueryStep(q)
		var out v3Reply
		var outcome string
		switch {
		case st.Malformed:
			status := st.Status
			if status == 0 {
				status = http.StatusOK
			}
			out, outcome = v3Reply{status: status, body: []byte(`{"trade_state":"SUCC`), contentType: "application/json; charset=utf-8", code: st.Code}, "scripted"
		case st.bare():
			out, outcome = v3Reply{status: st.Status, body: fmt.Appendf(nil, "%d %s\n", st.Status, http.StatusText(st.Status)), contentType: "text/plain; charset=utf-8", sig: SigMissing}, "scripted"
		case st.replaces():
			msg := st.Message
			if msg == "" {
				msg = "sandbox scripted error " + st.Code
			}
			out, outcome = errorReply(st.Status, st.Code, msg, nil), "scripted"
		default:
			out, outcome = s.v3QueryResult(q)
		}
		if out.sig == SigValid {
			out.sig = st.Signature
		}
		out.retryAfter = st.RetryAfter
		s.finishV3(w, r, call, out, outcome, st.Delay)
	}
}

// v3QueryResult answers a Query Order call from the order book.
func (s *Server) v3QueryResult(q closeReq) (v3Reply, string) {
	o, found, noAuth := s.queryOrder(q)
	switch {
	case !found:
		return errorReply(http.StatusNotFound, "ORDER_NOT_EXIST", "订单不存在 (order does not exist)", nil), "not_found"
	case noAuth:
		return errorReply(http.StatusForbidden, "NO_AUTH", "the order does not belong to this merchant", nil), "auth_failed"
	}
	state, desc := tradeState(o.State)
	ans := v3QueryAnswer{
		OutTradeNo: o.OutTradeNo, TransactionID: o.TransactionID, TradeType: "NATIVE",
		TradeState: state, TradeStateDesc: desc,
	}
	if q.subMch != "" {
		ans.SpMchID, ans.SubMchID = q.mchid, q.subMch
	} else {
		ans.MchID, ans.AppID = q.mchid, s.orPrimary(s.accountFor(q.mchid)).appid
	}
	b, _ := json.Marshal(ans)
	return v3Reply{status: http.StatusOK, body: b, contentType: "application/json; charset=utf-8", tradeState: state}, "queried"
}

// v2Query serves POST /pay/orderquery.
func (s *Server) v2Query(w http.ResponseWriter, r *http.Request) {
	call := s.newCall("v2_query", r)
	f, signType, ok := s.admitV2(w, r, &call, "orderquery")
	if !ok {
		return
	}
	orderNo, byTxID := f["out_trade_no"], false
	if orderNo == "" {
		orderNo, byTxID = f["transaction_id"], true
	}
	q := closeReq{orderNo: orderNo, byTxID: byTxID, mchid: f["mch_id"], subMch: f["sub_mch_id"]}
	st := s.nextQueryStep(q)
	var rep v2Reply
	outcome := "scripted"
	switch {
	case st.Malformed:
		rep = v2Reply{status: http.StatusOK, body: []byte("<xml><return_code><![CDATA[SUCC"), contentType: "text/xml; charset=utf-8", code: st.Code}
	case st.bare():
		rep = v2Reply{status: st.Status, body: fmt.Appendf(nil, "%d %s\n", st.Status, http.StatusText(st.Status)), contentType: "text/plain; charset=utf-8"}
	case st.replaces():
		msg := st.Message
		if msg == "" {
			msg = "sandbox scripted error " + st.Code
		}
		rep = s.v2Result(f, signType, v2Code(st.Code), msg, st.Signature, nil)
	default:
		o, found, noAuth := s.queryOrder(q)
		switch {
		case !found:
			rep, outcome = s.v2Result(f, signType, "ORDERNOTEXIST", "订单不存在", st.Signature, nil), "not_found"
		case noAuth:
			rep, outcome = s.v2Result(f, signType, "NO_AUTH", "the order does not belong to this merchant", st.Signature, nil), "auth_failed"
		default:
			state, desc := tradeState(o.State)
			rep = s.v2Result(f, signType, "", "", st.Signature, []kv{
				{"out_trade_no", o.OutTradeNo}, {"transaction_id", o.TransactionID}, {"trade_type", "NATIVE"},
				{"trade_state", state}, {"trade_state_desc", desc},
			})
			rep.tradeState, outcome = state, "queried"
		}
	}
	s.finishV2(w, r, call, rep, outcome, st.Delay, st.RetryAfter)
}
