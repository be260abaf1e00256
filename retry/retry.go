// Package retry decides when a failed close-order task runs again and
// whether the failure spends the task's retry budget. It is policy only: no
// I/O, no Redis, no asynq import, so the decisions are easy to test and to
// read in one place.
//
// The delay is computed from the attempt number n alone. asynq calls
// Config.RetryDelayFunc(n, err, task) with a fresh call for every retry and
// keeps no state between calls (n is the task's Retried count, stored in
// Redis), so a stateful calculator such as a long-lived
// backoff.ExponentialBackOff would be shared by every task a worker runs and
// would grow with the worker's history instead of the task's. Policy.Backoff
// therefore derives the un-jittered interval Initial·Multiplier^n directly and
// lets github.com/cenkalti/backoff/v4 apply its randomization to that one
// interval.
//
// Wiring, in cmd/worker:
//
//	p := retry.Policy{} // or from configuration, checked with p.Validate()
//	cfg := asynq.Config{
//		IsFailure: retry.IsFailure,
//		RetryDelayFunc: func(n int, err error, _ *asynq.Task) time.Duration {
//			return p.Delay(n, err)
//		},
//	}
//
// The handler decides; this package only turns its decision into a delay. It
// knows two kinds of error: a *Postpone (run again later, no retry spent:
// an early start, a rate-limited answer, a possible early close) and
// anything else (a failure: back off by the attempt number). It knows
// nothing about WeChat Pay.
//
// A *Postpone does not count as a failure but still goes through asynq's
// retry path. Note that asynq v0.26.0 checks the budget before IsFailure:
// once a task has used all its retries (Retried == MaxRetry), any error on
// its last attempt archives it, even one for which IsFailure reports false.
package retry

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Defaults used for the zero values of Policy's fields.
const (
	DefaultInitial    = 10 * time.Second
	DefaultMax        = 10 * time.Minute
	DefaultMultiplier = 2.0
	DefaultJitter     = 0.2
)

// Policy is an exponential backoff curve with jitter. The zero value is
// ready to use: 10 s, 20 s, 40 s, ... capped at 10 minutes, each ±20 %.
//
// A Policy is a plain value: it is safe to copy and to use from many
// goroutines at once.
type Policy struct {
	// Initial is the un-jittered delay before the first retry (n = 0).
	// If zero, 10 s.
	Initial time.Duration
	// Max caps every delay, jitter included. It must be at least Initial.
	// If zero, 10 minutes.
	Max time.Duration
	// Multiplier is the growth of the un-jittered delay from one retry to
	// the next. It must be greater than 1. If zero, 2.
	Multiplier float64
	// Jitter is the randomization factor: a delay is drawn uniformly from
	// interval·[1-Jitter, 1+Jitter], so that tasks that failed together do
	// not retry together. It must be below (Multiplier-1)/(Multiplier+1)
	// (1/3 for Multiplier 2), which keeps the shortest draw for retry n+1
	// longer than the longest draw for retry n. If zero, 0.2. If negative,
	// delays are not randomized (useful in tests that assert run times).
	Jitter float64
}

// withDefaults returns p with every zero field replaced by its default and a
// negative Jitter replaced by 0.
func (p Policy) withDefaults() Policy {
	if p.Initial == 0 {
		p.Initial = DefaultInitial
	}
	if p.Max == 0 {
		p.Max = DefaultMax
	}
	if p.Multiplier == 0 {
		p.Multiplier = DefaultMultiplier
	}
	switch {
	case p.Jitter == 0:
		p.Jitter = DefaultJitter
	case p.Jitter < 0:
		p.Jitter = 0
	}
	return p
}

