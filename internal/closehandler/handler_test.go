package closehandler

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/wxclose/wxclose/internal/ratelimit"
	"github.com/wxclose/wxclose/retry"
	"github.com/wxclose/wxclose/tasks"
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
	// answered are the outcomes and errors returned, in order.
	answered []answered
}

type answered struct {
	out wechat.Outcome
	err error
}

const callLatency = 40 * time.Millisecond

func (f *fakeCloser) Close(_ context.Context, req wechat.CloseRequest) (wechat.Outcome, error) {
	f.calls = append(f.calls, req)
	f.sentAt = append(f.sentAt, f.clock.Now())
	f.clock.advance(callLatency)
	var out wechat.Outcome
	var err error
	if req.OutTradeNo != "" && req.TransactionID != "" {
		err = &wechat.Error{Class: wechat.ClassPermanent,
			Message: "set only one of OutTradeNo and TransactionID", Err: wechat.ErrInvalidRequest}
	} else {
		out, err = f.answer(len(f.calls), req)
	}
	f.answered = append(f.answered, answered{out, err})
	return out, err
}

// fakeWriter stands in for asynq's ResultWriter, keeping every write.
type fakeWriter struct{ writes [][]byte }

func (w *fakeWriter) Write(data []byte) (int, error) {
	w.writes = append(w.writes, append([]byte(nil), data...))
	return len(data), nil
}

func (w *fakeWriter) TaskID() string { return "test" }

type fakeReconciler struct {
	err      error
	dup      bool
	payloads []tasks.ReconcilePayload
}

func (f *fakeReconciler) EnqueueReconcile(_ context.Context, p tasks.ReconcilePayload) (bool, error) {
	f.payloads = append(f.payloads, p)
	return f.dup, f.err
}

type recordObserver struct{ attempts []Attempt }

// fakeMerchants is a registry: mchid → merchant.
type fakeMerchants map[string]Merchant

func (f fakeMerchants) Merchant(mchid string) (Merchant, error) {
	if mchid == "" {
		if len(f) == 1 {
			for _, m := range f {
				return m, nil
			}
		}
		return Merchant{}, ErrMerchantRequired
	}
	if m, ok := f[mchid]; ok {
		return m, nil
	}
	return Merchant{}, fmt.Errorf("%w: %s", ErrUnknownMerchant, mchid)
}

// fakeLimiter answers every Reserve with slot (or err) and records the
// in-place bounds it was asked with and the throttled answers.
type fakeLimiter struct {
	slot      ratelimit.Slot
	err       error
	decrease  bool
	reserved  []time.Duration
	throttled int
}

func (f *fakeLimiter) Reserve(_ context.Context, _ string, rate float64, maxWait time.Duration) (ratelimit.Slot, error) {
	if !(rate > 0) {
		panic("reserve without a rate")
	}
	f.reserved = append(f.reserved, maxWait)
	return f.slot, f.err
}

