package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
	"github.com/rs/zerolog"

	"github.com/wxclose/wxclose/retry"
	"github.com/wxclose/wxclose/wechat"
)

// Attempt outcomes, as reported to an Observer and written to logs and to
// the task's result. The first four are final states of the order.
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
	// close came too early (see PossibleEarlyWindow): the task is postponed
	// without spending a retry instead of being archived.
	OutcomePossiblyEarly = "possibly_early"
)

// Attempt describes one run of a close task, for metrics.
type Attempt struct {
	TaskID  string
	Order   OrderRef
	Retried int
	// Outcome is one of the Outcome* constants.
	Outcome string
	// Code is the WeChat code of the reply, if any.
	Code string
	// WeChatLatency is the duration of the Close Order call; zero when no
	// call was made.
	WeChatLatency time.Duration
	// Lateness is how long after its due time the task started; only set
	// (HasLateness) on a task's first run, when the due time is known.
	Lateness    time.Duration
	HasLateness bool
	// Reconciled is true when this attempt put a new reconciliation task on
	// the reconciliation queue.
	Reconciled bool
	// Confirmed is true when the final answer was unsigned and the outcome
	// was taken from a signed Query Order answer instead.
	Confirmed bool
}

// Observer receives one Attempt per handled task; metrics implement it.
// ObserveAttempt must be cheap and must not block.
type Observer interface {
	ObserveAttempt(Attempt)
}

// Reconciler takes paid orders; *Producer implements it.
type Reconciler interface {
	EnqueueReconcile(ctx context.Context, p ReconcilePayload) (duplicate bool, err error)
}

// CloseResult is written as the result of a completed close task, so
// operators (and `enqueue status`) can see how it ended.
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

// HandlerConfig configures a CloseHandler.
type HandlerConfig struct {
	// Closer calls WeChat Pay. Required.
	Closer wechat.Closer
	// Reconciler receives paid orders. Required.
	Reconciler Reconciler
	// MchID is the merchant used when a payload has none. Required when
	// payloads may omit it.
	MchID string
	// CloseMargin is added after creation + 5 minutes: the handler never
	// calls WeChat Pay before creation + 5 minutes + CloseMargin (nor before
	// the payload's close_at). If zero, DefaultCloseMargin; negative values
	// count as zero.
	CloseMargin time.Duration
	// MaxRetry caps retries of transient failures whatever budget the task
	// carries. If zero, DefaultMaxRetry.
	MaxRetry int
	// Logger receives one line per attempt. If zero, logging is off.
	Logger zerolog.Logger
	// Observer receives one Attempt per run. If nil, none.
	Observer Observer
	// Now returns the current time. If nil, time.Now.
	Now func() time.Time
	// ClockAhead reports how far this worker's clock is measured to run
	// ahead of WeChat Pay's. When it exceeds CloseMargin, the 5-minute guard
	// waits for it instead of the margin, and it also delays close_at. If
	// nil, no offset is known and none is added.
	ClockAhead func() time.Duration
}

// maxInlineWait is the longest a handler waits in place for an order's
// 5-minute mark instead of postponing the task. asynq can start a task about
// a second early; longer gaps come from producers that ignored the rule.
const maxInlineWait = 5 * time.Second

// PossibleEarlyWindow and PossibleEarlyPause shape the handling of a refusal
// that could mean "too early" (WeChat Pay does not document its answer to a
// close within 5 minutes of creation; the sandbox answers 400
// INVALID_REQUEST). Such a refusal of a call made less than
// PossibleEarlyWindow after creation + 5 minutes (plus the measured clock
// offset) is postponed by PossibleEarlyPause, without spending a retry,
// instead of being archived. The pause and the window make it happen at most
// twice per order; after that the refusal is permanent as usual.
//
// Every ClassPermanent error that came from WeChat Pay counts, except those
// whose code names the merchant's own configuration or a malformed request
// (see configurationCodes), redirects (a wrong base URL) and local errors
// that never reached WeChat Pay (invalid configuration or request).
const (
	PossibleEarlyWindow = 60 * time.Second
	PossibleEarlyPause  = 30 * time.Second
)

