package wechat

import (
	"context"
	"fmt"
)

// Closer closes one order at WeChat Pay. Both API generations implement it;
// New picks one from Config.API.
//
// Close returns a non-nil error exactly when the order did not reach a final
// state; that error is always a *Error. Implementations are safe for
// concurrent use.
type Closer interface {
	Close(ctx context.Context, req CloseRequest) (Outcome, error)
}

// CloseRequest names the order to close. Exactly one of OutTradeNo and
// TransactionID is required; v2 only accepts OutTradeNo.
type CloseRequest struct {
	// OutTradeNo is the merchant's order number.
	OutTradeNo string
	// TransactionID is WeChat Pay's order number, used when the merchant's
	// number is unknown (v3 only).
	TransactionID string
	// MchID is the merchant (common mode) or the institution (institutional
	// mode). If empty, Config.MchID is used.
	MchID string
	// SubMchID is the sub-merchant. Setting it selects institutional mode.
	SubMchID string
	// SubAppID is the sub-merchant's app id (v2 institutional mode, optional).
	SubAppID string
}

// Result is the final state an order reached.
type Result int

const (
	// ResultClosed means WeChat Pay closed the order now (v3 204, v2 SUCCESS).
	ResultClosed Result = iota + 1
	// ResultAlreadyClosed means the order was closed before (ORDERCLOSED).
	ResultAlreadyClosed
	// ResultPaid means the payer paid; the order cannot be closed and must be
	// booked as paid (ORDERPAID).
	ResultPaid
	// ResultNotFound means WeChat Pay has no such order (ORDERNOTEXIST,
	// ORDER_NOT_EXIST), so no payment can exist for it.
	ResultNotFound
)

// String returns the lower-case name used in logs and metrics.
func (r Result) String() string {
	switch r {
	case ResultClosed:
		return "closed"
	case ResultAlreadyClosed:
		return "already_closed"
	case ResultPaid:
		return "paid"
	case ResultNotFound:
		return "not_found"
	}
	return fmt.Sprintf("result(%d)", int(r))
}

// Outcome is what Close reports when the order reached a final state.
type Outcome struct {
	Result Result
	// Code is the WeChat code that produced the result (for example
	// "ORDERPAID"); empty for a plain success.
	Code string
	// Message is WeChat's human-readable message, if any.
	Message string
	// HTTPStatus is the status of the response that decided the outcome.
	HTTPStatus int
	// RequestID is WeChat's Request-ID header (v3), for support tickets.
	RequestID string
	// ConfirmedByQuery is true when the Close Order answer that looked final
	// did not carry a valid signature and the result was instead taken from a
	// signed Query Order answer.
	ConfirmedByQuery bool
	// TradeState is the signed trade_state from that Query Order answer
	// ("CLOSED", "SUCCESS", ...); empty when no query was made.
	TradeState string
	// TransactionID is WeChat Pay's order number when a signed answer
	// returned it (Query Order does); empty otherwise.
	TransactionID string
}