func (f *fakeLimiter) Throttled(context.Context, string, float64, ratelimit.Slot) (bool, error) {
	f.throttled++
	return f.decrease, nil
}

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
	justDue := now.Add(-tasks.MinCloseAge - 10*time.Second)
	base := tasks.ClosePayload{OutTradeNo: "ORDER-1", MchID: testMchID, CreatedAt: created}
	with := func(mutate func(*tasks.ClosePayload)) tasks.ClosePayload {
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
		pl  tasks.ClosePayload
		raw string
		// id is the task id; if empty, tasks.CloseTaskID(pl.Ref()).
		id         string
		taskType   string // if empty, tasks.TypeClose
		retried    int
		answer     func(int, wechat.CloseRequest) (wechat.Outcome, error)
		reconciler fakeReconciler
		clockAhead time.Duration

		want          instruction
		wantReasonHas []string
		wantReq       *wechat.CloseRequest // nil: WeChat Pay is not called
		wantSleep     time.Duration
		wantReconcile *tasks.ReconcilePayload
		wantAttempt   Attempt // compared: Outcome, Code, Confirmed, Reconciled, Order
		wantResult    *tasks.CloseResult

		// merchants, when set, are the worker's merchants, each with its
		// own fake closer (answering as answer) and the rate limit rate;
		// wantCloser is the merchant whose closer must make the call (if
		// empty, testMchID), and no other may.
		merchants  []string
		rate       float64
		wantCloser string
		// limiter paces the merchants; wantMaxWait is the in-place bound
		// it must be asked with, wantThrottled how often it must be told
		// of a RATE_LIMITED answer, wantRate the attempt's rate fields.
		limiter       *fakeLimiter
		maxRetry      int
		wantMaxWait   time.Duration
		wantThrottled int
		wantRate      Attempt
	}{
		{
			name: "closed", pl: base, answer: answerWith(closed, nil),
			want: instruction{kind: "done"}, wantReq: reqFor("ORDER-1"),
			wantAttempt: Attempt{Outcome: tasks.OutcomeClosed},
			wantResult:  &tasks.CloseResult{Outcome: tasks.OutcomeClosed, HTTPStatus: 204, RequestID: "req-1"},
		},
		{
			name: "already closed", pl: base,
			answer: answerWith(wechat.Outcome{Result: wechat.ResultAlreadyClosed, Code: "ORDERCLOSED", HTTPStatus: 400}, nil),
			want:   instruction{kind: "done"}, wantReq: reqFor("ORDER-1"),
			wantAttempt: Attempt{Outcome: tasks.OutcomeAlreadyClosed, Code: "ORDERCLOSED"},
			wantResult:  &tasks.CloseResult{Outcome: tasks.OutcomeAlreadyClosed, Code: "ORDERCLOSED", HTTPStatus: 400},
		},
		{
			name: "not found", pl: base,
			answer: answerWith(wechat.Outcome{Result: wechat.ResultNotFound, Code: "ORDER_NOT_EXIST", HTTPStatus: 404}, nil),
			want:   instruction{kind: "done"}, wantReq: reqFor("ORDER-1"),
			wantAttempt: Attempt{Outcome: tasks.OutcomeNotFound, Code: "ORDER_NOT_EXIST"},
			wantResult:  &tasks.CloseResult{Outcome: tasks.OutcomeNotFound, Code: "ORDER_NOT_EXIST", HTTPStatus: 404},
		},
		{
			name: "paid is handed to reconciliation", pl: base, answer: answerWith(paid, nil),
			want: instruction{kind: "done"}, wantReq: reqFor("ORDER-1"),
			wantReconcile: &tasks.ReconcilePayload{OutTradeNo: "ORDER-1", MchID: testMchID, CreatedAt: created, Reason: tasks.ReasonOrderPaid},
			wantAttempt:   Attempt{Outcome: tasks.OutcomePaid, Code: "ORDERPAID", Reconciled: true},
			wantResult:    &tasks.CloseResult{Outcome: tasks.OutcomePaid, Code: "ORDERPAID", Message: "paid", HTTPStatus: 400, RequestID: "req-2"},
		},
		{
			name: "paid again: reconciliation already has it", pl: base, answer: answerWith(paid, nil),
			reconciler: fakeReconciler{dup: true},
			want:       instruction{kind: "done"}, wantReq: reqFor("ORDER-1"),
			wantReconcile: &tasks.ReconcilePayload{OutTradeNo: "ORDER-1", MchID: testMchID, CreatedAt: created, Reason: tasks.ReasonOrderPaid},
			wantAttempt:   Attempt{Outcome: tasks.OutcomePaid, Code: "ORDERPAID"},
			wantResult:    &tasks.CloseResult{Outcome: tasks.OutcomePaid, Code: "ORDERPAID", Message: "paid", HTTPStatus: 400, RequestID: "req-2"},
		},
		{
			name: "paid but reconciliation fails: retry", pl: base, answer: answerWith(paid, nil),
			reconciler: fakeReconciler{err: errors.New("redis down")},
			want:       instruction{kind: "retry"}, wantReasonHas: []string{"reconciliation", "redis down"},
			wantReq:       reqFor("ORDER-1"),
			wantReconcile: &tasks.ReconcilePayload{OutTradeNo: "ORDER-1", MchID: testMchID, CreatedAt: created, Reason: tasks.ReasonOrderPaid},
			wantAttempt:   Attempt{Outcome: tasks.OutcomeRetry, Code: "ORDERPAID"},
		},
		{
			name: "paid, confirmed by a signed query", pl: base,
			answer: answerWith(wechat.Outcome{Result: wechat.ResultPaid, Code: "ORDERPAID", HTTPStatus: 200,
				ConfirmedByQuery: true, TradeState: "SUCCESS", TransactionID: "4200000000202611220000000001"}, nil),
			want: instruction{kind: "done"}, wantReq: reqFor("ORDER-1"),
			wantReconcile: &tasks.ReconcilePayload{OutTradeNo: "ORDER-1", TransactionID: "4200000000202611220000000001", MchID: testMchID,
				CreatedAt: created, Reason: tasks.ReasonOrderPaid, TradeState: "SUCCESS"},
			wantAttempt: Attempt{Outcome: tasks.OutcomePaid, Code: "ORDERPAID", Reconciled: true, Confirmed: true},
			wantResult: &tasks.CloseResult{Outcome: tasks.OutcomePaid, Code: "ORDERPAID", HTTPStatus: 200,
				ConfirmedByQuery: true, TradeState: "SUCCESS", TransactionID: "4200000000202611220000000001"},
		},
		{
			name: "paid by transaction_id keeps the payload's number",
			pl:   with(func(p *tasks.ClosePayload) { p.OutTradeNo, p.TransactionID = "", "4200000000202611220000000009" }),
			answer: answerWith(wechat.Outcome{Result: wechat.ResultPaid, Code: "ORDERPAID", ConfirmedByQuery: true,
				TradeState: "REFUND", TransactionID: "4200000000202611220000000009"}, nil),
			want:    instruction{kind: "done"},
			wantReq: &wechat.CloseRequest{TransactionID: "4200000000202611220000000009", MchID: testMchID},
			wantReconcile: &tasks.ReconcilePayload{TransactionID: "4200000000202611220000000009", MchID: testMchID,
				CreatedAt: created, Reason: tasks.ReasonOrderPaid, TradeState: "REFUND"},
			wantAttempt: Attempt{Outcome: tasks.OutcomePaid, Code: "ORDERPAID", Reconciled: true, Confirmed: true},
			wantResult: &tasks.CloseResult{Outcome: tasks.OutcomePaid, Code: "ORDERPAID", ConfirmedByQuery: true,
				TradeState: "REFUND", TransactionID: "4200000000202611220000000009"},
		},
		{
			// Not a plain close: its record (trade state, confirmation) is
			// stored.
			name: "unsigned 204 closed, confirmed by a signed query", pl: base,
			answer: answerWith(wechat.Outcome{Result: wechat.ResultClosed, HTTPStatus: 200, ConfirmedByQuery: true, TradeState: "CLOSED"}, nil),
			want:   instruction{kind: "done"}, wantReq: reqFor("ORDER-1"),
			wantAttempt: Attempt{Outcome: tasks.OutcomeClosed, Confirmed: true},
			wantResult:  &tasks.CloseResult{Outcome: tasks.OutcomeClosed, HTTPStatus: 200, ConfirmedByQuery: true, TradeState: "CLOSED"},
		},
		{
			name: "closed, confirmed by a signed query", pl: base,
			answer: answerWith(wechat.Outcome{Result: wechat.ResultAlreadyClosed, Code: "ORDERCLOSED", ConfirmedByQuery: true, TradeState: "CLOSED"}, nil),
			want:   instruction{kind: "done"}, wantReq: reqFor("ORDER-1"),
			wantAttempt: Attempt{Outcome: tasks.OutcomeAlreadyClosed, Code: "ORDERCLOSED", Confirmed: true},
			wantResult:  &tasks.CloseResult{Outcome: tasks.OutcomeAlreadyClosed, Code: "ORDERCLOSED", ConfirmedByQuery: true, TradeState: "CLOSED"},
		},
		{
			name: "retryable", pl: base, answer: answerWith(wechat.Outcome{}, weErr(wechat.ClassRetryable, 500, "SYSTEM_ERROR")),
			want: instruction{kind: "retry"}, wantReasonHas: []string{"SYSTEM_ERROR"}, wantReq: reqFor("ORDER-1"),
			wantAttempt: Attempt{Outcome: tasks.OutcomeRetry, Code: "SYSTEM_ERROR"},
		},
		{
			name: "unsigned final answer is retried, never done", pl: base,
			answer: answerWith(wechat.Outcome{}, &wechat.Error{Class: wechat.ClassRetryable, Code: "ORDERCLOSED", HTTPStatus: 400, Err: wechat.ErrUntrustedResponse}),
			want:   instruction{kind: "retry"}, wantReq: reqFor("ORDER-1"),
			wantAttempt: Attempt{Outcome: tasks.OutcomeRetry, Code: "ORDERCLOSED"},
		},
		{
			name: "no final state and no error: retry", pl: base, answer: answerWith(wechat.Outcome{}, nil),
			want: instruction{kind: "retry"}, wantReasonHas: []string{"no final state"}, wantReq: reqFor("ORDER-1"),
			wantAttempt: Attempt{Outcome: tasks.OutcomeRetry},
		},
		{
			name: "exhausted", pl: base, retried: tasks.DefaultMaxRetry,
			answer: answerWith(wechat.Outcome{}, weErr(wechat.ClassRetryable, 502, "SERVICE_UNAVAILABLE")),
			want:   instruction{kind: "archive"}, wantReasonHas: []string{"gave up after 20 retries", "SERVICE_UNAVAILABLE"},
			wantReq: reqFor("ORDER-1"), wantAttempt: Attempt{Outcome: tasks.OutcomeExhausted, Code: "SERVICE_UNAVAILABLE"},
		},
		{
			name: "rate limited with a hint: snooze for it", pl: base,
			answer: answerWith(wechat.Outcome{}, &wechat.Error{Class: wechat.ClassRateLimited, HTTPStatus: 429, Code: "RATE_LIMITED", RetryAfter: 3 * time.Second}),
			want:   instruction{kind: "postpone", after: 3 * time.Second}, wantReasonHas: []string{"rate limited", "RATE_LIMITED"},
			wantReq: reqFor("ORDER-1"), wantAttempt: Attempt{Outcome: tasks.OutcomeRateLimited, Code: "RATE_LIMITED"},
		},
		{
			name: "rate limited without a hint: retry's short pause", pl: base, retried: tasks.DefaultMaxRetry - 1,
			answer: answerWith(wechat.Outcome{}, weErr(wechat.ClassRateLimited, 429, "FREQUENCY_LIMITED")),
			want:   instruction{kind: "postpone"}, wantReq: reqFor("ORDER-1"),
			wantAttempt: Attempt{Outcome: tasks.OutcomeRateLimited, Code: "FREQUENCY_LIMITED"},
		},
		{
			name: "permanent", pl: base, answer: answerWith(wechat.Outcome{}, weErr(wechat.ClassPermanent, 400, "PARAM_ERROR")),
			want: instruction{kind: "archive"}, wantReasonHas: []string{"PARAM_ERROR"}, wantReq: reqFor("ORDER-1"),
			wantAttempt: Attempt{Outcome: tasks.OutcomePermanent, Code: "PARAM_ERROR"},
		},
		{
			name:          "possibly early: INVALID_REQUEST just after the mark is postponed 30s",
			pl:            with(func(p *tasks.ClosePayload) { p.CreatedAt = justDue }),
			answer:        answerWith(wechat.Outcome{}, weErr(wechat.ClassPermanent, 400, "INVALID_REQUEST")),
			want:          instruction{kind: "postpone", until: now.Add(callLatency + PossibleEarlyPause)},
			wantReasonHas: []string{"possible early close", "INVALID_REQUEST"},
			wantReq:       reqFor("ORDER-1"), wantAttempt: Attempt{Outcome: tasks.OutcomePossiblyEarly, Code: "INVALID_REQUEST"},
		},
		{
			name:    "possibly early: an unknown code counts too",
			pl:      with(func(p *tasks.ClosePayload) { p.CreatedAt = justDue }),
			answer:  answerWith(wechat.Outcome{}, weErr(wechat.ClassPermanent, 403, "ORDER_TOO_NEW")),
			want:    instruction{kind: "postpone", until: now.Add(callLatency + PossibleEarlyPause)},
			wantReq: reqFor("ORDER-1"), wantAttempt: Attempt{Outcome: tasks.OutcomePossiblyEarly, Code: "ORDER_TOO_NEW"},
		},
		{
			name: "possibly early window counts the measured clock offset",
			pl:   with(func(p *tasks.ClosePayload) { p.CreatedAt = now.Add(-tasks.MinCloseAge - 65*time.Second) }), clockAhead: 10 * time.Second,
			answer:  answerWith(wechat.Outcome{}, weErr(wechat.ClassPermanent, 400, "INVALID_REQUEST")),
			want:    instruction{kind: "postpone", until: now.Add(callLatency + PossibleEarlyPause)},
			wantReq: reqFor("ORDER-1"), wantAttempt: Attempt{Outcome: tasks.OutcomePossiblyEarly, Code: "INVALID_REQUEST"},
		},
		{
			name:   "configuration code just after the mark is archived (SIGN_ERROR)",
			pl:     with(func(p *tasks.ClosePayload) { p.CreatedAt = justDue }),
			answer: answerWith(wechat.Outcome{}, weErr(wechat.ClassPermanent, 401, "SIGN_ERROR")),
			want:   instruction{kind: "archive"}, wantReasonHas: []string{"SIGN_ERROR"},
			wantReq: reqFor("ORDER-1"), wantAttempt: Attempt{Outcome: tasks.OutcomePermanent, Code: "SIGN_ERROR"},
		},
		{
			name:   "configuration code just after the mark is archived (NO_AUTH)",
			pl:     with(func(p *tasks.ClosePayload) { p.CreatedAt = justDue }),
			answer: answerWith(wechat.Outcome{}, weErr(wechat.ClassPermanent, 403, "NO_AUTH")),
			want:   instruction{kind: "archive"}, wantReq: reqFor("ORDER-1"),
			wantAttempt: Attempt{Outcome: tasks.OutcomePermanent, Code: "NO_AUTH"},
		},
		{
			name:   "local error just after the mark is archived: it never reached WeChat Pay",
			pl:     with(func(p *tasks.ClosePayload) { p.CreatedAt = justDue }),
			answer: answerWith(wechat.Outcome{}, &wechat.Error{Class: wechat.ClassPermanent, Message: "v2 needs out_trade_no", Err: wechat.ErrInvalidRequest}),
			want:   instruction{kind: "archive"}, wantReq: reqFor("ORDER-1"),
			wantAttempt: Attempt{Outcome: tasks.OutcomePermanent},
		},
		{
			name:   "both order numbers: out_trade_no wins and the order is closed",
			pl:     with(func(p *tasks.ClosePayload) { p.TransactionID = "4200000000202611220000000001" }),
			answer: answerWith(closed, nil),
			want:   instruction{kind: "done"}, wantReq: reqFor("ORDER-1"),
			wantAttempt: Attempt{Outcome: tasks.OutcomeClosed},
			wantResult:  &tasks.CloseResult{Outcome: tasks.OutcomeClosed, HTTPStatus: 204, RequestID: "req-1"},
		},
		{
			name: "no mchid: the id has '_' and the worker's merchant is used",
			pl:   with(func(p *tasks.ClosePayload) { p.MchID = "" }), id: "close:_:out_trade_no:ORDER-1",
			answer: answerWith(closed, nil),
			want:   instruction{kind: "done"}, wantReq: reqFor("ORDER-1"),
			wantAttempt: Attempt{Outcome: tasks.OutcomeClosed},
			wantResult:  &tasks.CloseResult{Outcome: tasks.OutcomeClosed, HTTPStatus: 204, RequestID: "req-1"},
		},
		{
			name: "invalid payload", raw: `{not json`, id: "close:_:out_trade_no:X",
			want: instruction{kind: "archive"}, wantReasonHas: []string{"invalid close order", "without calling WeChat Pay"},
			wantAttempt: Attempt{Outcome: tasks.OutcomeInvalidPayload},
		},
		{
			name: "unknown field closeAt",
			raw:  `{"out_trade_no":"ORDER-1","mchid":"1900000109","created_at":"2026-11-22T10:00:00Z","closeAt":"2026-11-22T12:00:00Z"}`,
			id:   "close:1900000109:out_trade_no:ORDER-1",
			want: instruction{kind: "archive"}, wantReasonHas: []string{`"closeAt"`, `"close_at"`},
			wantAttempt: Attempt{Outcome: tasks.OutcomeInvalidPayload},
		},
		{
			name: "upper-case key",
			raw:  `{"OUT_TRADE_NO":"ORDER-1","mchid":"1900000109","created_at":"2026-11-22T10:00:00Z"}`,
			id:   "close:1900000109:out_trade_no:ORDER-1",
			want: instruction{kind: "archive"}, wantReasonHas: []string{`"OUT_TRADE_NO"`, "case-sensitive"},
			wantAttempt: Attempt{Outcome: tasks.OutcomeInvalidPayload},
		},
		{
			name: "duplicate key",
			raw:  `{"out_trade_no":"ORDER-1","mchid":"1900000109","created_at":"2026-11-22T10:00:00Z","out_trade_no":"ORDER-2"}`,
			id:   "close:1900000109:out_trade_no:ORDER-2",
			want: instruction{kind: "archive"}, wantReasonHas: []string{`"out_trade_no" appears more than once`},
			wantAttempt: Attempt{Outcome: tasks.OutcomeInvalidPayload},
		},
		{
			name: "task id does not match the payload", pl: base, id: "close:1900000109:out_trade_no:ORDER-2",
			want:          instruction{kind: "archive"},
			wantReasonHas: []string{"close:1900000109:out_trade_no:ORDER-2", "close:1900000109:out_trade_no:ORDER-1"},
			wantAttempt:   Attempt{Outcome: tasks.OutcomeInvalidPayload, Order: tasks.OrderRef{OutTradeNo: "ORDER-1", MchID: testMchID}},
		},
		{
			name: "task id without the merchant the payload names", pl: base, id: "close:_:out_trade_no:ORDER-1",
			want: instruction{kind: "archive"}, wantReasonHas: []string{"close:_:out_trade_no:ORDER-1", "close:1900000109:out_trade_no:ORDER-1"},
			wantAttempt: Attempt{Outcome: tasks.OutcomeInvalidPayload, Order: tasks.OrderRef{OutTradeNo: "ORDER-1", MchID: testMchID}},
		},
		{
			name: "another task type on the close queue", pl: base, taskType: "order:refund",
			want: instruction{kind: "archive"}, wantReasonHas: []string{`"order:refund"`},
			wantAttempt: Attempt{Outcome: tasks.OutcomeInvalidPayload},
		},
		{
			name: "created_at more than an hour ahead",
			pl:   with(func(p *tasks.ClosePayload) { p.CreatedAt = now.Add(tasks.MaxCreatedAtAhead + time.Second) }),
			want: instruction{kind: "archive"}, wantReasonHas: []string{"created_at", "in the future"},
			wantAttempt: Attempt{Outcome: tasks.OutcomeInvalidPayload, Order: tasks.OrderRef{OutTradeNo: "ORDER-1", MchID: testMchID}},
		},
		{
			name: "created_at in the year 2400",
			pl:   with(func(p *tasks.ClosePayload) { p.CreatedAt = time.Date(2400, 1, 1, 0, 0, 0, 0, time.UTC) }),
			want: instruction{kind: "archive"}, wantReasonHas: []string{"created_at 2400-01-01T00:00:00Z"},
			wantAttempt: Attempt{Outcome: tasks.OutcomeInvalidPayload, Order: tasks.OrderRef{OutTradeNo: "ORDER-1", MchID: testMchID}},
		},
		{
			name:        "created_at within the hour ahead is postponed to its 5-minute mark",
			pl:          with(func(p *tasks.ClosePayload) { p.CreatedAt = now.Add(30 * time.Minute) }),
			want:        instruction{kind: "postpone", until: now.Add(35*time.Minute + tasks.DefaultCloseMargin)},
			wantAttempt: Attempt{Outcome: tasks.OutcomePostponed},
		},
		{
			name: "close_at in the future is waited for",
			pl:   with(func(p *tasks.ClosePayload) { p.CloseAt = now.Add(20 * time.Minute) }),
			want: instruction{kind: "postpone", until: now.Add(20 * time.Minute)}, wantReasonHas: []string{"close_at"},
			wantAttempt: Attempt{Outcome: tasks.OutcomePostponed},
		},
		{
			name: "close_at a moment away is waited for in place",
			pl:   with(func(p *tasks.ClosePayload) { p.CloseAt = now.Add(3 * time.Second) }), answer: answerWith(closed, nil),
			want: instruction{kind: "done"}, wantReq: reqFor("ORDER-1"), wantSleep: 3 * time.Second,
			wantAttempt: Attempt{Outcome: tasks.OutcomeClosed},
			wantResult:  &tasks.CloseResult{Outcome: tasks.OutcomeClosed, HTTPStatus: 204, RequestID: "req-1"},
		},
		{
			name: "close_at in the past does not delay",
			pl:   with(func(p *tasks.ClosePayload) { p.CloseAt = now.Add(-time.Minute) }), answer: answerWith(closed, nil),
			want: instruction{kind: "done"}, wantReq: reqFor("ORDER-1"),
			wantAttempt: Attempt{Outcome: tasks.OutcomeClosed},
			wantResult:  &tasks.CloseResult{Outcome: tasks.OutcomeClosed, HTTPStatus: 204, RequestID: "req-1"},
		},
		{
			name: "close_at more than 7 days after created_at",
			pl:   with(func(p *tasks.ClosePayload) { p.CloseAt = created.Add(tasks.MaxCloseDelay + time.Second) }),
			want: instruction{kind: "archive"}, wantReasonHas: []string{"close_at", "7 days"},
			wantAttempt: Attempt{Outcome: tasks.OutcomeInvalidPayload},
		},
		{
			name: "close_at before created_at",
			pl:   with(func(p *tasks.ClosePayload) { p.CloseAt = created.Add(-time.Second) }),
			want: instruction{kind: "archive"}, wantReasonHas: []string{"close_at", "before created_at"},
			wantAttempt: Attempt{Outcome: tasks.OutcomeInvalidPayload},
		},
		{
			name:          "far too early: postponed to creation + 5m + margin",
			pl:            with(func(p *tasks.ClosePayload) { p.CreatedAt = now.Add(-tasks.MinCloseAge + 20*time.Second) }),
			want:          instruction{kind: "postpone", until: now.Add(20*time.Second + tasks.DefaultCloseMargin)},
			wantReasonHas: []string{"5 minutes"}, wantAttempt: Attempt{Outcome: tasks.OutcomePostponed},
		},
		{
			name: "at the 5-minute mark: waits out the margin in place",
			pl:   with(func(p *tasks.ClosePayload) { p.CreatedAt = now.Add(-tasks.MinCloseAge) }), answer: answerWith(closed, nil),
			want: instruction{kind: "done"}, wantReq: reqFor("ORDER-1"), wantSleep: tasks.DefaultCloseMargin,
			wantAttempt: Attempt{Outcome: tasks.OutcomeClosed},
			wantResult:  &tasks.CloseResult{Outcome: tasks.OutcomeClosed, HTTPStatus: 204, RequestID: "req-1"},
		},
		{
			name: "clock ahead beyond the margin is added to the guard",
			pl:   with(func(p *tasks.ClosePayload) { p.CreatedAt = now.Add(-tasks.MinCloseAge - 2*time.Second) }), clockAhead: 3 * time.Second,
			answer: answerWith(closed, nil),
			want:   instruction{kind: "done"}, wantReq: reqFor("ORDER-1"), wantSleep: time.Second,
			wantAttempt: Attempt{Outcome: tasks.OutcomeClosed},
			wantResult:  &tasks.CloseResult{Outcome: tasks.OutcomeClosed, HTTPStatus: 204, RequestID: "req-1"},
		},
		{
			name: "clock ahead within the margin adds nothing",
			pl:   with(func(p *tasks.ClosePayload) { p.CreatedAt = now.Add(-tasks.MinCloseAge - 2*time.Second) }), clockAhead: 500 * time.Millisecond,
			answer: answerWith(closed, nil),
			want:   instruction{kind: "done"}, wantReq: reqFor("ORDER-1"),
			wantAttempt: Attempt{Outcome: tasks.OutcomeClosed},
			wantResult:  &tasks.CloseResult{Outcome: tasks.OutcomeClosed, HTTPStatus: 204, RequestID: "req-1"},
		},
		{
			name: "large clock ahead postpones",
			pl:   with(func(p *tasks.ClosePayload) { p.CreatedAt = now.Add(-tasks.MinCloseAge - 2*time.Second) }), clockAhead: 30 * time.Second,
			want:        instruction{kind: "postpone", until: now.Add(28 * time.Second)},
			wantAttempt: Attempt{Outcome: tasks.OutcomePostponed},
		},
		{
			name: "clock ahead delays close_at too",
			pl:   with(func(p *tasks.ClosePayload) { p.CloseAt = now.Add(time.Minute) }), clockAhead: 10 * time.Second,
			want:        instruction{kind: "postpone", until: now.Add(time.Minute + 10*time.Second)},
			wantAttempt: Attempt{Outcome: tasks.OutcomePostponed},
		},
		{
			name: "unknown merchant: archived at once with the fix, nothing signed",
			pl:   base, merchants: []string{"1900000200", "1900000300"},
			want:          instruction{kind: "archive"},
			wantReasonHas: []string{"merchant 1900000109 is not configured", "merchant registry", "enqueue replay --code " + CodeUnknownMerchant},
			wantAttempt:   Attempt{Outcome: tasks.OutcomePermanent, Code: CodeUnknownMerchant, Order: tasks.OrderRef{OutTradeNo: "ORDER-1", MchID: testMchID}},
		},
		{
			name: "no mchid and several merchants: archived, never guessed",
			pl:   with(func(p *tasks.ClosePayload) { p.MchID = "" }), id: "close:_:out_trade_no:ORDER-1",
			merchants: []string{"1900000200", testMchID},
			want:      instruction{kind: "archive"}, wantReasonHas: []string{"names no mchid", "several merchants"},
			wantAttempt: Attempt{Outcome: tasks.OutcomePermanent, Code: CodeMerchantRequired},
		},
		{
			name: "no mchid and one merchant in the registry: that merchant",
			pl:   with(func(p *tasks.ClosePayload) { p.MchID = "" }), id: "close:_:out_trade_no:ORDER-1",
			merchants: []string{testMchID}, answer: answerWith(closed, nil),
			want: instruction{kind: "done"}, wantReq: reqFor("ORDER-1"),
			wantAttempt: Attempt{Outcome: tasks.OutcomeClosed},
			wantResult:  &tasks.CloseResult{Outcome: tasks.OutcomeClosed, HTTPStatus: 204, RequestID: "req-1"},
		},
		{
			name: "each merchant's close goes to its own client",
			pl:   with(func(p *tasks.ClosePayload) { p.MchID = "1900000200" }), merchants: []string{testMchID, "1900000200"},
			wantCloser: "1900000200", answer: answerWith(closed, nil),
			want: instruction{kind: "done"}, wantReq: &wechat.CloseRequest{OutTradeNo: "ORDER-1", MchID: "1900000200"},
			wantAttempt: Attempt{Outcome: tasks.OutcomeClosed},
			wantResult:  &tasks.CloseResult{Outcome: tasks.OutcomeClosed, HTTPStatus: 204, RequestID: "req-1"},
		},
		{
			name: "institutional: the institution's entry closes for its sub-merchant",
			pl:   with(func(p *tasks.ClosePayload) { p.SubMchID = "1900000301" }), merchants: []string{testMchID, "1900000200"},
			answer: answerWith(closed, nil),
			want:   instruction{kind: "done"}, wantReq: &wechat.CloseRequest{OutTradeNo: "ORDER-1", MchID: testMchID, SubMchID: "1900000301"},
			wantAttempt: Attempt{Outcome: tasks.OutcomeClosed},
			wantResult:  &tasks.CloseResult{Outcome: tasks.OutcomeClosed, HTTPStatus: 204, RequestID: "req-1"},
		},
		{
			name: "rate limit slot near: waits for it in place, no retry spent",
			pl:   base, merchants: []string{testMchID}, rate: 50, answer: answerWith(closed, nil),
			limiter: &fakeLimiter{slot: ratelimit.Slot{Reserved: true, Wait: 300 * time.Millisecond, Rate: 50}},
			want:    instruction{kind: "done"}, wantReq: reqFor("ORDER-1"), wantSleep: 300 * time.Millisecond,
			wantMaxWait: DefaultMaxRateWait, wantRate: Attempt{RateWait: 300 * time.Millisecond},
			wantAttempt: Attempt{Outcome: tasks.OutcomeClosed},
			wantResult:  &tasks.CloseResult{Outcome: tasks.OutcomeClosed, HTTPStatus: 204, RequestID: "req-1"},
		},
		{
			name: "rate limit slot far: postponed without a call, no retry spent",
			pl:   base, merchants: []string{testMchID}, rate: 50, retried: 3,
			limiter: &fakeLimiter{slot: ratelimit.Slot{RetryAfter: 3 * time.Second, Rate: 50}},
			want:    instruction{kind: "postpone", after: 3 * time.Second}, wantReasonHas: []string{"rate limit", "next free slot"},
			wantMaxWait: DefaultMaxRateWait, wantRate: Attempt{RatePostponed: true},
			wantAttempt: Attempt{Outcome: tasks.OutcomePostponed},
		},
		{
			name: "rate limit on the last attempt: waits longer in place rather than be archived by asynq",
			pl:   base, merchants: []string{testMchID}, rate: 50, retried: 5, maxRetry: 5, answer: answerWith(closed, nil),
			limiter: &fakeLimiter{slot: ratelimit.Slot{Reserved: true, Wait: 4 * time.Second, Rate: 50}},
			want:    instruction{kind: "done"}, wantReq: reqFor("ORDER-1"), wantSleep: 4 * time.Second,
			wantMaxWait: lastAttemptRateWait, wantRate: Attempt{RateWait: 4 * time.Second},
			wantAttempt: Attempt{Outcome: tasks.OutcomeClosed},
			wantResult:  &tasks.CloseResult{Outcome: tasks.OutcomeClosed, HTTPStatus: 204, RequestID: "req-1"},
		},
		{
			name: "rate limiter unavailable: postponed, WeChat Pay not called unpaced",
			pl:   base, merchants: []string{testMchID}, rate: 50,
			limiter: &fakeLimiter{err: errors.New("redis: connection refused")},
			want:    instruction{kind: "postpone"}, wantReasonHas: []string{"rate limiter", "connection refused"},
			wantMaxWait: DefaultMaxRateWait, wantRate: Attempt{RatePostponed: true},
			wantAttempt: Attempt{Outcome: tasks.OutcomePostponed},
		},
		{
			name: "RATE_LIMITED anyway: the shared rate is lowered and the close snoozed, no retry spent",
			pl:   base, merchants: []string{testMchID}, rate: 50, retried: tasks.DefaultMaxRetry - 1,
			answer:  answerWith(wechat.Outcome{}, weErr(wechat.ClassRateLimited, 429, "RATE_LIMITED")),
			limiter: &fakeLimiter{slot: ratelimit.Slot{Reserved: true, Rate: 50}, decrease: true},
			want:    instruction{kind: "postpone"}, wantReq: reqFor("ORDER-1"), wantReasonHas: []string{"rate limited", "RATE_LIMITED"},
			wantMaxWait: DefaultMaxRateWait, wantThrottled: 1, wantRate: Attempt{RateDecreased: true},
			wantAttempt: Attempt{Outcome: tasks.OutcomeRateLimited, Code: "RATE_LIMITED"},
		},
		{
			name: "merchant without a rate limit is not paced",
			pl:   base, merchants: []string{testMchID}, answer: answerWith(closed, nil),
			limiter: &fakeLimiter{err: errors.New("must not be asked")},
			want:    instruction{kind: "done"}, wantReq: reqFor("ORDER-1"),
			wantAttempt: Attempt{Outcome: tasks.OutcomeClosed},
			wantResult:  &tasks.CloseResult{Outcome: tasks.OutcomeClosed, HTTPStatus: 204, RequestID: "req-1"},
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
			cfg := Config{Closer: closer, Reconciler: &rec, MchID: testMchID, Observer: obs, Now: clk.Now}
			closers := map[string]*fakeCloser{}
			if tt.merchants != nil {
				fm := fakeMerchants{}
				for _, mch := range tt.merchants {
					closers[mch] = &fakeCloser{clock: clk, answer: closer.answer}
					fm[mch] = Merchant{MchID: mch, Closer: closers[mch], RateLimit: tt.rate, Name: "shop-" + mch[len(mch)-3:]}
				}
				cfg.Merchants = fm
				if c, ok := closers[cmp.Or(tt.wantCloser, testMchID)]; ok {
					closer = c
				}
			}
			if tt.limiter != nil {
				cfg.Limiter = tt.limiter
			}
			if tt.clockAhead != 0 {
				cfg.ClockAhead = func() time.Duration { return tt.clockAhead }
			}
			h, err := New(cfg)
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
					id = tasks.CloseTaskID(tt.pl.Ref())
				}
			}
			meta := TaskMeta{ID: id, Type: cmp.Or(tt.taskType, tasks.TypeClose), Retried: tt.retried, MaxRetry: tt.maxRetry, DueAt: now.Add(-2 * time.Second)}

			w := &fakeWriter{}
			err = h.process(context.Background(), meta, payload, w)

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
			if tt.wantAttempt.Outcome == tasks.OutcomeInvalidPayload && !errors.Is(err, tasks.ErrInvalidPayload) {
				t.Errorf("archived %v, want it to wrap tasks.ErrInvalidPayload", err)
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
				if floor := tasks.EarliestClose(tt.pl.CreatedAt).Add(tasks.DefaultCloseMargin); at.Before(floor) || at.Before(tt.pl.CloseAt) {
					t.Errorf("WeChat Pay called at %v, before %v or close_at %v", at, floor, tt.pl.CloseAt)
				}
			}
			for mch, c := range closers {
				if c != closer && len(c.calls) != 0 {
					t.Errorf("merchant %s's client was called with %+v: a close signed with another merchant's key", mch, c.calls)
				}
			}
			if l := tt.limiter; l != nil {
				if tt.wantMaxWait != 0 && (len(l.reserved) != 1 || l.reserved[0] != tt.wantMaxWait) {
					t.Errorf("limiter asked with max waits %v, want exactly [%s]", l.reserved, tt.wantMaxWait)
				}
				if tt.wantMaxWait == 0 && len(l.reserved) != 0 {
					t.Errorf("limiter asked %d times, want never", len(l.reserved))
				}
				if l.throttled != tt.wantThrottled {
					t.Errorf("limiter told of %d RATE_LIMITED answers, want %d", l.throttled, tt.wantThrottled)
				}
				if a := obs.attempts[0]; a.RateWait != tt.wantRate.RateWait || a.RatePostponed != tt.wantRate.RatePostponed || a.RateDecreased != tt.wantRate.RateDecreased {
					t.Errorf("attempt rate fields wait %s postponed %t decreased %t, want %+v", a.RateWait, a.RatePostponed, a.RateDecreased, tt.wantRate)
				}
			}
			if tt.merchants != nil && len(obs.attempts) == 1 && obs.attempts[0].Outcome != tasks.OutcomePermanent {
				if want := "shop-" + cmp.Or(tt.wantCloser, testMchID)[7:]; obs.attempts[0].Merchant != want {
					t.Errorf("attempt merchant label %q, want %q", obs.attempts[0].Merchant, want)
				}
			}
			checkReconcile(t, rec.payloads, tt.wantReconcile, now.Add(callLatency))
			checkAttempt(t, obs.attempts, id, tt.retried, tt.wantAttempt, tt.wantReq != nil)
			// One write per run, success or failure: the stored record is
			// the result of a completed close, else the failure. A plain
			// close writes nothing, and reads back as closed.
			if tt.wantResult != nil && !tt.wantResult.NeedsRecord() {
				if len(w.writes) != 0 {
					t.Fatalf("stored %d records for a plain close, want none: %s", len(w.writes), w.writes[0])
				}
				res, _, derr := tasks.ReadCloseRecord(&asynq.TaskInfo{State: asynq.TaskStateCompleted, CompletedAt: now})
				if derr != nil || res.Outcome != tt.wantResult.Outcome {
					t.Fatalf("a completed task without a record reads as %+v, %v; want outcome %s", res, derr, tt.wantResult.Outcome)
				}
				return
			}
			if len(w.writes) != 1 {
				t.Fatalf("stored %d records, want exactly 1", len(w.writes))
			}
			res, fail, derr := tasks.DecodeCloseRecord(w.writes[0])
			if derr != nil {
				t.Fatalf("stored record %s: %v", w.writes[0], derr)
			}
			checkResult(t, res, tt.wantResult)
			if tt.wantResult == nil {
				checkFailure(t, fail, tt.retried, tt.wantAttempt, closer.answered, err)
			}
		})
	}
}

