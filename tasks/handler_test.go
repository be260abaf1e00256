package tasks

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/wxclose/wxclose/retry"
	"github.com/wxclose/wxclose/wechat"
)

// The handler's decision table, driven through ProcessClose (the seam that
// ProcessTask calls with the task id and retry count read from asynq's
// context, which cannot be built outside asynq) with a fixed clock, a fake
// Closer and a fake Reconciler. The end-to-end tests in internal/worker
// cover the main paths against Redis and the sandbox.

const testMchID = "1900000109"

// clock is a fixed clock that only the fakes move.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// fakeCloser answers like a wechat.Closer: it refuses a request naming both
// order numbers, as both real clients do, and takes callLatency on the clock.
type fakeCloser struct {
	clock  *clock
	answer func(n int, req wechat.CloseRequest) (wechat.Outcome, error)
	calls  []wechat.CloseRequest
	sentAt []time.Time
}

const callLatency = 40 * time.Millisecond

func (f *fakeCloser) Close(_ context.Context, req wechat.CloseRequest) (wechat.Outcome, error) {
	f.calls = append(f.calls, req)
	f.sentAt = append(f.sentAt, f.clock.Now())
	f.clock.advance(callLatency)
	if req.OutTradeNo != "" && req.TransactionID != "" {
		return wechat.Outcome{}, &wechat.Error{Class: wechat.ClassPermanent,
			Message: "set only one of OutTradeNo and TransactionID", Err: wechat.ErrInvalidRequest}
	}
	return f.answer(len(f.calls), req)
}

type fakeReconciler struct {
	err      error
	dup      bool
	payloads []ReconcilePayload
}

func (f *fakeReconciler) EnqueueReconcile(_ context.Context, p ReconcilePayload) (bool, error) {
	f.payloads = append(f.payloads, p)
	return f.dup, f.err
}

type recordObserver struct{ attempts []Attempt }

func (o *recordObserver) ObserveAttempt(a Attempt) { o.attempts = append(o.attempts, a) }

// instruction is what asynq is told to do, read back the way asynq and
// retry read the handler's error.
type instruction struct {
	kind   string // "done", "retry", "postpone", "archive"
	until  time.Time
	after  time.Duration
	reason string
}

func classify(err error) instruction {
	var pp *retry.Postpone
	switch {
	case err == nil:
		return instruction{kind: "done"}
	case errors.Is(err, asynq.SkipRetry):
		return instruction{kind: "archive", reason: err.Error()}
	case errors.As(err, &pp):
		if retry.IsFailure(err) {
			panic("a postponement counted as a failure")
		}
		return instruction{kind: "postpone", until: pp.Until, after: pp.After, reason: err.Error()}
	}
	if !retry.IsFailure(err) {
		panic("a retry did not count as a failure")
	}
	return instruction{kind: "retry", reason: err.Error()}
}

func weErr(class wechat.Class, status int, code string) *wechat.Error {
	return &wechat.Error{Class: class, HTTPStatus: status, Code: code, Message: "test " + code, RequestID: "req-err"}
}

func answerWith(out wechat.Outcome, err error) func(int, wechat.CloseRequest) (wechat.Outcome, error) {
	return func(int, wechat.CloseRequest) (wechat.Outcome, error) { return out, err }
}

