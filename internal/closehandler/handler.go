package closehandler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
	"github.com/rs/zerolog"

	"github.com/wxclose/wxclose/retry"
	"github.com/wxclose/wxclose/tasks"
	"github.com/wxclose/wxclose/wechat"
)

// Attempt describes one run of a close task, for metrics.
type Attempt struct {
	TaskID  string
	Order   tasks.OrderRef
	Retried int
	// Outcome is one of the tasks.Outcome* constants.
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
	// Merchant is the merchant's Name (a bounded metric label), or "".
	Merchant string
	// RateWait is how long the close waited in place for its merchant's
	// rate-limit slot; RatePostponed is true when it was postponed instead
	// (the slot was too far away); RateDecreased when WeChat Pay's
	// RATE_LIMITED answer lowered the merchant's shared rate.
	RateWait      time.Duration
	RatePostponed bool
	RateDecreased bool
}

// Observer receives one Attempt per handled task; metrics implement it.
// ObserveAttempt must be cheap and must not block.
type Observer interface {
	ObserveAttempt(Attempt)
}

// Reconciler takes paid orders; *tasks.Producer implements it.
type Reconciler interface {
	EnqueueReconcile(ctx context.Context, p tasks.ReconcilePayload) (duplicate bool, err error)
}

// Config configures a Handler.
type Config struct {
	// Merchants finds the merchant, and so the keys and rate limit, of
	// each close. If nil, Closer closes the orders of MchID (and of
	// payloads without mchid) and a close for any other merchant is
	// archived; with MchID empty too, Closer closes every order.
	Merchants Merchants
	// Closer calls WeChat Pay for MchID. Required when Merchants is nil;
	// ignored otherwise.
	Closer wechat.Closer
	// Limiter paces each merchant's calls to its Merchant.RateLimit. If
	// nil, calls are not paced.
	Limiter Limiter
	// MaxRateWait is the longest a close waits in place for its rate-limit
	// slot; a slot further away postpones it (no retry spent). If zero,
	// DefaultMaxRateWait.
	MaxRateWait time.Duration
	// Reconciler receives paid orders. Required.
	Reconciler Reconciler
	// MchID is Closer's merchant, used when a payload has none (only
	// without Merchants).
	MchID string
	// CloseMargin is added after creation + 5 minutes: the handler never
	// calls WeChat Pay before creation + 5 minutes + CloseMargin (nor before
	// the payload's close_at). If zero, tasks.DefaultCloseMargin; negative values
	// count as zero.
	CloseMargin time.Duration
	// MaxRetry caps retries of transient failures whatever budget the task
	// carries. If zero, tasks.DefaultMaxRetry.
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

// Handler processes order:close tasks. It is safe for concurrent use.
type Handler struct {
	cfg Config
	// sleep waits in place for the 5-minute mark; tests replace it to move
	// their fixed clock instead of sleeping.
	sleep func(ctx context.Context, d time.Duration) error
}

// New checks cfg and returns a handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Merchants == nil {
		if cfg.Closer == nil {
			return nil, errors.New("closehandler: Config.Merchants or Config.Closer is required")
		}
		cfg.Merchants = singleMerchant{Merchant{MchID: cfg.MchID, Closer: cfg.Closer}}
	}
	if cfg.MaxRateWait == 0 {
		cfg.MaxRateWait = DefaultMaxRateWait
	}
	if cfg.Reconciler == nil {
		return nil, errors.New("closehandler: Config.Reconciler is required")
	}
	if cfg.CloseMargin == 0 {
		cfg.CloseMargin = tasks.DefaultCloseMargin
	}
	cfg.CloseMargin = max(cfg.CloseMargin, 0)
	if cfg.MaxRetry <= 0 {
		cfg.MaxRetry = tasks.DefaultMaxRetry
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Handler{cfg: cfg, sleep: sleepCtx}, nil
}

// TaskMeta is what the handler reads about a task besides its payload.
// ProcessTask fills it from asynq (whose task context cannot be built
// outside asynq); tests fill it themselves and call ProcessClose.
type TaskMeta struct {
	// ID is the task id (asynq.GetTaskID). It must be tasks.CloseTaskID of
	// the payload's order.
	ID string
	// Type is the task type; anything but tasks.TypeClose is archived.
	Type string
	// Retried is the number of retries already spent (asynq.GetRetryCount).
	Retried int
	// MaxRetry is the task's retry budget (asynq.GetMaxRetry); zero if
	// unknown. Once Retried reaches it, asynq archives any error.
	MaxRetry int
	// DueAt is when the task became runnable (the tasks.HeaderDue header,
	// tasks.DueFromHeaders), zero if unknown.
	DueAt time.Time
}

