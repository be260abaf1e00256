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
	// CloseMargin is added after creation + 5 minutes when a task that
	// started too early is postponed. If zero, DefaultCloseMargin.
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
	// adds it. If nil, no offset is known and none is added.
	ClockAhead func() time.Duration
}

// maxInlineWait is the longest a handler waits in place for an order's
// 5-minute mark instead of postponing the task. asynq can start a task about
// a second early; longer gaps come from producers that ignored the rule.
const maxInlineWait = 5 * time.Second

// CloseHandler processes order:close tasks. It is safe for concurrent use.
type CloseHandler struct {
	cfg HandlerConfig
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
	return &CloseHandler{cfg: cfg}, nil
}

// ProcessTask implements asynq.Handler. Its return value is asynq's
// instruction: nil = done; a retry.Postpone or a rate-limit error = run again
// later without spending a retry (see retry.IsFailure); an error wrapping
// asynq.SkipRetry = archive now with the error as the reason; any other
// error = retry with backoff.
func (h *CloseHandler) ProcessTask(ctx context.Context, t *asynq.Task) error {
	start := h.cfg.Now()
	a := Attempt{}
	a.TaskID, _ = asynq.GetTaskID(ctx)
	a.Retried, _ = asynq.GetRetryCount(ctx)

	p, err := DecodeClosePayload(t.Payload())
	if err != nil {
		a.Outcome = OutcomeInvalidPayload
		h.report(a, err)
		return fmt.Errorf("archived without calling WeChat Pay: %w: %w", err, asynq.SkipRetry)
	}
	if p.MchID == "" {
		p.MchID = h.cfg.MchID
	}
	a.Order = p.Ref()
	if due, ok := dueFromHeader(t); ok && a.Retried == 0 {
		a.Lateness, a.HasLateness = start.Sub(due), true
	}

	// The producer already scheduled the task after this instant; this check
	// catches early starts (asynq's whole-second clock, replays through
	// other tools, foreign producers, clock steps).
	if earliest := EarliestClose(p.CreatedAt); start.Before(earliest) {
		wait := earliest.Add(h.cfg.CloseMargin).Sub(start)
		if wait > maxInlineWait {
			a.Outcome, a.HasLateness = OutcomePostponed, false
			err := retry.PostponeUntil(earliest.Add(h.cfg.CloseMargin),
				"WeChat Pay refuses to close an order within 5 minutes of its creation")
			h.report(a, err)
			return err
		}
		// A short wait is cheaper and safer in place: asynq archives any
		// error, postponements included, once a task's retries are spent.
		if err := h.sleep(ctx, wait); err != nil {
			return fmt.Errorf("waiting for the 5-minute mark: %w", err)
		}
		if now := h.cfg.Now(); now.Before(earliest) {
			return retry.PostponeUntil(earliest.Add(h.cfg.CloseMargin), "clock is still before the 5-minute mark")
		}
		start = h.cfg.Now()
	}

	out, err := h.cfg.Closer.Close(ctx, wechat.CloseRequest{
		OutTradeNo: p.OutTradeNo, TransactionID: p.TransactionID,
		MchID: p.MchID, SubMchID: p.SubMchID, SubAppID: p.SubAppID,
	})
	a.WeChatLatency = h.cfg.Now().Sub(start)
	if err != nil {
		return h.failed(a, err)
	}
	a.Code = out.Code
	a.Outcome = resultOutcome(out.Result)
	if out.Result == wechat.ResultPaid {
		// Hand the order to reconciliation before the close task completes:
		// if the worker dies in between, the close runs again, gets
		// ORDERPAID again, and the task id keeps the hand-off single.
		dup, rerr := h.cfg.Reconciler.EnqueueReconcile(ctx, ReconcilePayload{
			OutTradeNo: p.OutTradeNo, TransactionID: p.TransactionID,
			MchID: p.MchID, SubMchID: p.SubMchID,
			CreatedAt: p.CreatedAt, DetectedAt: h.cfg.Now().UTC(), Reason: ReasonOrderPaid,
		})
		if rerr != nil {
			a.Outcome = OutcomeRetry
			err := fmt.Errorf("order is paid but the reconciliation task could not be enqueued; will close again: %w", rerr)
			h.report(a, err)
			return err
		}
		a.Reconciled = !dup
	}
	h.writeResult(t, CloseResult{
		Outcome: a.Outcome, Code: out.Code, Message: out.Message,
		HTTPStatus: out.HTTPStatus, RequestID: out.RequestID, FinishedAt: h.cfg.Now().UTC(),
	})
	h.report(a, nil)
	return nil
}

// failed turns a WeChat Pay error into asynq's instruction.
func (h *CloseHandler) failed(a Attempt, err error) error {
	var we *wechat.Error
	if errors.As(err, &we) {
		a.Code = we.Code
	}
	switch wechat.ClassOf(err) {
	case wechat.ClassPermanent:
		a.Outcome = OutcomePermanent
		h.report(a, err)
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	case wechat.ClassRateLimited:
		a.Outcome = OutcomeRateLimited
		h.report(a, err)
		return err
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

func (h *CloseHandler) sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (h *CloseHandler) writeResult(t *asynq.Task, r CloseResult) {
	w := t.ResultWriter()
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
	case OutcomeRetry, OutcomeRateLimited, OutcomePostponed:
		level = zerolog.WarnLevel
	case OutcomePermanent, OutcomeExhausted, OutcomeInvalidPayload:
		level = zerolog.ErrorLevel
	}
	ev := h.cfg.Logger.WithLevel(level).
		Str("task_id", a.TaskID).
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
	if err != nil {
		ev = ev.Err(err)
	}
	ev.Msg("close attempt")
}

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
	return r.String()
}

func dueFromHeader(t *asynq.Task) (time.Time, bool) {
	v, ok := t.Headers()[HeaderDueAt]
	if !ok {
		return time.Time{}, false
	}
	due, err := time.Parse(time.RFC3339Nano, v)
	return due, err == nil
}