func TestProcessCloseDecisionTable(t *testing.T) {
	now := time.Date(2026, 11, 22, 10, 10, 0, 500_000_000, time.UTC)
	created := now.Add(-10 * time.Minute) // long past the 5-minute mark and its window
	justDue := now.Add(-MinCloseAge - 10*time.Second)
	base := ClosePayload{OutTradeNo: "ORDER-1", MchID: testMchID, CreatedAt: created}
	with := func(mutate func(*ClosePayload)) ClosePayload {
		p := base
		mutate(&p)
		return p
	}
	closed := wechat.Outcome{Result: wechat.ResultClosed, HTTPStatus: 204, RequestID: "req-1"}
	paid := wechat.Outcome{Result: wechat.ResultPaid, Code: "ORDERPAID", Message: "paid", HTTPStatus: 400, RequestID: "req-2"}
	reqFor := func(no string) *wechat.CloseRequest {
		return &wechat.CloseRequest{OutTradeNo: no, MchID: testMchID}
	}

	tests := []struct {
		name string
		// pl is the payload; raw, when set, is sent instead.
		pl  ClosePayload
		raw string
		// id is the task id; if empty, CloseTaskID(pl.Ref()).
		id         string
		taskType   string // if empty, TypeClose
		retried    int
		answer     func(int, wechat.CloseRequest) (wechat.Outcome, error)
		reconciler fakeReconciler
		clockAhead time.Duration

		want          instruction
		wantReasonHas []string
		wantReq       *wechat.CloseRequest // nil: WeChat Pay is not called
		wantSleep     time.Duration
		wantReconcile *ReconcilePayload
		wantAttempt   Attempt // compared: Outcome, Code, Confirmed, Reconciled, Order
		wantResult    *CloseResult
	}{
		{
			name: "closed", pl: base, answer: answerWith(closed, nil),
			want: instruction{kind: "done"}, wantReq: reqFor("ORDER-1"),
			wantAttempt: Attempt{Outcome: OutcomeClosed},
			wantResult:  &CloseResult{Outcome: OutcomeClosed, HTTPStatus: 204, RequestID: "req-1"},
		},
		{
			name: "already closed", pl: base,
			answer: answerWith(wechat.Outcome{Result: wechat.ResultAlreadyClosed, Code: "ORDERCLOSED", HTTPStatus: 400}, nil),
			want:   instruction{kind: "done"}, wantReq: reqFor("ORDER-1"),
			wantAttempt: Attempt{Outcome: OutcomeAlreadyClosed, Code: "ORDERCLOSED"},
			wantResult:  &CloseResult{Outcome: OutcomeAlreadyClosed, Code: "ORDERCLOSED", HTTPStatus: 400},
		},
		{
			name: "not found", pl: base,
			answer: answerWith(wechat.Outcome{Result: wechat.ResultNotFound, Code: "ORDER_NOT_EXIST", HTTPStatus: 404}, nil),
			want:   instruction{kind: "done"}, wantReq: reqFor("ORDER-1"),
			wantAttempt: Attempt{Outcome: OutcomeNotFound, Code: "ORDER_NOT_EXIST"},
			wantResult:  &CloseResult{Outcome: OutcomeNotFound, Code: "ORDER_NOT_EXIST", HTTPStatus: 404},
		},
		{
			name: "paid is handed to reconciliation", pl: base, answer: answerWith(paid, nil),
			want: instruction{kind: "done"}, wantReq: reqFor("ORDER-1"),
			wantReconcile: &ReconcilePayload{OutTradeNo: "ORDER-1", MchID: testMchID, CreatedAt: created, Reason: ReasonOrderPaid},
			wantAttempt:   Attempt{Outcome: OutcomePaid, Code: "ORDERPAID", Reconciled: true},
			wantResult:    &CloseResult{Outcome: OutcomePaid, Code: "ORDERPAID", Message: "paid", HTTPStatus: 400, RequestID: "req-2"},
		},
		{
			name: "paid again: reconciliation already has it", pl: base, answer: answerWith(paid, nil),
			reconciler: fakeReconciler{dup: true},
			want:       instruction{kind: "done"}, wantReq: reqFor("ORDER-1"),
			wantReconcile: &ReconcilePayload{OutTradeNo: "ORDER-1", MchID: testMchID, CreatedAt: created, Reason: ReasonOrderPaid},
			wantAttempt:   Attempt{Outcome: OutcomePaid, Code: "ORDERPAID"},
			wantResult:    &CloseResult{Outcome: OutcomePaid, Code: "ORDERPAID", Message: "paid", HTTPStatus: 400, RequestID: "req-2"},
		},
		{
			name: "paid but reconciliation fails: retry", pl: base, answer: answerWith(paid, nil),
			reconciler: fakeReconciler{err: errors.New("redis down")},
			want:       instruction{kind: "retry"}, wantReasonHas: []string{"reconciliation", "redis down"},
			wantReq:       reqFor("ORDER-1"),
			wantReconcile: &ReconcilePayload{OutTradeNo: "ORDER-1", MchID: testMchID, CreatedAt: created, Reason: ReasonOrderPaid},
			wantAttempt:   Attempt{Outcome: OutcomeRetry, Code: "ORDERPAID"},
		},
		{
			name: "paid, confirmed by a signed query", pl: base,
			answer: answerWith(wechat.Outcome{Result: wechat.ResultPaid, Code: "ORDERPAID", HTTPStatus: 200,
				ConfirmedByQuery: true, TradeState: "SUCCESS", TransactionID: "4200000000202611220000000001"}, nil),
			want: instruction{kind: "done"}, wantReq: reqFor("ORDER-1"),
			wantReconcile: &ReconcilePayload{OutTradeNo: "ORDER-1", TransactionID: "4200000000202611220000000001", MchID: testMchID,
				CreatedAt: created, Reason: ReasonOrderPaid, TradeState: "SUCCESS"},
			wantAttempt: Attempt{Outcome: OutcomePaid, Code: "ORDERPAID", Reconciled: true, Confirmed: true},
			wantResult: &CloseResult{Outcome: OutcomePaid, Code: "ORDERPAID", HTTPStatus: 200,
				ConfirmedByQuery: true, TradeState: "SUCCESS", TransactionID: "4200000000202611220000000001"},
		},
		{
			name: "paid by transaction_id keeps the payload's number",
			pl:   with(func(p *ClosePayload) { p.OutTradeNo, p.TransactionID = "", "4200000000202611220000000009" }),
			answer: answerWith(wechat.Outcome{Result: wechat.ResultPaid, Code: "ORDERPAID", ConfirmedByQuery: true,
				TradeState: "REFUND", TransactionID: "4200000000202611220000000009"}, nil),
			want:    instruction{kind: "done"},
			wantReq: &wechat.CloseRequest{TransactionID: "4200000000202611220000000009", MchID: testMchID},
			wantReconcile: &ReconcilePayload{TransactionID: "4200000000202611220000000009", MchID: testMchID,
				CreatedAt: created, Reason: ReasonOrderPaid, TradeState: "REFUND"},
			wantAttempt: Attempt{Outcome: OutcomePaid, Code: "ORDERPAID", Reconciled: true, Confirmed: true},
			wantResult: &CloseResult{Outcome: OutcomePaid, Code: "ORDERPAID", ConfirmedByQuery: true,
				TradeState: "REFUND", TransactionID: "4200000000202611220000000009"},
		},
		{
			name: "closed, confirmed by a signed query", pl: base,
			answer: answerWith(wechat.Outcome{Result: wechat.ResultAlreadyClosed, Code: "ORDERCLOSED", ConfirmedByQuery: true, TradeState: "CLOSED"}, nil),
			want:   instruction{kind: "done"}, wantReq: reqFor("ORDER-1"),
			wantAttempt: Attempt{Outcome: OutcomeAlreadyClosed, Code: "ORDERCLOSED", Confirmed: true},
			wantResult:  &CloseResult{Outcome: OutcomeAlreadyClosed, Code: "ORDERCLOSED", ConfirmedByQuery: true, TradeState: "CLOSED"},
		},
		{
			name: "retryable", pl: base, answer: answerWith(wechat.Outcome{}, weErr(wechat.ClassRetryable, 500, "SYSTEM_ERROR")),
			want: instruction{kind: "retry"}, wantReasonHas: []string{"SYSTEM_ERROR"}, wantReq: reqFor("ORDER-1"),
			wantAttempt: Attempt{Outcome: OutcomeRetry, Code: "SYSTEM_ERROR"},
		},
		{
			name: "unsigned final answer is retried, never done", pl: base,
			answer: answerWith(wechat.Outcome{}, &wechat.Error{Class: wechat.ClassRetryable, Code: "ORDERCLOSED", HTTPStatus: 400, Err: wechat.ErrUntrustedResponse}),
			want:   instruction{kind: "retry"}, wantReq: reqFor("ORDER-1"),
			wantAttempt: Attempt{Outcome: OutcomeRetry, Code: "ORDERCLOSED"},
		},
		{
			name: "no final state and no error: retry", pl: base, answer: answerWith(wechat.Outcome{}, nil),
			want: instruction{kind: "retry"}, wantReasonHas: []string{"no final state"}, wantReq: reqFor("ORDER-1"),
			wantAttempt: Attempt{Outcome: OutcomeRetry},
		},
		{
			name: "exhausted", pl: base, retried: DefaultMaxRetry,
			answer: answerWith(wechat.Outcome{}, weErr(wechat.ClassRetryable, 502, "SERVICE_UNAVAILABLE")),
			want:   instruction{kind: "archive"}, wantReasonHas: []string{"gave up after 20 retries", "SERVICE_UNAVAILABLE"},
			wantReq: reqFor("ORDER-1"), wantAttempt: Attempt{Outcome: OutcomeExhausted, Code: "SERVICE_UNAVAILABLE"},
		},
		{
			name: "rate limited with a hint: snooze for it", pl: base,
			answer: answerWith(wechat.Outcome{}, &wechat.Error{Class: wechat.ClassRateLimited, HTTPStatus: 429, Code: "RATE_LIMITED", RetryAfter: 3 * time.Second}),
			want:   instruction{kind: "postpone", after: 3 * time.Second}, wantReasonHas: []string{"rate limited", "RATE_LIMITED"},
			wantReq: reqFor("ORDER-1"), wantAttempt: Attempt{Outcome: OutcomeRateLimited, Code: "RATE_LIMITED"},
		},
		{
			name: "rate limited without a hint: retry's short pause", pl: base, retried: DefaultMaxRetry - 1,
			answer: answerWith(wechat.Outcome{}, weErr(wechat.ClassRateLimited, 429, "FREQUENCY_LIMITED")),
			want:   instruction{kind: "postpone"}, wantReq: reqFor("ORDER-1"),
			wantAttempt: Attempt{Outcome: OutcomeRateLimited, Code: "FREQUENCY_LIMITED"},
		},
		{
			name: "permanent", pl: base, answer: answerWith(wechat.Outcome{}, weErr(wechat.ClassPermanent, 400, "PARAM_ERROR")),
			want: instruction{kind: "archive"}, wantReasonHas: []string{"PARAM_ERROR"}, wantReq: reqFor("ORDER-1"),
			wantAttempt: Attempt{Outcome: OutcomePermanent, Code: "PARAM_ERROR"},
		},
		{
			name:          "possibly early: INVALID_REQUEST just after the mark is postponed 30s",
			pl:            with(func(p *ClosePayload) { p.CreatedAt = justDue }),
			answer:        answerWith(wechat.Outcome{}, weErr(wechat.ClassPermanent, 400, "INVALID_REQUEST")),
			want:          instruction{kind: "postpone", until: now.Add(callLatency + PossibleEarlyPause)},
			wantReasonHas: []string{"possible early close", "INVALID_REQUEST"},
			wantReq:       reqFor("ORDER-1"), wantAttempt: Attempt{Outcome: OutcomePossiblyEarly, Code: "INVALID_REQUEST"},
		},
		{
			name:    "possibly early: an unknown code counts too",
			pl:      with(func(p *ClosePayload) { p.CreatedAt = justDue }),
			answer:  answerWith(wechat.Outcome{}, weErr(wechat.ClassPermanent, 403, "ORDER_TOO_NEW")),
			want:    instruction{kind: "postpone", until: now.Add(callLatency + PossibleEarlyPause)},
			wantReq: reqFor("ORDER-1"), wantAttempt: Attempt{Outcome: OutcomePossiblyEarly, Code: "ORDER_TOO_NEW"},
		},
		{
			name: "possibly early window counts the measured clock offset",
			pl:   with(func(p *ClosePayload) { p.CreatedAt = now.Add(-MinCloseAge - 65*time.Second) }), clockAhead: 10 * time.Second,
			answer:  answerWith(wechat.Outcome{}, weErr(wechat.ClassPermanent, 400, "INVALID_REQUEST")),
			want:    instruction{kind: "postpone", until: now.Add(callLatency + PossibleEarlyPause)},
			wantReq: reqFor("ORDER-1"), wantAttempt: Attempt{Outcome: OutcomePossiblyEarly, Code: "INVALID_REQUEST"},
		},
		{
			name:   "configuration code just after the mark is archived (SIGN_ERROR)",
			pl:     with(func(p *ClosePayload) { p.CreatedAt = justDue }),
			answer: answerWith(wechat.Outcome{}, weErr(wechat.ClassPermanent, 401, "SIGN_ERROR")),
			want:   instruction{kind: "archive"}, wantReasonHas: []string{"SIGN_ERROR"},
			wantReq: reqFor("ORDER-1"), wantAttempt: Attempt{Outcome: OutcomePermanent, Code: "SIGN_ERROR"},
		},
		{
			name:   "configuration code just after the mark is archived (NO_AUTH)",
			pl:     with(func(p *ClosePayload) { p.CreatedAt = justDue }),
			answer: answerWith(wechat.Outcome{}, weErr(wechat.ClassPermanent, 403, "NO_AUTH")),
			want:   instruction{kind: "archive"}, wantReq: reqFor("ORDER-1"),
			wantAttempt: Attempt{Outcome: OutcomePermanent, Code: "NO_AUTH"},
		},
		{
			name:   "local error just after the mark is archived: it never reached WeChat Pay",
			pl:     with(func(p *ClosePayload) { p.CreatedAt = justDue }),
			answer: answerWith(wechat.Outcome{}, &wechat.Error{Class: wechat.ClassPermanent, Message: "v2 needs out_trade_no", Err: wechat.ErrInvalidRequest}),
			want:   instruction{kind: "archive"}, wantReq: reqFor("ORDER-1"),
			wantAttempt: Attempt{Outcome: OutcomePermanent},
		},
		{
			name:   "both order numbers: out_trade_no wins and the order is closed",
			pl:     with(func(p *ClosePayload) { p.TransactionID = "4200000000202611220000000001" }),
			answer: answerWith(closed, nil),
			want:   instruction{kind: "done"}, wantReq: reqFor("ORDER-1"),
			wantAttempt: Attempt{Outcome: OutcomeClosed},
			wantResult:  &CloseResult{Outcome: OutcomeClosed, HTTPStatus: 204, RequestID: "req-1"},
		},
		{
			name: "no mchid: the id has '_' and the worker's merchant is used",
			pl:   with(func(p *ClosePayload) { p.MchID = "" }), id: "close:_:out_trade_no:ORDER-1",
			answer: answerWith(closed, nil),
			want:   instruction{kind: "done"}, wantReq: reqFor("ORDER-1"),
			wantAttempt: Attempt{Outcome: OutcomeClosed},
			wantResult:  &CloseResult{Outcome: OutcomeClosed, HTTPStatus: 204, RequestID: "req-1"},
		},
		{
			name: "invalid payload", raw: `{not json`, id: "close:_:out_trade_no:X",
			want: instruction{kind: "archive"}, wantReasonHas: []string{"invalid close order", "without calling WeChat Pay"},
			wantAttempt: Attempt{Outcome: OutcomeInvalidPayload},
		},
		{
			name: "unknown field closeAt",
			raw:  `{"out_trade_no":"ORDER-1","mchid":"1900000109","created_at":"2026-11-22T10:00:00Z","closeAt":"2026-11-22T12:00:00Z"}`,
			id:   "close:1900000109:out_trade_no:ORDER-1",
			want: instruction{kind: "archive"}, wantReasonHas: []string{`"closeAt"`, `"close_at"`},
			wantAttempt: Attempt{Outcome: OutcomeInvalidPayload},
		},
		{
			name: "upper-case key",
			raw:  `{"OUT_TRADE_NO":"ORDER-1","mchid":"1900000109","created_at":"2026-11-22T10:00:00Z"}`,
			id:   "close:1900000109:out_trade_no:ORDER-1",
			want: instruction{kind: "archive"}, wantReasonHas: []string{`"OUT_TRADE_NO"`, "case-sensitive"},
			wantAttempt: Attempt{Outcome: OutcomeInvalidPayload},
		},
		{
			name: "duplicate key",
			raw:  `{"out_trade_no":"ORDER-1","mchid":"1900000109","created_at":"2026-11-22T10:00:00Z","out_trade_no":"ORDER-2"}`,
			id:   "close:1900000109:out_trade_no:ORDER-2",
			want: instruction{kind: "archive"}, wantReasonHas: []string{`"out_trade_no" appears more than once`},
			wantAttempt: Attempt{Outcome: OutcomeInvalidPayload},
		},
		{
			name: "task id does not match the payload", pl: base, id: "close:1900000109:out_trade_no:ORDER-2",
			want:          instruction{kind: "archive"},
			wantReasonHas: []string{"close:1900000109:out_trade_no:ORDER-2", "close:1900000109:out_trade_no:ORDER-1"},
			wantAttempt:   Attempt{Outcome: OutcomeInvalidPayload, Order: OrderRef{OutTradeNo: "ORDER-1", MchID: testMchID}},
		},
		{
			name: "task id without the merchant the payload names", pl: base, id: "close:_:out_trade_no:ORDER-1",
			want: instruction{kind: "archive"}, wantReasonHas: []string{"close:_:out_trade_no:ORDER-1", "close:1900000109:out_trade_no:ORDER-1"},
			wantAttempt: Attempt{Outcome: OutcomeInvalidPayload, Order: OrderRef{OutTradeNo: "ORDER-1", MchID: testMchID}},
		},
		{
			name: "another task type on the close queue", pl: base, taskType: "order:refund",
			want: instruction{kind: "archive"}, wantReasonHas: []string{`"order:refund"`},
			wantAttempt: Attempt{Outcome: OutcomeInvalidPayload},
		},
		{
			name: "created_at more than an hour ahead",
			pl:   with(func(p *ClosePayload) { p.CreatedAt = now.Add(MaxCreatedAtAhead + time.Second) }),
			want: instruction{kind: "archive"}, wantReasonHas: []string{"created_at", "in the future"},
			wantAttempt: Attempt{Outcome: OutcomeInvalidPayload, Order: OrderRef{OutTradeNo: "ORDER-1", MchID: testMchID}},
		},
		{
			name: "created_at in the year 2400",
			pl:   with(func(p *ClosePayload) { p.CreatedAt = time.Date(2400, 1, 1, 0, 0, 0, 0, time.UTC) }),
			want: instruction{kind: "archive"}, wantReasonHas: []string{"created_at 2400-01-01T00:00:00Z"},
			wantAttempt: Attempt{Outcome: OutcomeInvalidPayload, Order: OrderRef{OutTradeNo: "ORDER-1", MchID: testMchID}},
		},
		{
			name:        "created_at within the hour ahead is postponed to its 5-minute mark",
			pl:          with(func(p *ClosePayload) { p.CreatedAt = now.Add(30 * time.Minute) }),
			want:        instruction{kind: "postpone", until: now.Add(35*time.Minute + DefaultCloseMargin)},
			wantAttempt: Attempt{Outcome: OutcomePostponed},
		},
		{
			name: "close_at in the future is waited for",
			pl:   with(func(p *ClosePayload) { p.CloseAt = now.Add(20 * time.Minute) }),
			want: instruction{kind: "postpone", until: now.Add(20 * time.Minute)}, wantReasonHas: []string{"close_at"},
			wantAttempt: Attempt{Outcome: OutcomePostponed},
		},
		{
			name: "close_at a moment away is waited for in place",
			pl:   with(func(p *ClosePayload) { p.CloseAt = now.Add(3 * time.Second) }), answer: answerWith(closed, nil),
			want: instruction{kind: "done"}, wantReq: reqFor("ORDER-1"), wantSleep: 3 * time.Second,
			wantAttempt: Attempt{Outcome: OutcomeClosed},
			wantResult:  &CloseResult{Outcome: OutcomeClosed, HTTPStatus: 204, RequestID: "req-1"},
		},
		{
			name: "close_at in the past does not delay",
			pl:   with(func(p *ClosePayload) { p.CloseAt = now.Add(-time.Minute) }), answer: answerWith(closed, nil),
			want: instruction{kind: "done"}, wantReq: reqFor("ORDER-1"),
			wantAttempt: Attempt{Outcome: OutcomeClosed},
			wantResult:  &CloseResult{Outcome: OutcomeClosed, HTTPStatus: 204, RequestID: "req-1"},
		},
		{
			name: "close_at more than 7 days after created_at",
			pl:   with(func(p *ClosePayload) { p.CloseAt = created.Add(MaxCloseDelay + time.Second) }),
			want: instruction{kind: "archive"}, wantReasonHas: []string{"close_at", "7 days"},
			wantAttempt: Attempt{Outcome: OutcomeInvalidPayload},
		},
		{
			name: "close_at before created_at",
			pl:   with(func(p *ClosePayload) { p.CloseAt = created.Add(-time.Second) }),
			want: instruction{kind: "archive"}, wantReasonHas: []string{"close_at", "before created_at"},
			wantAttempt: Attempt{Outcome: OutcomeInvalidPayload},
		},
		{
			name:          "far too early: postponed to creation + 5m + margin",
			pl:            with(func(p *ClosePayload) { p.CreatedAt = now.Add(-MinCloseAge + 20*time.Second) }),
			want:          instruction{kind: "postpone", until: now.Add(20*time.Second + DefaultCloseMargin)},
			wantReasonHas: []string{"5 minutes"}, wantAttempt: Attempt{Outcome: OutcomePostponed},
		},
		{
			name: "at the 5-minute mark: waits out the margin in place",
			pl:   with(func(p *ClosePayload) { p.CreatedAt = now.Add(-MinCloseAge) }), answer: answerWith(closed, nil),
			want: instruction{kind: "done"}, wantReq: reqFor("ORDER-1"), wantSleep: DefaultCloseMargin,
			wantAttempt: Attempt{Outcome: OutcomeClosed},
			wantResult:  &CloseResult{Outcome: OutcomeClosed, HTTPStatus: 204, RequestID: "req-1"},
		},
		{
			name: "clock ahead beyond the margin is added to the guard",
			pl:   with(func(p *ClosePayload) { p.CreatedAt = now.Add(-MinCloseAge - 2*time.Second) }), clockAhead: 3 * time.Second,
			answer: answerWith(closed, nil),
			want:   instruction{kind: "done"}, wantReq: reqFor("ORDER-1"), wantSleep: time.Second,
			wantAttempt: Attempt{Outcome: OutcomeClosed},
			wantResult:  &CloseResult{Outcome: OutcomeClosed, HTTPStatus: 204, RequestID: "req-1"},
		},
		{
			name: "clock ahead within the margin adds nothing",
			pl:   with(func(p *ClosePayload) { p.CreatedAt = now.Add(-MinCloseAge - 2*time.Second) }), clockAhead: 500 * time.Millisecond,
			answer: answerWith(closed, nil),
			want:   instruction{kind: "done"}, wantReq: reqFor("ORDER-1"),
			wantAttempt: Attempt{Outcome: OutcomeClosed},
			wantResult:  &CloseResult{Outcome: OutcomeClosed, HTTPStatus: 204, RequestID: "req-1"},
		},
		{
			name: "large clock ahead postpones",
			pl:   with(func(p *ClosePayload) { p.CreatedAt = now.Add(-MinCloseAge - 2*time.Second) }), clockAhead: 30 * time.Second,
			want:        instruction{kind: "postpone", until: now.Add(28 * time.Second)},
			wantAttempt: Attempt{Outcome: OutcomePostponed},
		},
		{
			name: "clock ahead delays close_at too",
			pl:   with(func(p *ClosePayload) { p.CloseAt = now.Add(time.Minute) }), clockAhead: 10 * time.Second,
			want:        instruction{kind: "postpone", until: now.Add(time.Minute + 10*time.Second)},
			wantAttempt: Attempt{Outcome: OutcomePostponed},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := &clock{now: now}
			closer := &fakeCloser{clock: clk, answer: tt.answer}
			if closer.answer == nil {
				closer.answer = func(int, wechat.CloseRequest) (wechat.Outcome, error) {
					t.Error("WeChat Pay was called")
					return wechat.Outcome{}, errors.New("unexpected call")
				}
			}
			rec := tt.reconciler
			obs := &recordObserver{}
			cfg := HandlerConfig{Closer: closer, Reconciler: &rec, MchID: testMchID, Observer: obs, Now: clk.Now}
			if tt.clockAhead != 0 {
				cfg.ClockAhead = func() time.Duration { return tt.clockAhead }
			}
			h, err := NewCloseHandler(cfg)
			if err != nil {
				t.Fatal(err)
			}
			var slept time.Duration
			h.sleep = func(_ context.Context, d time.Duration) error {
				slept += d
				clk.advance(d)
				return nil
			}
			payload := []byte(tt.raw)
			id := tt.id
			if tt.raw == "" {
				payload = mustJSON(t, tt.pl)
				if id == "" {
					id = CloseTaskID(tt.pl.Ref())
				}
			}
			meta := TaskMeta{ID: id, Type: cmp.Or(tt.taskType, TypeClose), Retried: tt.retried, DueAt: now.Add(-2 * time.Second)}

			res, err := h.ProcessClose(context.Background(), meta, payload)

			got := classify(err)
			if got.kind != tt.want.kind || !got.until.Equal(tt.want.until) || got.after != tt.want.after {
				t.Fatalf("instruction = %s until %v after %s (%v), want %s until %v after %s",
					got.kind, got.until, got.after, err, tt.want.kind, tt.want.until, tt.want.after)
			}
			for _, s := range tt.wantReasonHas {
				if !strings.Contains(got.reason, s) {
					t.Errorf("reason %q does not contain %q", got.reason, s)
				}
			}
			if tt.wantAttempt.Outcome == OutcomeInvalidPayload && !errors.Is(err, ErrInvalidPayload) {
				t.Errorf("archived %v, want it to wrap ErrInvalidPayload", err)
			}
			switch {
			case tt.wantReq == nil && len(closer.calls) != 0:
				t.Errorf("WeChat Pay called with %+v, want no call", closer.calls)
			case tt.wantReq != nil && (len(closer.calls) != 1 || closer.calls[0] != *tt.wantReq):
				t.Errorf("WeChat Pay calls %+v, want exactly %+v", closer.calls, *tt.wantReq)
			}
			if slept != tt.wantSleep {
				t.Errorf("waited in place %s, want %s", slept, tt.wantSleep)
			}
			for _, at := range closer.sentAt {
				if floor := EarliestClose(tt.pl.CreatedAt).Add(DefaultCloseMargin); at.Before(floor) || at.Before(tt.pl.CloseAt) {
					t.Errorf("WeChat Pay called at %v, before %v or close_at %v", at, floor, tt.pl.CloseAt)
				}
			}
			checkReconcile(t, rec.payloads, tt.wantReconcile, now.Add(callLatency))
			checkAttempt(t, obs.attempts, id, tt.retried, tt.wantAttempt, tt.wantReq != nil)
			checkResult(t, res, tt.wantResult)
		})
	}
}