// Validate reports the first field that makes p unusable, after zero values
// are replaced by their defaults. Call it once at startup; Backoff and Delay
// fall back to the default policy rather than misbehave on an invalid one.
func (p Policy) Validate() error {
	d := p.withDefaults()
	switch {
	case d.Initial < 0:
		return fmt.Errorf("retry: Initial is %s: it must be positive (or zero for %s)", d.Initial, DefaultInitial)
	case d.Max < 0:
		return fmt.Errorf("retry: Max is %s: it must be positive (or zero for %s)", d.Max, DefaultMax)
	case d.Max < d.Initial:
		return fmt.Errorf("retry: Max (%s) is shorter than Initial (%s): raise Max or lower Initial", d.Max, d.Initial)
	case math.IsNaN(d.Multiplier) || math.IsInf(d.Multiplier, 0) || d.Multiplier <= 1:
		return fmt.Errorf("retry: Multiplier is %v: it must be a number greater than 1 (or zero for %v)", p.Multiplier, DefaultMultiplier)
	case math.IsNaN(d.Jitter) || math.IsInf(d.Jitter, 0):
		return fmt.Errorf("retry: Jitter is %v: it must be a number", p.Jitter)
	}
	if limit := (d.Multiplier - 1) / (d.Multiplier + 1); d.Jitter >= limit {
		return fmt.Errorf("retry: Jitter is %v: with Multiplier %v it must be below %.4f so that every delay is longer than the one before", p.Jitter, d.Multiplier, limit)
	}
	return nil
}

// effective returns p with defaults applied, or the default policy if p is
// invalid, so that Backoff never panics or returns a non-positive delay.
func (p Policy) effective() Policy {
	if p.Validate() != nil {
		return Policy{}.withDefaults()
	}
	return p.withDefaults()
}

// interval returns the un-jittered delay for retry n: Initial·Multiplier^n,
// capped at Max. A negative n counts as 0.
func (p Policy) interval(n int) time.Duration {
	if n < 0 {
		n = 0
	}
	f := float64(p.Initial) * math.Pow(p.Multiplier, float64(n))
	if f >= float64(p.Max) { // also catches +Inf for large n
		return p.Max
	}
	return time.Duration(f)
}

// zeroClock satisfies backoff.Clock without reading the system clock:
// MaxElapsedTime is 0, so the elapsed time is never used.
type zeroClock struct{}

func (zeroClock) Now() time.Time { return time.Time{} }

// Backoff returns the delay before retry n (0 for the first retry): the
// interval Initial·Multiplier^n, capped at Max, randomized by ±Jitter the way
// backoff.ExponentialBackOff does it, and then capped at Max again because the
// library caps only the interval, not the randomized delay.
//
// Every delay lies in [Initial·(1-Jitter), Max]. Backoff(n+1) > Backoff(n)
// for every pair of draws as long as Initial·Multiplier^(n+1) < Max; once the
// interval reaches Max the delays stay in [Max·(1-Jitter), Max] and grow no
// more, so they are monotone in expectation but not draw by draw.
//
// The random numbers come from math/rand's global source, which is safe for
// concurrent use; Backoff keeps no other state.
func (p Policy) Backoff(n int) time.Duration {
	p = p.effective()
	b := backoff.ExponentialBackOff{
		InitialInterval:     p.interval(n),
		RandomizationFactor: p.Jitter,
		Multiplier:          p.Multiplier,
		MaxInterval:         p.Max,
		MaxElapsedTime:      0,
		Stop:                backoff.Stop,
		Clock:               zeroClock{},
	}
	b.Reset()
	return min(b.NextBackOff(), p.Max)
}

// Postpone is the error a handler returns to have a task run again later
// without spending its retry budget, as river's JobSnooze does: the task ran
// before it was allowed to (WeChat Pay must not be asked to close an order
// before creation + 5 minutes or the merchant's deadline), or WeChat Pay asked
// the caller to slow down, or an answer might mean "too early". It is not a
// failure (see IsFailure); Delay turns it into the wait.
//
// Until is a floor: a task is never scheduled before it. After is advice: a
// wait that Delay caps at Policy.Max, so that a wild Retry-After hint cannot
// park an order. When both are zero, Delay uses the policy's first backoff,
// a short jittered pause that does not grow (postponements do not increment
// the attempt number, so it could not grow anyway) and that spreads tasks
// postponed together.
type Postpone struct {
	// Until is the earliest time the task may run again. If zero, After
	// applies instead.
	Until time.Time
	// After is how long to wait when Until is zero, capped at Policy.Max.
	// If zero (and Until is zero), Policy.Backoff(0).
	After time.Duration
	// Reason says why, for logs and the asynq UI.
	Reason string
	// Err is the cause, if any (for example WeChat Pay's rate-limit error),
	// kept for errors.Is and errors.As.
	Err error
}