// Record is what one run leaves with its task, as asynq's task result: the
// CloseResult of a completed close, or the CloseFailure of an attempt that
// did not complete it. At most one is set. Both are nil only when nothing
// can be stored: the run was cancelled while waiting for the 5-minute mark,
// and asynq refuses writes once a task's context is done. ProcessTask does
// not store the CloseResult of a plain close (see ProcessTask).
type Record struct {
	Result  *tasks.CloseResult
	Failure *tasks.CloseFailure
}

// recordWriter is the part of *asynq.ResultWriter the handler uses.
type recordWriter interface {
	Write(data []byte) (int, error)
	TaskID() string
}

// ProcessTask implements asynq.Handler; see ProcessClose for the
// instruction it returns. It stores the run's Record as the task's result,
// one write per run, except for a plain close (tasks.CloseResult.NeedsRecord):
// readers take a completed close task without a result for one
// (tasks.ReadCloseRecord), so the write would only cost a Redis round trip.
func (h *Handler) ProcessTask(ctx context.Context, t *asynq.Task) error {
	meta := TaskMeta{Type: t.Type()}
	meta.ID, _ = asynq.GetTaskID(ctx)
	meta.Retried, _ = asynq.GetRetryCount(ctx)
	meta.MaxRetry, _ = asynq.GetMaxRetry(ctx)
	meta.DueAt, _ = dueFromHeader(t)
	var w recordWriter
	if rw := t.ResultWriter(); rw != nil { // nil outside asynq
		w = rw
	}
	return h.process(ctx, meta, t.Payload(), w)
}

// process is ProcessTask after asynq's context has been read: it decides
// and stores the record with w, which may be nil.
func (h *Handler) process(ctx context.Context, meta TaskMeta, payload []byte, w recordWriter) error {
	rec, err := h.ProcessClose(ctx, meta, payload)
	switch {
	case rec.Result != nil && !rec.Result.NeedsRecord():
		// A failure record an earlier attempt left stays; readers know a
		// completed task's record is never a failure.
	case rec.Result != nil:
		h.store(w, rec.Result)
	case rec.Failure != nil:
		h.store(w, rec.Failure)
	}
	return err
}