// configurationCodes are the permanent WeChat codes that cannot mean "too
// early": they name the merchant's keys, permissions or ids, or a request
// that was malformed whenever it was sent. From the Close Order pages in
// shared/seeds (v2: SIGNERROR, REQUIRE_POST_METHOD, XML_FORMAT_ERROR; v3:
// REQUIRE_POST_METHOD) and the v3 general error table (SIGN_ERROR, NO_AUTH,
// MCH_NOT_EXISTS, APPID_MCHID_NOT_MATCH). PARAM_ERROR, INVALID_REQUEST, the
// v2 "FAIL" and codes not listed here may describe the order's state, so
// they are treated as possibly early.
var configurationCodes = map[string]bool{
	"SIGN_ERROR":            true,
	"SIGNERROR":             true,
	"NO_AUTH":               true,
	"MCH_NOT_EXISTS":        true,
	"APPID_MCHID_NOT_MATCH": true,
	"REQUIRE_POST_METHOD":   true,
	"XML_FORMAT_ERROR":      true,
}

// CloseHandler processes order:close tasks. It is safe for concurrent use.
type CloseHandler struct {
	cfg HandlerConfig
	// sleep waits in place for the 5-minute mark; tests replace it to move
	// their fixed clock instead of sleeping.
	sleep func(ctx context.Context, d time.Duration) error
}