// Error implements error.
func (p *Postpone) Error() string {
	if p == nil {
		return "not yet due"
	}
	var s string
	switch {
	case !p.Until.IsZero():
		s = fmt.Sprintf("not yet due: %s, run again at %s", p.Reason, p.Until.UTC().Format(time.RFC3339))
	case p.After > 0:
		s = fmt.Sprintf("postponed: %s, run again in %s", p.Reason, p.After)
	default:
		s = fmt.Sprintf("postponed: %s, run again after a short pause", p.Reason)
	}
	if p.Err != nil {
		s += ": " + p.Err.Error()
	}
	return s
}

// Unwrap returns the cause.
func (p *Postpone) Unwrap() error {
	if p == nil {
		return nil
	}
	return p.Err
}

// PostponeUntil returns a *Postpone asking for the task to run again at t,
// and not before.
func PostponeUntil(t time.Time, reason string) error {
	return &Postpone{Until: t, Reason: reason}
}

// Snooze returns a *Postpone asking for the task to run again after d
// (capped at Policy.Max), or after the policy's short jittered pause when d
// is zero or negative. cause, which may be nil, is kept for errors.As.
func Snooze(d time.Duration, reason string, cause error) error {
	return &Postpone{After: max(d, 0), Reason: reason, Err: cause}
}

// IsFailure is meant for asynq.Config.IsFailure. It reports false for a
// *Postpone (wrapped or not), so that it does not spend the task's retry
// budget: running early is not the task's fault, and being told to slow down
// says nothing about whether the close can succeed. Every other non-nil
// error is a failure. A nil error is not.
func IsFailure(err error) bool {
	if err == nil {
		return false
	}
	var pp *Postpone
	return !errors.As(err, &pp)
}

// Delay is meant for asynq.Config.RetryDelayFunc; n is the number of retries
// already spent (asynq's Retried) and err what the handler returned.
//
//   - *Postpone with Until: the time left until Until, so the task runs no
//     earlier than Until (see below on whole seconds).
//   - *Postpone with After: that wait, but no longer than Max.
//   - *Postpone with neither: Backoff(0), a short jittered wait.
//   - anything else: Backoff(n).
//
// asynq stores run times in whole Unix seconds and truncates, so every delay
// is rounded: Delay aims at the target time rounded up to a whole second and
// returns the time to it rounded up to a whole second, at least 1 s. asynq's
// truncation of now+delay then still lands on or after the target, so a
// retry never runs sooner than its backoff and successive gaps keep growing.
// A target too far away for a time.Duration (after about the year 2300)
// gives MaxDelay, not an overflow.
func (p Policy) Delay(n int, err error) time.Duration {
	return p.delay(time.Now(), n, err)
}

// MaxDelay is the longest delay Delay returns: the largest whole number of
// seconds a time.Duration holds (about 292 years). A target beyond it
// saturates here instead of wrapping around to a short delay, which would run
// a task far too early and then every second.
const MaxDelay = time.Duration(math.MaxInt64 / int64(time.Second) * int64(time.Second))

// delay is Delay with an explicit clock, for tests.
func (p Policy) delay(now time.Time, n int, err error) time.Duration {
	var pp *Postpone
	if errors.As(err, &pp) {
		switch {
		case pp == nil:
			return time.Second
		case !pp.Until.IsZero():
			return untilDelay(now, pp.Until)
		case pp.After > 0:
			return untilDelay(now, now.Add(min(pp.After, p.effective().Max)))
		}
		return untilDelay(now, now.Add(p.Backoff(0)))
	}
	return untilDelay(now, now.Add(p.Backoff(n)))
}

// untilDelay returns a whole number of seconds, at least 1 and at most
// MaxDelay, such that now+delay truncated to whole seconds (as asynq stores
// it) is not before until, unless until is more than MaxDelay away.
func untilDelay(now, until time.Time) time.Duration {
	target := until.Truncate(time.Second)
	if target.Before(until) {
		target = target.Add(time.Second)
	}
	// Sub saturates at the extremes of time.Duration; rounding up from
	// there would overflow, so anything beyond MaxDelay is MaxDelay.
	d := target.Sub(now)
	if d > MaxDelay {
		return MaxDelay
	}
	if r := d % time.Second; r > 0 {
		d += time.Second - r
	}
	return max(d, time.Second)
}
