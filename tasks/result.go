package tasks

import (
	"encoding/json"
	"fmt"
	"time"
)

// Attempt outcomes, as written to the worker's logs and metrics and to the
// record stored with each close task (CloseResult, CloseFailure). The first
// four are final states of the order.
const (
	OutcomeClosed         = "closed"
	OutcomeAlreadyClosed  = "already_closed"
	OutcomeNotFound       = "not_found"
	OutcomePaid           = "paid"
	OutcomeRetry          = "retry"
	OutcomeRateLimited    = "rate_limited"
	OutcomePermanent      = "permanent"
	OutcomeExhausted      = "exhausted"
	OutcomePostponed      = "postponed"
	OutcomeInvalidPayload = "invalid_payload"
	// OutcomePossiblyEarly is a refusal that may mean WeChat Pay thought the
	// close came too early: the task is postponed without spending a retry
	// instead of being archived.
	OutcomePossiblyEarly = "possibly_early"
)

// FinalOutcome reports whether outcome ends the close: closed,
// already_closed, not_found or paid. A stored record with a final outcome
// is a CloseResult; any other outcome is a CloseFailure.
func FinalOutcome(outcome string) bool {
	switch outcome {
	case OutcomeClosed, OutcomeAlreadyClosed, OutcomeNotFound, OutcomePaid:
		return true
	}
	return false
}

// Failure classes (CloseFailure.Class): what kind of failure WeChat Pay's
// answer was. They are the names the wechat package gives its error classes.
const (
	// ClassRetryable may succeed if tried again: SYSTEMERROR, 5xx, network
	// errors, timeouts, answers whose signature did not verify.
	ClassRetryable = "retryable"
	// ClassRateLimited means WeChat Pay asked the caller to slow down.
	ClassRateLimited = "rate_limited"
	// ClassPermanent fails the same way until a person fixes the cause
	// (PARAM_ERROR, SIGN_ERROR, NO_AUTH, an invalid payload).
	ClassPermanent = "permanent"
)

// CloseResult is stored as the result of a completed close task, so
// operators (`enqueue status`, the dashboard) can see how it ended. Its
// Outcome is one of the final outcomes (see FinalOutcome).
type CloseResult struct {
	Outcome    string    `json:"outcome"`
	Code       string    `json:"code,omitempty"`
	Message    string    `json:"message,omitempty"`
	HTTPStatus int       `json:"http_status,omitempty"`
	RequestID  string    `json:"request_id,omitempty"`
	FinishedAt time.Time `json:"finished_at"`
	// ConfirmedByQuery is true when the Close Order answer was unsigned and
	// the outcome comes from a signed Query Order answer.
	ConfirmedByQuery bool `json:"confirmed_by_query,omitempty"`
	// TradeState is that Query Order answer's trade_state.
	TradeState string `json:"trade_state,omitempty"`
	// TransactionID is WeChat Pay's order number when an answer gave it.
	TransactionID string `json:"transaction_id,omitempty"`
}

// CloseFailure is stored with a close task, in the same place as a
// CloseResult (asynq's task result), each time an attempt does not end the
// close: it will run again (retry, rate_limited, postponed,
// possibly_early) or it was archived (permanent, exhausted,
// invalid_payload). asynq keeps only the last error's text; this record
// keeps WeChat Pay's answer as data, so that `enqueue replay --code`,
// `enqueue list`, `enqueue status` and the dashboard never parse error
// strings. A later attempt's record replaces it; a completed close replaces
// it with its CloseResult.
type CloseFailure struct {
	// Outcome is one of the non-final Outcome* constants.
	Outcome string `json:"outcome"`
	// Code is WeChat Pay's error code ("SYSTEMERROR", "NO_AUTH", ...);
	// empty when WeChat Pay gave none (a transport error, an early start,
	// an invalid payload).
	Code string `json:"code,omitempty"`
	// Class is ClassRetryable, ClassRateLimited or ClassPermanent; empty for
	// a postponement that involved no failure (an early start).
	Class string `json:"class,omitempty"`
	// Message is WeChat Pay's message, or the local reason when WeChat Pay
	// was not asked or did not answer.
	Message    string `json:"message,omitempty"`
	HTTPStatus int    `json:"http_status,omitempty"`
	RequestID  string `json:"request_id,omitempty"`
	// Attempt is the attempt's number: 1 for the first run, then retries
	// spent + 1 (postponements do not spend retries).
	Attempt int `json:"attempt,omitempty"`
	// At is when the attempt ended.
	At time.Time `json:"at"`
}

// DecodeCloseRecord reads the record the worker stores with a close task
// (asynq's TaskInfo.Result): a *CloseResult when the outcome is final, a
// *CloseFailure otherwise. Exactly one is non-nil when err is nil. Empty
// data (no record: a task that has not run, or one archived by a wxclose
// version that stored no failures) returns nil, nil, nil.
func DecodeCloseRecord(data []byte) (*CloseResult, *CloseFailure, error) {
	if len(data) == 0 {
		return nil, nil, nil
	}
	var probe struct {
		Outcome string `json:"outcome"`
	}
	if err := json.Unmarshal(data, &probe); err != nil {
		return nil, nil, fmt.Errorf("stored record is not a close result: %w", err)
	}
	if probe.Outcome == "" {
		return nil, nil, fmt.Errorf("stored record has no outcome")
	}
	if FinalOutcome(probe.Outcome) {
		var r CloseResult
		if err := json.Unmarshal(data, &r); err != nil {
			return nil, nil, fmt.Errorf("stored record is not a close result: %w", err)
		}
		return &r, nil, nil
	}
	var f CloseFailure
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, nil, fmt.Errorf("stored record is not a close failure: %w", err)
	}
	return nil, &f, nil
}