func checkReconcile(t *testing.T, got []ReconcilePayload, want *ReconcilePayload, detectedAt time.Time) {
	t.Helper()
	if want == nil {
		if len(got) != 0 {
			t.Errorf("reconciliation got %+v, want nothing", got)
		}
		return
	}
	w := *want
	w.DetectedAt = detectedAt.UTC()
	if len(got) != 1 || got[0] != w {
		t.Errorf("reconciliation got %+v, want exactly %+v", got, w)
	}
	if len(got) == 1 {
		ref := OrderRef{OutTradeNo: got[0].OutTradeNo, TransactionID: got[0].TransactionID, MchID: got[0].MchID}
		if id := ReconcileTaskID(ref); !strings.HasPrefix(id, "reconcile:") || ref.Validate() != nil {
			t.Errorf("reconciliation payload %+v does not name a valid order", got[0])
		}
	}
}

func checkAttempt(t *testing.T, got []Attempt, id string, retried int, want Attempt, called bool) {
	t.Helper()
	if len(got) != 1 {
		t.Fatalf("observed %d attempts (%+v), want 1", len(got), got)
	}
	a := got[0]
	if a.TaskID != id || a.Retried != retried || a.Outcome != want.Outcome || a.Code != want.Code ||
		a.Confirmed != want.Confirmed || a.Reconciled != want.Reconciled {
		t.Errorf("attempt = %+v, want task %s retried %d outcome %s code %q confirmed %v reconciled %v",
			a, id, retried, want.Outcome, want.Code, want.Confirmed, want.Reconciled)
	}
	if want.Order != (OrderRef{}) && a.Order != want.Order {
		t.Errorf("attempt order = %+v, want %+v", a.Order, want.Order)
	}
	if called && a.WeChatLatency != callLatency {
		t.Errorf("attempt latency = %s, want %s", a.WeChatLatency, callLatency)
	}
	if !called && a.WeChatLatency != 0 {
		t.Errorf("attempt latency = %s without a call", a.WeChatLatency)
	}
}

