package wechat

import (
	"context"
	"errors"
	"fmt"
)

// Querier asks WeChat Pay for an order's state (Query Order). Both API
// generations implement it: v3 GET .../transactions/out-trade-no/{no} or
// .../id/{id} with mchid (or sp_mchid and sub_mchid), v2 POST
// /pay/orderquery.
//
// Query returns a QueryResult only for an answer whose signature verified
// and that names the order asked about (its out_trade_no, or transaction_id
// when the request named that; and the merchant when the answer names one):
// a genuine answer about another order is not an answer about this one. A
// signed "order does not exist" is a result (NotFound), not an error. Every
// error is a *Error, classified like Close's; an answer that does not
// verify is ClassRetryable and wraps ErrUntrustedResponse.
type Querier interface {
	Query(ctx context.Context, req CloseRequest) (QueryResult, error)
}

// The trade_state values of Query Order.
const (
	TradeStateSuccess    = "SUCCESS"    // paid
	TradeStateRefund     = "REFUND"     // paid, then (partly) refunded
	TradeStateNotPay     = "NOTPAY"     // open, not paid
	TradeStateClosed     = "CLOSED"     // closed, by a close call or by timeout
	TradeStateRevoked    = "REVOKED"    // cancelled (Quick Pay)
	TradeStateUserPaying = "USERPAYING" // the payer is paying (Quick Pay)
	TradeStatePayError   = "PAYERROR"   // payment failed; the order is still open
)

// QueryResult is a verified Query Order answer.
type QueryResult struct {
	// TradeState is WeChat Pay's trade_state (see the TradeState
	// constants); empty when NotFound.
	TradeState string
	// TradeStateDesc is trade_state_desc (v3) or the error message of a
	// not-found answer.
	TradeStateDesc string
	// OutTradeNo and TransactionID are the order's numbers as the answer
	// gives them; TransactionID is empty until WeChat Pay assigned one.
	OutTradeNo    string
	TransactionID string
	// NotFound is true when WeChat Pay answered, signed, that it has no such
	// order (v3 404 ORDER_NOT_EXIST, v2 ORDERNOTEXIST).
	NotFound bool
	// Code is WeChat's code of a not-found answer; empty otherwise.
	Code string
	// HTTPStatus and RequestID identify the answer.
	HTTPStatus int
	RequestID  string
}

// checkQueryBinding says why a signed answer is not about the order asked
// for, or returns "". mch is the merchant the answer names (mchid, or
// sp_mchid in institutional mode) and sub its sub-merchant; either may be
// absent. defaultMch is Config.MchID.
func checkQueryBinding(req CloseRequest, defaultMch, outTradeNo, txID, mch, sub string) string {
	switch {
	case req.OutTradeNo != "" && outTradeNo != req.OutTradeNo:
		return fmt.Sprintf("answer is about out_trade_no %q, not the order asked about", clip(outTradeNo, 64))
	case req.OutTradeNo == "" && txID != req.TransactionID:
		return fmt.Sprintf("answer is about transaction_id %q, not the order asked about", clip(txID, 64))
	}
	want := req.MchID
	if want == "" {
		want = defaultMch
	}
	if mch != "" && mch != want {
		return fmt.Sprintf("answer is about merchant %q, not %q", clip(mch, 64), want)
	}
	if sub != "" && sub != req.SubMchID {
		return fmt.Sprintf("answer is about sub-merchant %q, not %q", clip(sub, 64), req.SubMchID)
	}
	return ""
}

// confirmByQuery settles a close whose answer claimed a final result
// (claim) without a valid signature (closeErr, wrapping
// ErrUntrustedResponse), with a signed Query Order answer:
//
//   - CLOSED, REVOKED: ResultClosed if the answer claimed a fresh close (v3
//     204, v2 SUCCESS), else ResultAlreadyClosed;
//   - SUCCESS, REFUND: ResultPaid;
//   - order does not exist: ResultNotFound;
//   - NOTPAY, USERPAYING, PAYERROR: a ClassRetryable *Error with the trade
//     state as Code, wrapping ErrUntrustedResponse and ErrOrderOpen: the
//     order is still open and must be closed again;
//   - any other state, or a query that fails or is not trusted: closeErr,
//     ClassRetryable and wrapping ErrUntrustedResponse, as without a query.
//
// The Outcome carries the query's answer: ConfirmedByQuery, TradeState,
// TransactionID, and its HTTPStatus and RequestID.
func confirmByQuery(ctx context.Context, q Querier, req CloseRequest, claim Result, closeErr *Error) (Outcome, error) {
	qr, err := q.Query(ctx, req)
	if err != nil {
		e := *closeErr
		e.Message += "; Query Order could not confirm it: " + err.Error()
		var qe *Error
		if errors.As(err, &qe) && qe.RetryAfter > e.RetryAfter {
			e.RetryAfter = qe.RetryAfter
		}
		return Outcome{}, &e
	}
	out := Outcome{
		HTTPStatus: qr.HTTPStatus, RequestID: qr.RequestID, Message: qr.TradeStateDesc,
		ConfirmedByQuery: true, TradeState: qr.TradeState, TransactionID: qr.TransactionID,
	}
	switch {
	case qr.NotFound:
		out.Result, out.Code = ResultNotFound, qr.Code
		return out, nil
	case qr.TradeState == TradeStateClosed || qr.TradeState == TradeStateRevoked:
		out.Result = ResultAlreadyClosed
		if claim == ResultClosed {
			out.Result = ResultClosed
		}
		return out, nil
	case qr.TradeState == TradeStateSuccess || qr.TradeState == TradeStateRefund:
		out.Result = ResultPaid
		return out, nil
	case qr.TradeState == TradeStateNotPay || qr.TradeState == TradeStateUserPaying || qr.TradeState == TradeStatePayError:
		return Outcome{}, &Error{
			Class: ClassRetryable, Code: qr.TradeState, HTTPStatus: qr.HTTPStatus, RequestID: qr.RequestID,
			Message: fmt.Sprintf("the close answer (%s) was not signed and Query Order says the order is still open (%s); close it again",
				claimName(claim, closeErr.Code), qr.TradeState),
			Err: fmt.Errorf("%w: %w", ErrUntrustedResponse, ErrOrderOpen),
		}
	}
	e := *closeErr
	e.Message += fmt.Sprintf("; Query Order answered trade_state %q, which does not settle it", clip(qr.TradeState, 32))
	return Outcome{}, &e
}

// claimName describes what an unverified close answer claimed.
func claimName(claim Result, code string) string {
	if code != "" {
		return code
	}
	if claim == ResultClosed {
		return "closed"
	}
	return claim.String()
}