// ProcessClose handles one run of a close task and returns the record to
// store with it and asynq's instruction, decided here and nowhere else:
//
//   - nil: done; Record.Result says how the order ended.
//   - a *retry.Postpone (errors.As): run again later without spending a
//     retry: at its Until (an early start, a possible early close) or after
//     its After (rate limited, carrying WeChat Pay's Retry-After hint).
//   - an error wrapping asynq.SkipRetry: archive now; the error is the
//     reason (invalid payload, permanent refusal, retries exhausted).
//   - any other error: retry with backoff, spending a retry.
//
// With every error but a cancelled wait, Record.Failure carries the same
// decision as data (outcome, WeChat Pay's code, class, message, status and
// request id), so that nobody needs to parse the error's text.
func (h *Handler) ProcessClose(ctx context.Context, meta TaskMeta, payload []byte) (Record, error) {
	start := h.cfg.Now()
	a := Attempt{TaskID: meta.ID, Retried: meta.Retried}

	p, err := h.admit(meta, payload, start)
	if err != nil {
		a.Order = p.Ref()
		a.Outcome = tasks.OutcomeInvalidPayload
		h.report(a, err)
		f := h.failure(a, tasks.ClassPermanent, nil, err)
		return Record{Failure: f}, fmt.Errorf("archived without calling WeChat Pay: %w: %w", err, asynq.SkipRetry)
	}
	m, err := h.cfg.Merchants.Merchant(p.MchID)
	if err != nil {
		a.Order = p.Ref()
		return h.merchantFailure(a, p, err)
	}
	if p.MchID == "" {
		p.MchID = m.MchID
	}
	a.Order, a.Merchant = p.Ref(), m.Name
	if !meta.DueAt.IsZero() && a.Retried == 0 {
		a.Lateness, a.HasLateness = start.Sub(meta.DueAt), true
	}

	// The producer already scheduled the task after this instant; this check
	// catches early starts (asynq's whole-second clock, replays through
	// other tools, foreign producers, clock steps).
	if notBefore := h.notBefore(p); start.Before(notBefore) {
		wait := notBefore.Sub(start)
		if wait > maxInlineWait {
			return h.postponeEarly(a, retry.PostponeUntil(notBefore, h.earlyReason(p)))
		}
		// A short wait is cheaper and safer in place: asynq archives any
		// error, postponements included, once a task's retries are spent.
		if err := h.sleep(ctx, wait); err != nil {
			return Record{}, fmt.Errorf("waiting for the 5-minute mark: %w", err)
		}
		if now := h.cfg.Now(); now.Before(notBefore) {
			return h.postponeEarly(a, retry.PostponeUntil(notBefore, "clock is still before "+h.earlyReason(p)))
		}
	}

	// The merchant's rate limit, shared by the fleet; waiting for it only
	// moves the call later, never earlier than the guard allowed.
	slot, err := h.pace(ctx, &a, m, meta)
	if err != nil {
		var pp *retry.Postpone
		if !errors.As(err, &pp) {
			return Record{}, err // cancelled while waiting
		}
		return h.postponeEarly(a, err)
	}
	start = h.cfg.Now()

	out, err := m.Closer.Close(ctx, closeRequest(p))
	a.WeChatLatency = h.cfg.Now().Sub(start)
	if err == nil && resultOutcome(out.Result) == "" {
		// The Closer broke its contract (no error, no final state); an
		// order is never done on an answer nobody understood.
		err = &wechat.Error{Class: wechat.ClassRetryable, Code: out.Code,
			Message: fmt.Sprintf("close returned no final state (%s)", out.Result)}
	}
	if err != nil {
		if wechat.ClassOf(err) == wechat.ClassRateLimited {
			h.throttled(ctx, &a, m, slot)
		}
		return h.failed(a, p, start, err)
	}
	a.Code = out.Code
	a.Outcome = resultOutcome(out.Result)
	a.Confirmed = out.ConfirmedByQuery
	if out.Result == wechat.ResultPaid {
		// Hand the order to reconciliation before the close task completes:
		// if the worker dies in between, the close runs again, gets
		// ORDERPAID again, and the task id keeps the hand-off single.
		rp := tasks.ReconcilePayload{
			OutTradeNo: p.OutTradeNo, TransactionID: p.TransactionID,
			MchID: p.MchID, SubMchID: p.SubMchID,
			CreatedAt: p.CreatedAt, DetectedAt: h.cfg.Now().UTC(), Reason: tasks.ReasonOrderPaid,
			TradeState: out.TradeState,
		}
		if rp.TransactionID == "" {
			rp.TransactionID = out.TransactionID
		}
		dup, rerr := h.cfg.Reconciler.EnqueueReconcile(ctx, rp)
		if rerr != nil {
			a.Outcome = tasks.OutcomeRetry
			err := fmt.Errorf("order is paid but the reconciliation task could not be enqueued; will close again: %w", rerr)
			h.report(a, err)
			f := h.failure(a, tasks.ClassRetryable, nil, err)
			f.Code, f.HTTPStatus, f.RequestID = out.Code, out.HTTPStatus, out.RequestID
			return Record{Failure: f}, err
		}
		a.Reconciled = !dup
	}
	res := &tasks.CloseResult{
		Outcome: a.Outcome, Code: out.Code, Message: out.Message,
		HTTPStatus: out.HTTPStatus, RequestID: out.RequestID, FinishedAt: h.cfg.Now().UTC(),
		ConfirmedByQuery: out.ConfirmedByQuery, TradeState: out.TradeState, TransactionID: out.TransactionID,
	}
	h.report(a, nil)
	return Record{Result: res}, nil
}

// postponeEarly reports and returns the postponement of a task that
// started before it may call WeChat Pay (too early, or its merchant's
// rate-limit slot too far away). It is no failure, so its record has no
// class.
func (h *Handler) postponeEarly(a Attempt, err error) (Record, error) {
	a.Outcome, a.HasLateness = tasks.OutcomePostponed, false
	h.report(a, err)
	return Record{Failure: h.failure(a, "", nil, err)}, err
}

