package closehandler

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"

	"github.com/wxclose/wxclose/internal/ratelimit"
	"github.com/wxclose/wxclose/retry"
	"github.com/wxclose/wxclose/tasks"
	"github.com/wxclose/wxclose/wechat"
)

// Merchant is what the handler needs to close one merchant's orders.
type Merchant struct {
	// MchID is the merchant, or the institution (sp_mchid) whose entry
	// closes for any sub_mchid under it.
	MchID string
	// Closer signs with this merchant's keys, and only its.
	Closer wechat.Closer
	// RateLimit is the merchant's Close Order rate, in calls per second,
	// shared by every worker. If zero, no limit.
	RateLimit float64
	// Name is the operator's short name for metric labels; empty for none.
	Name string
}

// Merchants finds the merchant of a close; internal/merchants' registry
// implements it (through the worker). Lookups must be cheap and safe for
// concurrent use.
type Merchants interface {
	// Merchant returns the merchant mchid, or, for "", the only merchant.
	// Its errors wrap ErrUnknownMerchant or ErrMerchantRequired.
	Merchant(mchid string) (Merchant, error)
}

// Errors of Merchants.Merchant.
var (
	// ErrUnknownMerchant: the payload names a merchant nobody configured.
	ErrUnknownMerchant = errors.New("merchant not configured")
	// ErrMerchantRequired: the payload names no merchant and there are
	// several.
	ErrMerchantRequired = errors.New("payload names no merchant")
)

// Codes stored in the CloseFailure of a close archived because of its
// merchant, so that `enqueue replay --code CODE` selects them after the
// operator fixed the configuration. They are wxclose's, not WeChat Pay's
// (which never sees these closes), hence the prefix.
const (
	CodeUnknownMerchant  = "WXCLOSE_UNKNOWN_MERCHANT"
	CodeMerchantRequired = "WXCLOSE_MERCHANT_REQUIRED"
)

// Limiter paces calls per merchant; *ratelimit.Limiter implements it.
type Limiter interface {
	Reserve(ctx context.Context, key string, rate float64, maxWait time.Duration) (ratelimit.Slot, error)
	Throttled(ctx context.Context, key string, rate float64, s ratelimit.Slot) (bool, error)
}

// DefaultMaxRateWait is how long a close may wait in place for its
// merchant's next slot before it is postponed instead, the same bound as
// the 5-minute guard's wait in place. A waiting close costs an idle
// goroutine; a postponed one costs asynq a round through its retry set and
// loses its place in the due order. With it, a fleet whose closes in flight
// (WXCLOSE_CONCURRENCY × workers) are at most 5 s × the rate never
// postpones at all: a burst drains at the rate, in order, one Redis call
// per close.
const DefaultMaxRateWait = 5 * time.Second

// lastAttemptRateWait replaces the in-place bound on a task's last attempt:
// asynq archives any error then, postponements included, so a close whose
// retries are spent waits for its slot rather than be postponed.
const lastAttemptRateWait = 30 * time.Second

// singleMerchant is Config.Merchants when only a Closer is given: it
// serves MchID's closes, or every close when MchID is empty (tests that
// only exercise the decision table).
type singleMerchant struct{ m Merchant }

func (s singleMerchant) Merchant(mchid string) (Merchant, error) {
	if mchid == "" || mchid == s.m.MchID || s.m.MchID == "" {
		return s.m, nil
	}
	return Merchant{}, fmt.Errorf("%w: %s", ErrUnknownMerchant, mchid)
}

// merchantFailure archives a close whose merchant cannot be resolved, with
// a reason that says how to fix it. Nothing is signed: no other merchant's
// key may close it.
func (h *Handler) merchantFailure(a Attempt, p tasks.ClosePayload, err error) (Record, error) {
	a.Outcome = tasks.OutcomePermanent
	var reason string
	if errors.Is(err, ErrMerchantRequired) {
		a.Code = CodeMerchantRequired
		reason = "the payload names no mchid and the worker serves several merchants, so it cannot tell whose keys close it: " +
			"have the producer set mchid (a replay cannot add it; enqueue the order again with its mchid)"
	} else {
		a.Code = CodeUnknownMerchant
		reason = fmt.Sprintf("merchant %s is not configured on this worker (WXCLOSE_MERCHANTS_FILE, or WECHATPAY_MCHID): "+
			"add it to the merchant registry (the worker reloads it on SIGHUP or when the file changes), then run `enqueue replay --code %s`",
			p.MchID, CodeUnknownMerchant)
	}
	h.report(a, err)
	f := h.failure(a, tasks.ClassPermanent, nil, errors.New(reason))
	f.Code = a.Code
	return Record{Failure: f}, fmt.Errorf("archived without calling WeChat Pay: %s: %w", reason, asynq.SkipRetry)
}

// pace takes m's next slot from the limiter and waits for it in place when
// it is near; otherwise it returns the postponement (no retry spent). With
// no limiter or no limit it does nothing.
func (h *Handler) pace(ctx context.Context, a *Attempt, m Merchant, meta TaskMeta) (ratelimit.Slot, error) {
	if h.cfg.Limiter == nil || !(m.RateLimit > 0) {
		return ratelimit.Slot{}, nil
	}
	maxWait := h.cfg.MaxRateWait
	if meta.MaxRetry > 0 && meta.Retried >= meta.MaxRetry {
		maxWait = max(maxWait, lastAttemptRateWait)
	}
	slot, err := h.cfg.Limiter.Reserve(ctx, m.MchID, m.RateLimit, maxWait)
	switch {
	case err != nil:
		// Redis, which asynq needs too, did not answer: try again after
		// retry's short pause rather than call WeChat Pay unpaced.
		a.RatePostponed = true
		return slot, retry.Snooze(0, "the rate limiter did not answer", err)
	case !slot.Reserved:
		a.RatePostponed = true
		return slot, retry.Snooze(max(slot.RetryAfter, time.Second), fmt.Sprintf(
			"rate limit: merchant's next free slot at %.4g closes/s is more than %s away", slot.Rate, maxWait), nil)
	}
	a.RateWait = slot.Wait
	if slot.Wait > 0 {
		if err := h.sleep(ctx, slot.Wait); err != nil {
			return slot, fmt.Errorf("waiting for the rate limit's slot: %w", err)
		}
	}
	return slot, nil
}

// throttled tells the limiter WeChat Pay answered RATE_LIMITED to a call
// made in slot, so that the fleet slows down. A failure only leaves the
// rate as it was; the close is postponed either way.
func (h *Handler) throttled(ctx context.Context, a *Attempt, m Merchant, slot ratelimit.Slot) {
	if h.cfg.Limiter == nil || !(m.RateLimit > 0) || !slot.Reserved {
		return
	}
	dec, err := h.cfg.Limiter.Throttled(ctx, m.MchID, m.RateLimit, slot)
	if err != nil {
		h.cfg.Logger.Warn().Err(err).Msg("could not lower the shared rate limit after RATE_LIMITED")
		return
	}
	a.RateDecreased = dec
}