// NewCloseHandler checks cfg and returns a handler.
func NewCloseHandler(cfg HandlerConfig) (*CloseHandler, error) {
	if cfg.Closer == nil {
		return nil, errors.New("tasks: HandlerConfig.Closer is required")
	}
	if cfg.Reconciler == nil {
		return nil, errors.New("tasks: HandlerConfig.Reconciler is required")
	}
	if cfg.CloseMargin == 0 {
		cfg.CloseMargin = DefaultCloseMargin
	}
	cfg.CloseMargin = max(cfg.CloseMargin, 0)
	if cfg.MaxRetry <= 0 {
		cfg.MaxRetry = DefaultMaxRetry
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &CloseHandler{cfg: cfg, sleep: sleepCtx}, nil
}

// TaskMeta is what the handler reads about a task besides its payload.
// ProcessTask fills it from asynq (whose task context cannot be built
// outside asynq); tests fill it themselves and call ProcessClose.
type TaskMeta struct {
	// ID is the task id (asynq.GetTaskID). It must be CloseTaskID of the
	// payload's order.
	ID string
	// Type is the task type; anything but TypeClose is archived.
	Type string
	// Retried is the number of retries already spent (asynq.GetRetryCount).
	Retried int
	// DueAt is when the task became runnable (the HeaderDueAt header), zero
	// if unknown.
	DueAt time.Time
}

// ProcessTask implements asynq.Handler; see ProcessClose for the
// instruction it returns. It writes the CloseResult of a completed close as
// the task's result.
func (h *CloseHandler) ProcessTask(ctx context.Context, t *asynq.Task) error {
	meta := TaskMeta{Type: t.Type()}
	meta.ID, _ = asynq.GetTaskID(ctx)
	meta.Retried, _ = asynq.GetRetryCount(ctx)
	meta.DueAt, _ = dueFromHeader(t)
	res, err := h.ProcessClose(ctx, meta, t.Payload())
	if err == nil && res != nil {
		h.writeResult(t.ResultWriter(), *res)
	}
	return err
}

// ProcessClose handles one run of a close task and returns asynq's
// instruction, decided here and nowhere else:
//
//   - nil: done; the returned CloseResult says how the order ended.
//   - a *retry.Postpone (errors.As): run again later without spending a
//     retry: at its Until (an early start, a possible early close) or after
//     its After (rate limited, carrying WeChat Pay's Retry-After hint).
//   - an error wrapping asynq.SkipRetry: archive now; the error is the
//     reason (invalid payload, permanent refusal, retries exhausted).
//   - any other error: retry with backoff, spending a retry.
func (h *CloseHandler) ProcessClose(ctx context.Context, meta TaskMeta, payload []byte) (*CloseResult, error) {
	start := h.cfg.Now()
	a := Attempt{TaskID: meta.ID, Retried: meta.Retried}

	p, err := h.admit(meta, payload, start)
	if err != nil {
		a.Order = p.Ref()
		a.Outcome = OutcomeInvalidPayload
		h.report(a, err)
		return nil, fmt.Errorf("archived without calling WeChat Pay: %w: %w", err, asynq.SkipRetry)
	}
	if p.MchID == "" {
		p.MchID = h.cfg.MchID
	}
	a.Order = p.Ref()
	if !meta.DueAt.IsZero() && a.Retried == 0 {
		a.Lateness, a.HasLateness = start.Sub(meta.DueAt), true
	}

	// The producer already scheduled the task after this instant; this check
	// catches early starts (asynq's whole-second clock, replays through
	// other tools, foreign producers, clock steps).
	if notBefore := h.notBefore(p); start.Before(notBefore) {
		wait := notBefore.Sub(start)
		if wait > maxInlineWait {
			a.Outcome, a.HasLateness = OutcomePostponed, false
			err := retry.PostponeUntil(notBefore, h.earlyReason(p))
			h.report(a, err)
			return nil, err
		}
		// A short wait is cheaper and safer in place: asynq archives any
		// error, postponements included, once a task's retries are spent.
		if err := h.sleep(ctx, wait); err != nil {
			return nil, fmt.Errorf("waiting for the 5-minute mark: %w", err)
		}
		if now := h.cfg.Now(); now.Before(notBefore) {
			a.Outcome, a.HasLateness = OutcomePostponed, false
			err := retry.PostponeUntil(notBefore, "clock is still before "+h.earlyReason(p))
			h.report(a, err)
			return nil, err
		}
		start = h.cfg.Now()
	}

	out, err := h.cfg.Closer.Close(ctx, closeRequest(p))
	a.WeChatLatency = h.cfg.Now().Sub(start)
	if err == nil && resultOutcome(out.Result) == "" {
		// The Closer broke its contract (no error, no final state); an
		// order is never done on an answer nobody understood.
		err = &wechat.Error{Class: wechat.ClassRetryable, Code: out.Code,
			Message: fmt.Sprintf("close returned no final state (%s)", out.Result)}
	}
	if err != nil {
		return nil, h.failed(a, p, start, err)
	}
	a.Code = out.Code
	a.Outcome = resultOutcome(out.Result)
	a.Confirmed = out.ConfirmedByQuery
	if out.Result == wechat.ResultPaid {
		// Hand the order to reconciliation before the close task completes:
		// if the worker dies in between, the close runs again, gets
		// ORDERPAID again, and the task id keeps the hand-off single.
		rp := ReconcilePayload{
			OutTradeNo: p.OutTradeNo, TransactionID: p.TransactionID,
			MchID: p.MchID, SubMchID: p.SubMchID,
			CreatedAt: p.CreatedAt, DetectedAt: h.cfg.Now().UTC(), Reason: ReasonOrderPaid,
			TradeState: out.TradeState,
		}
		if rp.TransactionID == "" {
			rp.TransactionID = out.TransactionID
		}
		dup, rerr := h.cfg.Reconciler.EnqueueReconcile(ctx, rp)
		if rerr != nil {
			a.Outcome = OutcomeRetry
			err := fmt.Errorf("order is paid but the reconciliation task could not be enqueued; will close again: %w", rerr)
			h.report(a, err)
			return nil, err
		}
		a.Reconciled = !dup
	}
	res := &CloseResult{
		Outcome: a.Outcome, Code: out.Code, Message: out.Message,
		HTTPStatus: out.HTTPStatus, RequestID: out.RequestID, FinishedAt: h.cfg.Now().UTC(),
		ConfirmedByQuery: out.ConfirmedByQuery, TradeState: out.TradeState, TransactionID: out.TransactionID,
	}
	h.report(a, nil)
	return res, nil
}

// admit decodes the payload and checks that the task may be run at all:
// the right type, a strictly valid payload, the task id its order gives, and
// a created_at within MaxCreatedAtAhead of now. The returned payload is the
// decoded one (zero if it did not decode), for the log line.
func (h *CloseHandler) admit(meta TaskMeta, payload []byte, now time.Time) (ClosePayload, error) {
	if meta.Type != TypeClose {
		return ClosePayload{}, fmt.Errorf("%w: task type %q is not %s; this queue (%s) takes only close tasks",
			ErrInvalidPayload, meta.Type, TypeClose, QueueClose)
	}
	p, err := DecodeClosePayload(payload)
	if err != nil {
		return ClosePayload{}, err
	}
	// The producer computes the id from the payload as stored (with the
	// merchant it filled in, or "_"), so compare before the worker's
	// default merchant is applied.
	if want := CloseTaskID(p.Ref()); meta.ID != want {
		return p, fmt.Errorf("%w: task id %q does not match its payload, whose order gives task id %q", ErrInvalidPayload, meta.ID, want)
	}
	if err := p.ValidateAt(now); err != nil {
		return p, err
	}
	return p, nil
}

// skew is the measured clock offset the guard must add: ClockAhead when it
// exceeds the margin, which already absorbs smaller offsets.
func (h *CloseHandler) skew() time.Duration {
	if h.cfg.ClockAhead == nil {
		return 0
	}
	if ahead := h.cfg.ClockAhead(); ahead > h.cfg.CloseMargin {
		return ahead
	}
	return 0
}

// notBefore is the first instant, on this worker's clock, at which WeChat
// Pay may be called for p: the later of creation + 5 minutes + the margin
// (or the measured clock offset, when larger) and close_at (plus that
// offset).
func (h *CloseHandler) notBefore(p ClosePayload) time.Time {
	skew := h.skew()
	t := EarliestClose(p.CreatedAt).Add(max(h.cfg.CloseMargin, skew))
	if !p.CloseAt.IsZero() {
		if c := p.CloseAt.Add(skew); c.After(t) {
			t = c
		}
	}
	return t
}

func (h *CloseHandler) earlyReason(p ClosePayload) string {
	if !p.CloseAt.IsZero() && p.CloseAt.After(EarliestClose(p.CreatedAt)) {
		return "the merchant's close_at"
	}
	return "WeChat Pay refuses to close an order within 5 minutes of its creation"
}

// closeRequest names the order to WeChat Pay. When a payload carries both
// numbers, out_trade_no wins (the task id uses it too): WeChat Pay's close
// takes one of them, and v2 only knows out_trade_no.
func closeRequest(p ClosePayload) wechat.CloseRequest {
	r := wechat.CloseRequest{MchID: p.MchID, SubMchID: p.SubMchID, SubAppID: p.SubAppID}
	if p.OutTradeNo != "" {
		r.OutTradeNo = p.OutTradeNo
	} else {
		r.TransactionID = p.TransactionID
	}
	return r
}

// failed turns a WeChat Pay error into asynq's instruction. sentAt is when
// the call was made.
func (h *CloseHandler) failed(a Attempt, p ClosePayload, sentAt time.Time, err error) error {
	var we *wechat.Error
	if errors.As(err, &we) {
		a.Code = we.Code
	}
	switch wechat.ClassOf(err) {
	case wechat.ClassPermanent:
		if h.possiblyEarly(p, sentAt, we) {
			a.Outcome = OutcomePossiblyEarly
			pp := &retry.Postpone{
				Until:  h.cfg.Now().Add(PossibleEarlyPause),
				Reason: "possible early close: WeChat Pay refused a close made within " + PossibleEarlyWindow.String() + " of the 5-minute mark",
				Err:    err,
			}
			h.report(a, pp)
			return pp
		}
		a.Outcome = OutcomePermanent
		h.report(a, err)
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	case wechat.ClassRateLimited:
		// Being told to slow down says nothing about the close: snooze,
		// without spending a retry, for WeChat Pay's hint or, without one,
		// retry's short jittered pause.
		a.Outcome = OutcomeRateLimited
		var after time.Duration
		if we != nil {
			after = we.RetryAfter
		}
		pp := retry.Snooze(after, "rate limited by WeChat Pay", err)
		h.report(a, pp)
		return pp
	}
	if a.Retried >= h.cfg.MaxRetry {
		a.Outcome = OutcomeExhausted
		h.report(a, err)
		return fmt.Errorf("gave up after %d retries: %w: %w", a.Retried, err, asynq.SkipRetry)
	}
	a.Outcome = OutcomeRetry
	h.report(a, err)
	return err
}

// possiblyEarly reports whether a permanent refusal could be WeChat Pay's
// answer to a close it thought came too early (see PossibleEarlyWindow).
func (h *CloseHandler) possiblyEarly(p ClosePayload, sentAt time.Time, we *wechat.Error) bool {
	if we == nil || we.HTTPStatus == 0 || (we.HTTPStatus >= 300 && we.HTTPStatus < 400) {
		return false // never reached WeChat Pay, or a wrong base URL
	}
	if errors.Is(we, wechat.ErrInvalidConfig) || errors.Is(we, wechat.ErrInvalidRequest) || configurationCodes[we.Code] {
		return false
	}
	mark := EarliestClose(p.CreatedAt)
	if h.cfg.ClockAhead != nil {
		mark = mark.Add(max(h.cfg.ClockAhead(), 0))
	}
	return sentAt.Before(mark.Add(PossibleEarlyWindow))
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (h *CloseHandler) writeResult(w *asynq.ResultWriter, r CloseResult) {
	if w == nil {
		return
	}
	data, err := json.Marshal(r)
	if err == nil {
		_, err = w.Write(data)
	}
	if err != nil {
		// The close itself succeeded; a missing result only costs the
		// operator some detail, so it must not fail the task.
		h.cfg.Logger.Warn().Err(err).Str("task_id", w.TaskID()).Msg("could not store the close result")
	}
}

func (h *CloseHandler) report(a Attempt, err error) {
	if h.cfg.Observer != nil {
		h.cfg.Observer.ObserveAttempt(a)
	}
	level := zerolog.InfoLevel
	switch a.Outcome {
	case OutcomeRetry, OutcomeRateLimited, OutcomePostponed, OutcomePossiblyEarly:
		level = zerolog.WarnLevel
	case OutcomePermanent, OutcomeExhausted, OutcomeInvalidPayload:
		level = zerolog.ErrorLevel
	}
	ev := h.cfg.Logger.WithLevel(level)
	if ev == nil {
		return // level disabled: skip building the line
	}
	ev = ev.Str("task_id", a.TaskID).
		Str("out_trade_no", a.Order.OutTradeNo).
		Str("transaction_id", a.Order.TransactionID).
		Str("mchid", a.Order.MchID).
		Int("attempt", a.Retried+1).
		Str("outcome", a.Outcome).
		Str("wechat_code", a.Code).
		Dur("latency_ms", a.WeChatLatency)
	if a.Order.SubMchID != "" {
		ev = ev.Str("sub_mchid", a.Order.SubMchID)
	}
	if a.HasLateness {
		ev = ev.Dur("lateness_ms", a.Lateness)
	}
	if a.Reconciled {
		ev = ev.Bool("reconciliation_enqueued", true)
	}
	if a.Confirmed {
		ev = ev.Bool("confirmed_by_query", true)
	}
	if a.Outcome == OutcomePossiblyEarly {
		ev = ev.Bool("possible_early_close", true)
	}
	if err != nil {
		ev = ev.Err(err)
	}
	ev.Msg("close attempt")
}

// resultOutcome names a final Result, or returns "" for anything else.
func resultOutcome(r wechat.Result) string {
	switch r {
	case wechat.ResultClosed:
		return OutcomeClosed
	case wechat.ResultAlreadyClosed:
		return OutcomeAlreadyClosed
	case wechat.ResultPaid:
		return OutcomePaid
	case wechat.ResultNotFound:
		return OutcomeNotFound
	}
	return ""
}

func dueFromHeader(t *asynq.Task) (time.Time, bool) {
	v, ok := t.Headers()[HeaderDueAt]
	if !ok {
		return time.Time{}, false
	}
	due, err := time.Parse(time.RFC3339Nano, v)
	return due, err == nil
}