// admit decodes the payload and checks that the task may be run at all:
// the right type, a strictly valid payload, the task id its order gives, and
// a created_at within tasks.MaxCreatedAtAhead of now. The returned payload
// is the decoded one (zero if it did not decode), for the log line.
func (h *Handler) admit(meta TaskMeta, payload []byte, now time.Time) (tasks.ClosePayload, error) {
	if meta.Type != tasks.TypeClose {
		return tasks.ClosePayload{}, fmt.Errorf("%w: task type %q is not %s; this queue (%s) takes only close tasks",
			tasks.ErrInvalidPayload, meta.Type, tasks.TypeClose, tasks.QueueClose)
	}
	p, err := tasks.DecodeClosePayload(payload)
	if err != nil {
		return tasks.ClosePayload{}, err
	}
	// The producer computes the id from the payload as stored (with the
	// merchant it filled in, or "_"), so compare before the worker's
	// default merchant is applied.
	if want := tasks.CloseTaskID(p.Ref()); meta.ID != want {
		return p, fmt.Errorf("%w: task id %q does not match its payload, whose order gives task id %q", tasks.ErrInvalidPayload, meta.ID, want)
	}
	if err := p.ValidateAt(now); err != nil {
		return p, err
	}
	return p, nil
}

// skew is the measured clock offset the guard must add: ClockAhead when it
// exceeds the margin, which already absorbs smaller offsets.
func (h *Handler) skew() time.Duration {
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
func (h *Handler) notBefore(p tasks.ClosePayload) time.Time {
	skew := h.skew()
	t := tasks.EarliestClose(p.CreatedAt).Add(max(h.cfg.CloseMargin, skew))
	if !p.CloseAt.IsZero() {
		if c := p.CloseAt.Add(skew); c.After(t) {
			t = c
		}
	}
	return t
}

func (h *Handler) earlyReason(p tasks.ClosePayload) string {
	if !p.CloseAt.IsZero() && p.CloseAt.After(tasks.EarliestClose(p.CreatedAt)) {
		return "the merchant's close_at"
	}
	return "WeChat Pay refuses to close an order within 5 minutes of its creation"
}

// closeRequest names the order to WeChat Pay. When a payload carries both
// numbers, out_trade_no wins (the task id uses it too): WeChat Pay's close
// takes one of them, and v2 only knows out_trade_no.
func closeRequest(p tasks.ClosePayload) wechat.CloseRequest {
	r := wechat.CloseRequest{MchID: p.MchID, SubMchID: p.SubMchID, SubAppID: p.SubAppID}
	if p.OutTradeNo != "" {
		r.OutTradeNo = p.OutTradeNo
	} else {
		r.TransactionID = p.TransactionID
	}
	return r
}

// failed turns a WeChat Pay error into asynq's instruction and the record
// that describes it. sentAt is when the call was made.
func (h *Handler) failed(a Attempt, p tasks.ClosePayload, sentAt time.Time, err error) (Record, error) {
	var we *wechat.Error
	if errors.As(err, &we) {
		a.Code = we.Code
	}
	class := wechat.ClassOf(err)
	instr := err // what asynq is told; the log line shows postponements as such
	logged := err
	switch {
	case class == wechat.ClassPermanent && h.possiblyEarly(p, sentAt, we):
		a.Outcome = tasks.OutcomePossiblyEarly
		instr = &retry.Postpone{
			Until:  h.cfg.Now().Add(PossibleEarlyPause),
			Reason: "possible early close: WeChat Pay refused a close made within " + PossibleEarlyWindow.String() + " of the 5-minute mark",
			Err:    err,
		}
		logged = instr
	case class == wechat.ClassPermanent:
		a.Outcome = tasks.OutcomePermanent
		instr = fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	case class == wechat.ClassRateLimited:
		// Being told to slow down says nothing about the close: snooze,
		// without spending a retry, for WeChat Pay's hint or, without one,
		// retry's short jittered pause.
		a.Outcome = tasks.OutcomeRateLimited
		var after time.Duration
		if we != nil {
			after = we.RetryAfter
		}
		instr = retry.Snooze(after, "rate limited by WeChat Pay", err)
		logged = instr
	case a.Retried >= h.cfg.MaxRetry:
		a.Outcome = tasks.OutcomeExhausted
		instr = fmt.Errorf("gave up after %d retries: %w: %w", a.Retried, err, asynq.SkipRetry)
	default:
		a.Outcome = tasks.OutcomeRetry
	}
	h.report(a, logged)
	return Record{Failure: h.failure(a, className(class), we, err)}, instr
}

// failure describes a failed attempt as data. we is WeChat Pay's error, if
// the failure is one; its fields are copied rather than parsed from err.
func (h *Handler) failure(a Attempt, class string, we *wechat.Error, err error) *tasks.CloseFailure {
	f := &tasks.CloseFailure{
		Outcome: a.Outcome, Class: class, Attempt: a.Retried + 1, At: h.cfg.Now().UTC(),
	}
	if we == nil {
		f.Message = err.Error()
		return f
	}
	f.Code, f.HTTPStatus, f.RequestID = we.Code, we.HTTPStatus, we.RequestID
	f.Message = we.Message
	if we.Err != nil {
		if f.Message != "" {
			f.Message += ": "
		}
		f.Message += we.Err.Error()
	}
	if f.Message == "" { // WeChat Pay said nothing beyond its status and code
		f.Message = err.Error()
	}
	return f
}

// className names a wechat.Class in the contract's words. The contract
// spells them itself (tasks must not import wechat); TestClassNames keeps
// the two in step.
func className(c wechat.Class) string {
	switch c {
	case wechat.ClassRateLimited:
		return tasks.ClassRateLimited
	case wechat.ClassPermanent:
		return tasks.ClassPermanent
	}
	return tasks.ClassRetryable
}

// possiblyEarly reports whether a permanent refusal could be WeChat Pay's
// answer to a close it thought came too early (see PossibleEarlyWindow).
func (h *Handler) possiblyEarly(p tasks.ClosePayload, sentAt time.Time, we *wechat.Error) bool {
	if we == nil || we.HTTPStatus == 0 || (we.HTTPStatus >= 300 && we.HTTPStatus < 400) {
		return false // never reached WeChat Pay, or a wrong base URL
	}
	if errors.Is(we, wechat.ErrInvalidConfig) || errors.Is(we, wechat.ErrInvalidRequest) || configurationCodes[we.Code] {
		return false
	}
	mark := tasks.EarliestClose(p.CreatedAt)
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

// store writes a record as the task's result. A failed write only costs the
// operator some detail (the close itself is decided; asynq still records
// the error's text), so it never changes the instruction. (For a completed
// close whose result could not be written, readers then show a plain close.)
func (h *Handler) store(w recordWriter, record any) {
	if w == nil {
		return
	}
	data, err := json.Marshal(record)
	if err == nil {
		_, err = w.Write(data)
	}
	if err != nil {
		h.cfg.Logger.Warn().Err(err).Str("task_id", w.TaskID()).Msg("could not store the close record")
	}
}

func (h *Handler) report(a Attempt, err error) {
	if h.cfg.Observer != nil {
		h.cfg.Observer.ObserveAttempt(a)
	}
	level := zerolog.InfoLevel
	switch a.Outcome {
	case tasks.OutcomeRetry, tasks.OutcomeRateLimited, tasks.OutcomePostponed, tasks.OutcomePossiblyEarly:
		level = zerolog.WarnLevel
	case tasks.OutcomePermanent, tasks.OutcomeExhausted, tasks.OutcomeInvalidPayload:
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
	if a.Merchant != "" {
		ev = ev.Str("merchant", a.Merchant)
	}
	if a.RateWait > 0 {
		ev = ev.Dur("rate_wait_ms", a.RateWait)
	}
	if a.RateDecreased {
		ev = ev.Bool("rate_limit_lowered", true)
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
	if a.Outcome == tasks.OutcomePossiblyEarly {
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
		return tasks.OutcomeClosed
	case wechat.ResultAlreadyClosed:
		return tasks.OutcomeAlreadyClosed
	case wechat.ResultPaid:
		return tasks.OutcomePaid
	case wechat.ResultNotFound:
		return tasks.OutcomeNotFound
	}
	return ""
}

func dueFromHeader(t *asynq.Task) (time.Time, bool) {
	return tasks.DueFromHeaders(t.Headers())
}