func checkReconcile(t *testing.T, got []tasks.ReconcilePayload, want *tasks.ReconcilePayload, detectedAt time.Time) {
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
		ref := tasks.OrderRef{OutTradeNo: got[0].OutTradeNo, TransactionID: got[0].TransactionID, MchID: got[0].MchID}
		if id := tasks.ReconcileTaskID(ref); !strings.HasPrefix(id, "reconcile:") || ref.Validate() != nil {
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
	if want.Order != (tasks.OrderRef{}) && a.Order != want.Order {
		t.Errorf("attempt order = %+v, want %+v", a.Order, want.Order)
	}
	if called && a.WeChatLatency != callLatency {
		t.Errorf("attempt latency = %s, want %s", a.WeChatLatency, callLatency)
	}
	if !called && a.WeChatLatency != 0 {
		t.Errorf("attempt latency = %s without a call", a.WeChatLatency)
	}
}

func checkResult(t *testing.T, got, want *tasks.CloseResult) {
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

// wantClass is the class an outcome's failure record carries: what WeChat
// Pay's answer was for failures, none for an early start (no failure), and
// permanent for a payload that can never run.
var wantClass = map[string]string{
	tasks.OutcomeRetry:          tasks.ClassRetryable,
	tasks.OutcomeExhausted:      tasks.ClassRetryable,
	tasks.OutcomeRateLimited:    tasks.ClassRateLimited,
	tasks.OutcomePermanent:      tasks.ClassPermanent,
	tasks.OutcomePossiblyEarly:  tasks.ClassPermanent,
	tasks.OutcomeInvalidPayload: tasks.ClassPermanent,
	tasks.OutcomePostponed:      "",
}

// checkFailure checks the failure record stored for a failed attempt: the
// attempt's outcome and code, the class, and WeChat Pay's status, request
// id and message copied from its error (never parsed from the text).
func checkFailure(t *testing.T, got *tasks.CloseFailure, retried int, want Attempt, answers []answered, instr error) {
	t.Helper()
	if got == nil {
		t.Fatalf("no failure record stored for outcome %s", want.Outcome)
	}
	class, ok := wantClass[want.Outcome]
	if !ok {
		t.Fatalf("outcome %s has no class in the test's table", want.Outcome)
	}
	if got.Outcome != want.Outcome || got.Code != want.Code || got.Class != class || got.Attempt != retried+1 || got.At.IsZero() {
		t.Errorf("failure = %+v, want outcome %s code %q class %q attempt %d and a time", got, want.Outcome, want.Code, class, retried+1)
	}
	if got.Message == "" {
		t.Errorf("failure %+v has no message", got)
	}
	var last answered
	if len(answers) > 0 {
		last = answers[len(answers)-1]
	}
	var we *wechat.Error
	switch {
	case errors.As(last.err, &we):
		if got.HTTPStatus != we.HTTPStatus || got.RequestID != we.RequestID || !strings.Contains(got.Message, we.Message) {
			t.Errorf("failure %+v does not carry WeChat Pay's status %d, request id %q and message %q", got, we.HTTPStatus, we.RequestID, we.Message)
		}
	case last.err == nil && len(answers) > 0 && last.out.Result != 0:
		// A final answer that could not be completed (reconciliation
		// failed): the answer's status and request id are kept.
		if got.HTTPStatus != last.out.HTTPStatus || got.RequestID != last.out.RequestID || !strings.Contains(instr.Error(), got.Message) {
			t.Errorf("failure %+v, want the answer's status %d and request id %q and the error %q", got, last.out.HTTPStatus, last.out.RequestID, instr)
		}
	default:
		if got.HTTPStatus != 0 || got.RequestID != "" || !strings.Contains(instr.Error(), got.Message) {
			t.Errorf("failure %+v without a WeChat Pay answer, want no status and the reason of %q", got, instr)
		}
	}
}

// TestPossibleEarlyAtMostTwice follows one order refused with
// INVALID_REQUEST on every call from the 5-minute mark on: the window and
// the pause let the refusal be postponed twice, then it is archived.
func TestPossibleEarlyAtMostTwice(t *testing.T) {
	created := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	clk := &clock{now: tasks.EarliestClose(created).Add(tasks.DefaultCloseMargin)}
	closer := &fakeCloser{clock: clk, answer: answerWith(wechat.Outcome{}, weErr(wechat.ClassPermanent, 400, "INVALID_REQUEST"))}
	obs := &recordObserver{}
	h, err := New(Config{Closer: closer, Reconciler: &fakeReconciler{}, Observer: obs, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	p := tasks.ClosePayload{OutTradeNo: "EARLY-1", MchID: testMchID, CreatedAt: created}
	meta := TaskMeta{ID: tasks.CloseTaskID(p.Ref()), Type: tasks.TypeClose}
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
	if len(obs.attempts) != 3 || obs.attempts[0].Outcome != tasks.OutcomePossiblyEarly || obs.attempts[1].Outcome != tasks.OutcomePossiblyEarly ||
		obs.attempts[2].Outcome != tasks.OutcomePermanent {
		t.Fatalf("attempts %+v, want possibly_early twice then permanent", obs.attempts)
	}
}

// TestProcessCloseWaitCancelled: a shutdown during the in-place wait is a
// plain error (asynq puts the task back), and WeChat Pay is not called.
func TestProcessCloseWaitCancelled(t *testing.T) {
	now := time.Date(2026, 11, 22, 10, 10, 0, 0, time.UTC)
	clk := &clock{now: now}
	closer := &fakeCloser{clock: clk, answer: answerWith(wechat.Outcome{Result: wechat.ResultClosed}, nil)}
	h, err := New(Config{Closer: closer, Reconciler: &fakeReconciler{}, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	p := tasks.ClosePayload{OutTradeNo: "WAIT-1", CreatedAt: now.Add(-tasks.MinCloseAge)}
	w := &fakeWriter{}
	err = h.process(ctx, TaskMeta{ID: tasks.CloseTaskID(p.Ref()), Type: tasks.TypeClose}, mustJSON(t, p), w)
	if !errors.Is(err, context.Canceled) || classify(err).kind != "retry" || len(closer.calls) != 0 {
		t.Fatalf("err = %v, calls %d; want a cancelled wait and no call", err, len(closer.calls))
	}
	// asynq refuses writes once the task's context is done; none is tried.
	if len(w.writes) != 0 {
		t.Errorf("stored %d records for a cancelled wait", len(w.writes))
	}
}

// TestProcessTaskWithoutAsynqContext: ProcessTask outside asynq (no task id
// in the context) archives rather than calling WeChat Pay for a task whose
// id it cannot check.
func TestProcessTaskWithoutAsynqContext(t *testing.T) {
	clk := &clock{now: time.Date(2026, 11, 22, 10, 10, 0, 0, time.UTC)}
	closer := &fakeCloser{clock: clk, answer: answerWith(wechat.Outcome{Result: wechat.ResultClosed}, nil)}
	h, err := New(Config{Closer: closer, Reconciler: &fakeReconciler{}, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	p := tasks.ClosePayload{OutTradeNo: "CTX-1", CreatedAt: clk.now.Add(-time.Hour)}
	err = h.ProcessTask(context.Background(), asynq.NewTask(tasks.TypeClose, mustJSON(t, p)))
	if classify(err).kind != "archive" || len(closer.calls) != 0 {
		t.Fatalf("ProcessTask = %v with %d calls, want archived without a call", err, len(closer.calls))
	}
}

func TestNewCloseHandlerRequires(t *testing.T) {
	if _, err := New(Config{Reconciler: &fakeReconciler{}}); err == nil || !strings.Contains(err.Error(), "Closer") {
		t.Errorf("no Closer: %v", err)
	}
	if _, err := New(Config{Closer: &fakeCloser{}}); err == nil || !strings.Contains(err.Error(), "Reconciler") {
		t.Errorf("no Reconciler: %v", err)
	}
}

// TestClassNames: the contract spells the failure classes itself (tasks
// must not import wechat); they must stay the names wechat gives them.
func TestClassNames(t *testing.T) {
	for _, c := range []wechat.Class{wechat.ClassRetryable, wechat.ClassRateLimited, wechat.ClassPermanent} {
		if got := className(c); got != c.String() {
			t.Errorf("className(%v) = %q, want %q", c, got, c.String())
		}
	}
}

// TestFailureMessageFromWeChatError: the record copies WeChat Pay's
// message and cause from the *wechat.Error found in the chain, not the text
// of whatever wrapped it.
func TestFailureMessageFromWeChatError(t *testing.T) {
	clk := &clock{now: time.Date(2026, 11, 22, 10, 10, 0, 0, time.UTC)}
	we := &wechat.Error{Class: wechat.ClassRetryable, HTTPStatus: 502, Message: "bad gateway", Err: wechat.ErrUntrustedResponse}
	closer := &fakeCloser{clock: clk, answer: answerWith(wechat.Outcome{}, fmt.Errorf("outer context that is not WeChat Pay's: %w", we))}
	h, err := New(Config{Closer: closer, Reconciler: &fakeReconciler{}, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	p := tasks.ClosePayload{OutTradeNo: "MSG-1", CreatedAt: clk.now.Add(-time.Hour)}
	rec, _ := h.ProcessClose(context.Background(), TaskMeta{ID: tasks.CloseTaskID(p.Ref()), Type: tasks.TypeClose}, mustJSON(t, p))
	f := rec.Failure
	if f == nil || f.Message != "bad gateway: "+wechat.ErrUntrustedResponse.Error() || strings.Contains(f.Message, "outer context") ||
		f.HTTPStatus != 502 || f.Class != tasks.ClassRetryable || f.Outcome != tasks.OutcomeRetry {
		t.Fatalf("failure = %+v", f)
	}
}

func mustJSON(t *testing.T, p tasks.ClosePayload) []byte {
	t.Helper()
	data, err := json.Marshal(p)
	if err != nil {
		t.Fatalf("marshal %+v: %v", p, err)
	}
	return data
}
