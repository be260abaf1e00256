package sandbox

import (
	"fmt"
	"slices"
	"time"
)

// State is the payment state of a sandbox order.
type State int

const (
	// StateUnpaid orders can be closed. It is the zero value.
	StateUnpaid State = iota
	// StatePaid orders refuse a close with ORDERPAID.
	StatePaid
	// StateClosed orders refuse a close with ORDERCLOSED.
	StateClosed
)

// String returns "unpaid", "paid" or "closed".
func (st State) String() string {
	switch st {
	case StateUnpaid:
		return "unpaid"
	case StatePaid:
		return "paid"
	case StateClosed:
		return "closed"
	}
	return fmt.Sprintf("State(%d)", int(st))
}

// parseState is the inverse of State.String.
func parseState(s string) (State, error) {
	switch s {
	case "", "unpaid":
		return StateUnpaid, nil
	case "paid":
		return StatePaid, nil
	case "closed":
		return StateClosed, nil
	}
	return 0, fmt.Errorf(`state %q is not one of "unpaid", "paid", "closed"`, s)
}

// Order is an order known to the sandbox.
type Order struct {
	// MchID is the merchant (or institution) that owns the order; a close
	// from any other merchant is refused with 403 NO_AUTH. If empty,
	// Options.MchID.
	MchID string
	// SubMchID is the sub-merchant (institutional mode) that owns the
	// order. If empty, any sub-merchant of MchID, and common mode, may
	// close it; if set, a close must name this sub_mchid or gets NO_AUTH.
	SubMchID string
	// OutTradeNo is the merchant's order number.
	OutTradeNo string
	// TransactionID is WeChat Pay's order number. Either it or OutTradeNo
	// must be set.
	TransactionID string
	// CreatedAt is when the order was created; closes before
	// CreatedAt+MinCloseAge are refused. The zero time means long ago.
	CreatedAt time.Time
	// State is the payment state. If zero, StateUnpaid.
	State State
}

// AddOrder registers o, replacing any order with the same OutTradeNo or
// TransactionID. An order with neither number is ignored.
func (s *Server) AddOrder(o Order) {
	if o.OutTradeNo == "" && o.TransactionID == "" {
		s.logf("sandbox: AddOrder ignored an order with neither OutTradeNo nor TransactionID")
		return
	}
	if o.MchID == "" {
		o.MchID = s.opts.MchID
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.addLocked(&o)
}

func (s *Server) addLocked(o *Order) {
	for _, old := range []*Order{s.byOutNo[o.OutTradeNo], s.byTxID[o.TransactionID]} {
		if old == nil {
			continue
		}
		if old.OutTradeNo != "" && s.byOutNo[old.OutTradeNo] == old {
			delete(s.byOutNo, old.OutTradeNo)
		}
		if old.TransactionID != "" && s.byTxID[old.TransactionID] == old {
			delete(s.byTxID, old.TransactionID)
		}
	}
	if o.OutTradeNo != "" {
		s.byOutNo[o.OutTradeNo] = o
	}
	if o.TransactionID != "" {
		s.byTxID[o.TransactionID] = o
	}
}

func (s *Server) lookupLocked(orderNo string) *Order {
	if orderNo == "" {
		return nil
	}
	if o := s.byOutNo[orderNo]; o != nil {
		return o
	}
	return s.byTxID[orderNo]
}

// Order returns the order whose OutTradeNo or TransactionID is orderNo.
func (s *Server) Order(orderNo string) (Order, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.lookupLocked(orderNo)
	if o == nil {
		return Order{}, false
	}
	return *o, true
}

// SetState changes the state of the order whose OutTradeNo or TransactionID
// is orderNo, for example to simulate a payment. It reports whether the
// order exists.
func (s *Server) SetState(orderNo string, st State) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.lookupLocked(orderNo)
	if o == nil {
		return false
	}
	o.State = st
	return true
}

// closeResult is what a close did to an order, independent of API
// generation.
type closeResult int

const (
	resClosed closeResult = iota
	resAlreadyClosed
	resPaid
	resNotFound
	resEarly
	resNoAuth
)

// outcome returns the Call.Outcome for r.
func (r closeResult) outcome() string {
	return [...]string{"closed", "already_closed", "paid", "not_found", "early", "auth_failed"}[r]
}

// closeReq identifies the order a close call names and who calls.
type closeReq struct {
	orderNo string
	byTxID  bool // orderNo is a transaction_id (v3 /id/ path)
	mchid   string
	subMch  string
}

func (s *Server) findLocked(q closeReq) *Order {
	if q.byTxID {
		return s.byTxID[q.orderNo]
	}
	return s.byOutNo[q.orderNo]
}

