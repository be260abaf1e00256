package tasks

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
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

// CloseResult is how a completed close task ended, for operators (`enqueue
// status`, the dashboard, the HTTP API). Its Outcome is one of the final
// outcomes (see FinalOutcome). The worker stores it as the task's result,
// except for a plain close (see NeedsRecord), which readers recover from
// the task's state (ReadCloseRecord).
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

// NeedsRecord reports whether the worker stores r with its task. It does
// not for a plain close (outcome closed, from a signed Close Order answer
// rather than a Query Order), the outcome of almost every close: a completed
// close task without a CloseResult is read as exactly that (see
// CompletedCloseResult), so the write would cost a Redis round trip per
// close and say nothing more than the time, status and request id of the
// answer. Every other result is stored.
func (r *CloseResult) NeedsRecord() bool {
	return r.Outcome != OutcomeClosed || r.ConfirmedByQuery
}

// CompletedCloseResult reads the record stored with a close task that asynq
// reports as completed; completedAt is the task's completion time
// (TaskInfo.CompletedAt, zero if unknown). A stored CloseResult is returned
// as it is. No record, or a CloseFailure (left by an earlier attempt: the
// attempt that completes a plain close writes nothing), means a plain
// close: outcome closed, finished at completedAt. This is the one place
// that rule is decided. The error reports a record that is not a close
// record at all (or a failure with an outcome the worker never writes); the
// result is then nil.
func CompletedCloseResult(record []byte, completedAt time.Time) (*CloseResult, error) {
	r, f, err := DecodeCloseRecord(record)
	switch {
	case err != nil:
		return nil, err
	case r != nil:
		return r, nil
	case f != nil && !failureOutcome(f.Outcome):
		return nil, fmt.Errorf("stored record has an unknown outcome")
	}
	return &CloseResult{Outcome: OutcomeClosed, FinishedAt: completedAt}, nil
}

// failureOutcome reports whether outcome is one a CloseFailure carries.
func failureOutcome(outcome string) bool {
	switch outcome {
	case OutcomeRetry, OutcomeRateLimited, OutcomePermanent, OutcomeExhausted,
		OutcomePostponed, OutcomeInvalidPayload, OutcomePossiblyEarly:
		return true
	}
	return false
}

// ReadCloseRecord reads the record stored with a close task as its state
// requires: for a completed task, its CloseResult (CompletedCloseResult,
// never a CloseFailure); for any other, DecodeCloseRecord. Every reader of
// close records (`enqueue status` and `list`, the dashboard, the HTTP API)
// goes through it, so they agree on how a close ended.
func ReadCloseRecord(info *asynq.TaskInfo) (*CloseResult, *CloseFailure, error) {
	if info.State == asynq.TaskStateCompleted {
		r, err := CompletedCloseResult(info.Result, info.CompletedAt)
		return r, nil, err
	}
	return DecodeCloseRecord(info.Result)
}

// DecodeCloseRecord reads the record the worker stores with a close task
// (asynq's TaskInfo.Result): a *CloseResult when the outcome is final, a
// *CloseFailure otherwise. Exactly one is non-nil when err is nil. Empty
// data (no record: a task that has not run, a plain close, or one archived
// by a wxclose version that stored no failures) returns nil, nil, nil. It
// does not know the task's state; ReadCloseRecord does, and is what readers
// of a task use.
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