func checkResult(t *testing.T, got, want *CloseResult) {
	t.Helper()
	if (got == nil) != (want == nil) {
		t.Fatalf("result = %+v, want %+v", got, want)
	}
	if got == nil {
		return
	}
	g := *got
	if g.FinishedAt.IsZero() {
		t.Errorf("result has no finished_at")
	}
	g.FinishedAt = time.Time{}
	if g != *want {
		t.Errorf("result = %+v, want %+v", g, *want)
	}
}

// TestPossibleEarlyAtMostTwice follows one order refused with
// INVALID_REQUEST on every call from the 5-minute mark on: the window and
// the pause let the refusal be postponed twice, then it is archived.
func TestPossibleEarlyAtMostTwice(t *testing.T) {
	created := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	clk := &clock{now: EarliestClose(created).Add(DefaultCloseMargin)}
	closer := &fakeCloser{clock: clk, answer: answerWith(wechat.Outcome{}, weErr(wechat.ClassPermanent, 400, "INVALID_REQUEST"))}
	obs := &recordObserver{}
	h, err := NewCloseHandler(HandlerConfig{Closer: closer, Reconciler: &fakeReconciler{}, Observer: obs, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	p := ClosePayload{OutTradeNo: "EARLY-1", MchID: testMchID, CreatedAt: created}
	meta := TaskMeta{ID: CloseTaskID(p.Ref()), Type: TypeClose}
	var kinds []string
	for range 5 {
		_, err := h.ProcessClose(context.Background(), meta, mustJSON(t, p))
		in := classify(err)
		kinds = append(kinds, in.kind)
		if in.kind != "postpone" {
			break
		}
		// asynq runs the task again at the postponed time (a second late,
		// as whole-second storage may make it).
		clk.now = in.until.Add(time.Second)
	}
	if want := "postpone postpone archive"; strings.Join(kinds, " ") != want {
		t.Fatalf("instructions %v, want %s", kinds, want)
	}
	if len(obs.attempts) != 3 || obs.attempts[0].Outcome != OutcomePossiblyEarly || obs.attempts[1].Outcome != OutcomePossiblyEarly ||
		obs.attempts[2].Outcome != OutcomePermanent {
		t.Fatalf("attempts %+v, want possibly_early twice then permanent", obs.attempts)
	}
}

// TestProcessCloseWaitCancelled: a shutdown during the in-place wait is a
// plain error (asynq puts the task back), and WeChat Pay is not called.
func TestProcessCloseWaitCancelled(t *testing.T) {
	now := time.Date(2026, 11, 22, 10, 10, 0, 0, time.UTC)
	clk := &clock{now: now}
	closer := &fakeCloser{clock: clk, answer: answerWith(wechat.Outcome{Result: wechat.ResultClosed}, nil)}
	h, err := NewCloseHandler(HandlerConfig{Closer: closer, Reconciler: &fakeReconciler{}, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	p := ClosePayload{OutTradeNo: "WAIT-1", CreatedAt: now.Add(-MinCloseAge)}
	_, err = h.ProcessClose(ctx, TaskMeta{ID: CloseTaskID(p.Ref()), Type: TypeClose}, mustJSON(t, p))
	if !errors.Is(err, context.Canceled) || classify(err).kind != "retry" || len(closer.calls) != 0 {
		t.Fatalf("err = %v, calls %d; want a cancelled wait and no call", err, len(closer.calls))
	}
}

// TestProcessTaskWithoutAsynqContext: ProcessTask outside asynq (no task id
// in the context) archives rather than calling WeChat Pay for a task whose
// id it cannot check.
func TestProcessTaskWithoutAsynqContext(t *testing.T) {
	clk := &clock{now: time.Date(2026, 11, 22, 10, 10, 0, 0, time.UTC)}
	closer := &fakeCloser{clock: clk, answer: answerWith(wechat.Outcome{Result: wechat.ResultClosed}, nil)}
	h, err := NewCloseHandler(HandlerConfig{Closer: closer, Reconciler: &fakeReconciler{}, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	p := ClosePayload{OutTradeNo: "CTX-1", CreatedAt: clk.now.Add(-time.Hour)}
	err = h.ProcessTask(context.Background(), asynq.NewTask(TypeClose, mustJSON(t, p)))
	if classify(err).kind != "archive" || len(closer.calls) != 0 {
		t.Fatalf("ProcessTask = %v with %d calls, want archived without a call", err, len(closer.calls))
	}
}

func TestNewCloseHandlerRequires(t *testing.T) {
	if _, err := NewCloseHandler(HandlerConfig{Reconciler: &fakeReconciler{}}); err == nil || !strings.Contains(err.Error(), "Closer") {
		t.Errorf("no Closer: %v", err)
	}
	if _, err := NewCloseHandler(HandlerConfig{Closer: &fakeCloser{}}); err == nil || !strings.Contains(err.Error(), "Reconciler") {
		t.Errorf("no Reconciler: %v", err)
	}
}

func mustJSON(t *testing.T, p ClosePayload) []byte {
	t.Helper()
	data, err := json.Marshal(p)
	if err != nil {
		t.Fatalf("marshal %+v: %v", p, err)
	}
	return data
}