// applyClose performs the normal behaviour of a close atomically: the check
// of the minimum age, the state check and the state change happen under one
// lock so that concurrent closes of one order close it exactly once.
func (s *Server) applyClose(q closeReq) closeResult {
	now := s.opts.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.findLocked(q)
	if o == nil {
		if s.opts.UnknownOrders != UnknownCreate {
			return resNotFound
		}
		o = &Order{MchID: q.mchid, SubMchID: q.subMch}
		if q.byTxID {
			o.TransactionID = q.orderNo
		} else {
			o.OutTradeNo = q.orderNo
		}
		s.addLocked(o)
	}
	if o.MchID != q.mchid || (o.SubMchID != "" && o.SubMchID != q.subMch) {
		return resNoAuth
	}
	// The minimum age is checked before the state: a client that calls too
	// early has a bug whatever the order's state, and the sandbox exists to
	// catch it.
	if now.Before(o.CreatedAt.Add(s.opts.MinCloseAge)) {
		s.early++
		return resEarly
	}
	switch o.State {
	case StatePaid:
		return resPaid
	case StateClosed:
		return resAlreadyClosed
	}
	o.State = StateClosed
	return resClosed
}

// queryOrder looks up the order a Query Order call names, without changing
// it: found is false for an unknown order (never created, whatever
// Options.UnknownOrders says), noAuth true when it belongs to another
// merchant.
func (s *Server) queryOrder(q closeReq) (o Order, found, noAuth bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.findLocked(q)
	if p == nil {
		return Order{}, false, false
	}
	if p.MchID != q.mchid || (p.SubMchID != "" && p.SubMchID != q.subMch) {
		return Order{}, true, true
	}
	return *p, true, false
}

// tradeState is the Query Order trade_state of an order state, and its
// trade_state_desc.
func tradeState(st State) (string, string) {
	switch st {
	case StatePaid:
		return "SUCCESS", "支付成功 (paid)"
	case StateClosed:
		return "CLOSED", "已关闭 (closed)"
	}
	return "NOTPAY", "未支付 (not paid)"
}

// Call is one request that reached a close, query or certificates endpoint.
type Call struct {
	// At is the sandbox clock when the request arrived.
	At time.Time `json:"at"`
	// API is "v3" or "v2" for a close, "v3_query" or "v2_query" for a
	// Query Order call, or "certificates".
	API string `json:"api"`
	// Path is the request path.
	Path string `json:"path"`
	// MchID is the merchant (or sp_mchid) the request named, if it got far
	// enough to name one.
	MchID string `json:"mchid,omitempty"`
	// SubMchID is the sub-merchant the request named, if any.
	SubMchID string `json:"sub_mchid,omitempty"`
	// OutTradeNo is the merchant order number the request named, if any.
	OutTradeNo string `json:"out_trade_no,omitempty"`
	// TransactionID is the WeChat order number the request named, if any.
	TransactionID string `json:"transaction_id,omitempty"`
	// Status is the HTTP status replied, or 0 if the client went away
	// (its context ended) before the reply was written.
	Status int `json:"status"`
	// Code is the WeChat code replied (v3 "code", v2 err_code, or "FAIL"
	// for a v2 return_code failure); empty for success.
	Code string `json:"code,omitempty"`
	// Outcome is one of "closed", "already_closed", "paid", "not_found",
	// "early", "auth_failed", "scripted", "fault", "bad_request", "ok" for a
	// certificate download, or "queried" for a Query Order call answered
	// with a trade state.
	Outcome string `json:"outcome"`
	// TradeState is the trade_state a Query Order call answered, if any.
	TradeState string `json:"trade_state,omitempty"`
	// Unsigned is true when the reply was sent without a signature because
	// of Options.UnsignedFinalAnswers.
	Unsigned bool `json:"unsigned,omitempty"`
	// Early is true if the close came before CreatedAt+MinCloseAge and was
	// refused.
	Early bool `json:"early,omitempty"`
	// UserAgent is the request's User-Agent header. WeChat Pay may refuse
	// requests without one; the sandbox accepts them and records "".
	UserAgent string `json:"user_agent,omitempty"`

	// signer is the merchant whose keys sign the reply: the one the
	// request named, when the sandbox serves it.
	signer *account
}

func (s *Server) record(c Call) {
	s.mu.Lock()
	s.calls = append(s.calls, c)
	s.mu.Unlock()
	no := c.OutTradeNo
	if no == "" {
		no = c.TransactionID
	}
	s.logf("sandbox: %s %s order=%q mchid=%q -> %d %s %s", c.API, c.Path, no, c.MchID, c.Status, c.Code, c.Outcome)
}

// Calls returns every recorded call, oldest first.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// CallsFor returns the recorded calls that named orderNo as out_trade_no or
// transaction_id, oldest first: closes and Query Order calls (API
// "v3_query", "v2_query") alike.
func (s *Server) CallsFor(orderNo string) []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Call
	for _, c := range s.calls {
		if orderNo != "" && (c.OutTradeNo == orderNo || c.TransactionID == orderNo) {
			out = append(out, c)
		}
	}
	return out
}

// EarlyCalls returns how many closes were refused because they came before
// CreatedAt+MinCloseAge. A correct client keeps it at zero.
func (s *Server) EarlyCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.early
}
