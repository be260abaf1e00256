package retry

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// errRateLimited stands for a rate-limited answer from WeChat Pay as the
// handler wraps it; retry sees only the Postpone around it.
var errRateLimited = errors.New("wechat: rate_limited: code=FREQUENCY_LIMITED status=429")

func TestDefaults(t *testing.T) {
	got := Policy{}.withDefaults()
	want := Policy{Initial: 10 * time.Second, Max: 10 * time.Minute, Multiplier: 2, Jitter: 0.2}
	if got != want {
		t.Fatalf("Policy{}.withDefaults() = %+v, want %+v", got, want)
	}
	if err := (Policy{}).Validate(); err != nil {
		t.Fatalf("zero Policy: Validate() = %v, want nil", err)
	}

	// Without jitter the curve is exact: 10s, 20s, ... capped at 10m.
	noJitter := Policy{Jitter: -1}
	wantCurve := []time.Duration{10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second,
		160 * time.Second, 320 * time.Second, 10 * time.Minute, 10 * time.Minute, 10 * time.Minute}
	for n, want := range wantCurve {
		if got := noJitter.Backoff(n); got != want {
			t.Errorf("Policy{Jitter: -1}.Backoff(%d) = %s, want %s", n, got, want)
		}
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		p      Policy
		errHas string // empty: valid
	}{
		{"zero", Policy{}, ""},
		{"custom", Policy{Initial: time.Second, Max: time.Hour, Multiplier: 3, Jitter: 0.49}, ""},
		{"no jitter", Policy{Jitter: -1}, ""},
		{"Max equals Initial", Policy{Initial: time.Minute, Max: time.Minute}, ""},
		{"negative Initial", Policy{Initial: -time.Second}, "Initial"},
		{"negative Max", Policy{Max: -time.Second}, "Max"},
		{"Max below Initial", Policy{Initial: time.Minute, Max: time.Second}, "Max (1s) is shorter than Initial (1m0s)"},
		{"Max below default Initial", Policy{Max: time.Second}, "Max (1s) is shorter than Initial (10s)"},
		{"Multiplier 1", Policy{Multiplier: 1, Jitter: -1}, "Multiplier"},
		{"Multiplier below 1", Policy{Multiplier: 0.5}, "Multiplier"},
		{"negative Multiplier", Policy{Multiplier: -2}, "Multiplier"},
		{"NaN Multiplier", Policy{Multiplier: math.NaN()}, "Multiplier"},
		{"infinite Multiplier", Policy{Multiplier: math.Inf(1)}, "Multiplier"},
		{"NaN Jitter", Policy{Jitter: math.NaN()}, "Jitter"},
		{"infinite Jitter", Policy{Jitter: math.Inf(1)}, "Jitter"},
		{"Jitter at the bound", Policy{Multiplier: 2, Jitter: 1.0 / 3}, "Jitter"},
		{"Jitter above the bound", Policy{Jitter: 0.34}, "below 0.3333"},
		{"Jitter too large for Multiplier 1.5", Policy{Multiplier: 1.5, Jitter: 0.2}, "below 0.2000"},
		{"Jitter fine for Multiplier 1.5", Policy{Multiplier: 1.5, Jitter: 0.19}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.p.Validate()
			if tt.errHas == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.errHas) {
				t.Fatalf("Validate() = %v, want an error containing %q", err, tt.errHas)
			}
		})
	}
}

func TestBackoffGrowsStrictlyBelowCap(t *testing.T) {
	const draws = 1000
	policies := []Policy{
		{},
		{Initial: time.Second, Max: time.Hour, Multiplier: 1.5, Jitter: 0.19},
		{Initial: 3 * time.Second, Max: 7 * time.Minute, Multiplier: 3, Jitter: 0.49},
		{Initial: 10 * time.Second, Max: 10 * time.Minute, Multiplier: 2, Jitter: 0.333}, // near the bound
		{Initial: time.Millisecond, Max: 2 * time.Hour, Multiplier: 1.1, Jitter: 0.04},
		{Initial: 10 * time.Second, Max: 11 * time.Second},
	}
	for _, p := range policies {
		t.Run(fmt.Sprintf("%+v", p), func(t *testing.T) {
			if err := p.Validate(); err != nil {
				t.Fatal(err)
			}
			d := p.withDefaults()
			floor := time.Duration(float64(d.Initial) * (1 - d.Jitter))
			prevMax := time.Duration(-1)
			for n := 0; n <= 15; n++ {
				lo, hi := time.Duration(math.MaxInt64), time.Duration(0)
				for range draws {
					b := p.Backoff(n)
					lo, hi = min(lo, b), max(hi, b)
				}
				if hi > d.Max {
					t.Errorf("Backoff(%d) = %s, above Max %s", n, hi, d.Max)
				}
				if lo < floor {
					t.Errorf("Backoff(%d) = %s, below Initial*(1-Jitter) = %s", n, lo, floor)
				}
				// Each draw lies within the jittered interval.
				iv := float64(d.Initial) * math.Pow(d.Multiplier, float64(n))
				iv = min(iv, float64(d.Max))
				if want := time.Duration(iv * (1 - d.Jitter)); lo < want-1 {
					t.Errorf("Backoff(%d) = %s, below interval*(1-Jitter) = %s", n, lo, want)
				}
				if want := time.Duration(iv*(1+d.Jitter)) + 1; hi > want {
					t.Errorf("Backoff(%d) = %s, above interval*(1+Jitter) = %s", n, hi, want)
				}
				// Strict growth holds while the un-jittered interval for n
				// is below Max.
				if uncapped := float64(d.Initial)*math.Pow(d.Multiplier, float64(n)) < float64(d.Max); n > 0 && uncapped {
					if lo <= prevMax {
						t.Errorf("shortest Backoff(%d) = %s is not longer than longest Backoff(%d) = %s", n, lo, n-1, prevMax)
					}
				}
				prevMax = hi
			}
		})
	}
}

// TestBackoffMatchesLibrary checks the closed-form interval against what a
// fresh backoff.ExponentialBackOff produces after n steps.
func TestBackoffMatchesLibrary(t *testing.T) {
	for _, p := range []Policy{{}, {Initial: time.Second, Max: time.Hour, Multiplier: 1.5}} {
		d := p.withDefaults()
		lib := backoff.ExponentialBackOff{
			InitialInterval: d.Initial, Multiplier: d.Multiplier, MaxInterval: d.Max,
			Stop: backoff.Stop, Clock: backoff.SystemClock,
		}
		lib.Reset()
		for n := 0; n < 30; n++ {
			want := lib.NextBackOff()
			got := d.interval(n)
			// The library truncates to a nanosecond at every step.
			if diff := math.Abs(float64(got - want)); diff > 1e-9*float64(want) {
				t.Errorf("%+v: interval(%d) = %s, library gives %s", p, n, got, want)
			}
		}
	}
}

func TestBackoffEdgeCases(t *testing.T) {
	def := Policy{Jitter: -1}
	tests := []struct {
		name string
		p    Policy
		n    int
		want time.Duration
	}{
		{"negative n counts as 0", def, -5, 10 * time.Second},
		{"huge n is capped", def, math.MaxInt, 10 * time.Minute},
		{"Max equal to Initial", Policy{Initial: time.Minute, Max: time.Minute, Jitter: -1}, 3, time.Minute},
	}
	for _, tt := range tests {
		if got := tt.p.Backoff(tt.n); got != tt.want {
			t.Errorf("%s: Backoff(%d) = %s, want %s", tt.name, tt.n, got, tt.want)
		}
	}
	// An invalid policy gets the default one, jitter included.
	for range 1000 {
		if got := (Policy{Multiplier: 0.5, Jitter: -1}).Backoff(1); got < 16*time.Second || got > 24*time.Second {
			t.Fatalf("invalid policy: Backoff(1) = %s, want the default's 20s ±20%%", got)
		}
	}
	// Jitter never pushes a delay past Max, even when Max equals Initial.
	p := Policy{Initial: time.Minute, Max: time.Minute}
	for range 1000 {
		if got := p.Backoff(0); got > time.Minute || got < 48*time.Second {
			t.Fatalf("Backoff(0) = %s, want within [48s, 1m]", got)
		}
	}
}

func TestBackoffConcurrent(t *testing.T) {
	p := Policy{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for n := range 200 {
				if d := p.Backoff(n % 10); d <= 0 {
					t.Errorf("Backoff(%d) = %s", n%10, d)
				}
			}
		})
	}
	wg.Wait()
}

func TestDelay(t *testing.T) {
	p := Policy{Jitter: -1}
	at := func(sec, frac float64) time.Time {
		return time.Unix(int64(sec), int64(frac*1e9))
	}
	now := at(1_700_000_100, 0.9)
	snooze := func(after time.Duration) error {
		return Snooze(after, "rate limited by WeChat Pay", errRateLimited)
	}
	tests := []struct {
		name string
		now  time.Time
		n    int
		err  error
		want time.Duration
	}{
		{"postpone to a whole second", at(1_700_000_100, 0), 0, PostponeUntil(at(1_700_000_105, 0), "early"), 5 * time.Second},
		{"postpone rounds up", at(1_700_000_100, 0), 0, PostponeUntil(at(1_700_000_104, 0.2), "early"), 5 * time.Second},
		// 4.6 s rounded up is 5 s, but now+5s = ...105.9 is stored as 105,
		// before Until: aim at 106.
		{"postpone survives truncation", now, 0, PostponeUntil(at(1_700_000_105, 0.5), "early"), 6 * time.Second},
		{"postpone ignores n", now, 7, PostponeUntil(at(1_700_000_105, 0.5), "early"), 6 * time.Second},
		{"postpone wrapped", now, 0, fmt.Errorf("order 42: %w", PostponeUntil(at(1_700_000_105, 0.5), "early")), 6 * time.Second},
		{"postpone in the past", now, 0, PostponeUntil(at(1_700_000_000, 0), "late"), time.Second},
		{"postpone now", now, 0, PostponeUntil(now, "now"), time.Second},
		{"postpone until is not capped at Max", at(1_700_000_000, 0), 0, PostponeUntil(at(1_700_000_000+7*86400, 0), "close_at"), 7 * 24 * time.Hour},
		// A zero Until is no floor: the short pause applies.
		{"postpone zero time", now, 5, PostponeUntil(time.Time{}, "zero"), 11 * time.Second},
		{"nil *Postpone", now, 0, (*Postpone)(nil), time.Second},
		{"snooze with hint", at(1_700_000_100, 0), 4, snooze(3 * time.Second), 3 * time.Second},
		{"snooze with fractional hint", at(1_700_000_100, 0), 4, snooze(2500 * time.Millisecond), 3 * time.Second},
		{"snooze hint survives truncation", now, 4, snooze(2500 * time.Millisecond), 4 * time.Second},
		{"snooze tiny hint", now, 4, snooze(time.Millisecond), time.Second},
		{"snooze hint capped at Max", at(1_700_000_100, 0), 4, snooze(24 * time.Hour), 10 * time.Minute},
		{"snooze without hint does not grow", now, 9, snooze(0), 11 * time.Second},
		{"snooze negative hint is no hint", now, 9, snooze(-time.Minute), 11 * time.Second},
		{"snooze wrapped", now, 9, fmt.Errorf("close: %w", snooze(0)), 11 * time.Second},
		// now is x.9 s: asynq would truncate now+80s to x+80, 0.9 s short
		// of the backoff, so the delay aims at the next whole second.
		{"failure", now, 3, errors.New("wechat: retryable: code=SYSTEMERROR"), 81 * time.Second},
		{"unclassified", now, 2, errors.New("boom"), 41 * time.Second},
		// A rate-limit error that the handler did not turn into a
		// Postpone is a plain failure: retry no longer reads WeChat errors.
		{"bare rate-limit error", now, 1, errRateLimited, 21 * time.Second},
		{"nil", now, 0, nil, 11 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := p.delay(tt.now, tt.n, tt.err); got != tt.want {
				t.Fatalf("delay(%v, %d, %v) = %s, want %s", tt.now, tt.n, tt.err, got, tt.want)
			}
		})
	}
}

// TestDelayFarFutureSaturates is the regression test for a target after
// about the year 2318: the rounding overflowed time.Duration and Delay
// returned 1 s, so a task parked "forever" ran every second instead.
func TestDelayFarFutureSaturates(t *testing.T) {
	now := time.Date(2026, 11, 22, 10, 0, 0, 500_000_000, time.UTC)
	p := Policy{}
	for _, until := range []time.Time{
		time.Date(2400, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2400, 1, 1, 0, 0, 0, 1, time.UTC),
		time.Unix(1<<62, 0),
		time.Unix(1<<62, 999_999_999),
		time.Unix(math.MaxInt64-62135596800-1, 999_999_999), // about the latest time.Time
		now.Add(MaxDelay - 500*time.Millisecond),
	} {
		for _, err := range []error{PostponeUntil(until, "far"), fmt.Errorf("wrapped: %w", PostponeUntil(until, "far"))} {
			got := p.delay(now, 0, err)
			if got != MaxDelay {
				t.Errorf("delay(until %v) = %s, want MaxDelay %s", until, got, MaxDelay)
			}
			if at := now.Add(got); at.Before(now.Add(200 * 365 * 24 * time.Hour)) {
				t.Errorf("delay(until %v) runs the task at %v, far too early", until, at)
			}
		}
	}
	if MaxDelay%time.Second != 0 || MaxDelay <= 0 || MaxDelay > time.Duration(math.MaxInt64) {
		t.Fatalf("MaxDelay = %d, want a positive whole number of seconds", MaxDelay)
	}
	// The far past stays at the 1 s floor.
	for _, until := range []time.Time{time.Time{}.Add(time.Nanosecond), time.Unix(-1<<62, 1)} {
		if got := untilDelay(now, until); got != time.Second {
			t.Errorf("untilDelay(%v) = %s, want 1s", until, got)
		}
	}
	// Just below the limit the exact arithmetic still holds.
	until := now.Add(MaxDelay - 2*time.Second)
	if got := untilDelay(now, until); got != MaxDelay-time.Second {
		t.Errorf("untilDelay(now + MaxDelay - 2s) = %s, want %s", got, MaxDelay-time.Second)
	}
}

func TestDelaySnoozeWithoutHintIsJittered(t *testing.T) {
	p := Policy{}
	err := Snooze(0, "rate limited", errRateLimited)
	for range 1000 {
		// Backoff(0) is within [8s, 12s]; rounding to whole seconds adds
		// less than one more.
		if got := p.Delay(12, err); got < 8*time.Second || got > 13*time.Second {
			t.Fatalf("Delay(12, snooze) = %s, want Backoff(0) rounded up, within [8s, 13s]", got)
		}
	}
}

// TestUntilDelayNeverEarly checks, over many random clocks, what asynq does
// with the delay: store now+delay truncated to a whole second, run then.
func TestUntilDelayNeverEarly(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	base := time.Unix(1_700_000_000, 0)
	for range 100_000 {
		now := base.Add(time.Duration(r.Int64N(int64(time.Hour))))
		until := now.Add(time.Duration(r.Int64N(int64(20*time.Second))) - 2*time.Second)
		d := untilDelay(now, until)
		if d < time.Second || d%time.Second != 0 {
			t.Fatalf("untilDelay(%v, %v) = %s, want a whole number of seconds >= 1s", now, until, d)
		}
		stored := time.Unix(now.Add(d).Unix(), 0)
		if stored.Before(until) {
			t.Fatalf("untilDelay(%v, %v) = %s: asynq would run the task at %v, before Until", now, until, d, stored)
		}
		if wait := until.Sub(now); wait > 0 && d > wait+2*time.Second {
			t.Fatalf("untilDelay(%v, %v) = %s, more than 2s beyond the %s needed", now, until, d, wait)
		}
	}
}

func TestIsFailure(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"postpone", PostponeUntil(time.Now(), "early"), false},
		{"postpone wrapped", fmt.Errorf("x: %w", PostponeUntil(time.Now(), "early")), false},
		{"snooze", Snooze(time.Second, "rate limited", errRateLimited), false},
		{"snooze wrapped", fmt.Errorf("x: %w", Snooze(0, "rate limited", errRateLimited)), false},
		{"plain error", errors.New("boom"), true},
		// Only the handler's decision counts, never the class of a raw
		// WeChat error.
		{"bare rate-limit error", errRateLimited, true},
	}
	for _, tt := range tests {
		if got := IsFailure(tt.err); got != tt.want {
			t.Errorf("%s: IsFailure(%v) = %v, want %v", tt.name, tt.err, got, tt.want)
		}
	}
}

func TestPostponeError(t *testing.T) {
	until := time.Date(2025, 3, 1, 18, 5, 0, 0, time.FixedZone("CST", 8*3600))
	err := PostponeUntil(until, "order created at 18:00:00+08:00, close allowed after 5m")
	want := "not yet due: order created at 18:00:00+08:00, close allowed after 5m, run again at 2025-03-01T10:05:00Z"
	if err.Error() != want {
		t.Fatalf("Error() = %q, want %q", err.Error(), want)
	}
	var pp *Postpone
	if !errors.As(err, &pp) || !pp.Until.Equal(until) {
		t.Fatalf("PostponeUntil returned %#v, want a *Postpone with Until %v", err, until)
	}
	if got := (*Postpone)(nil).Error(); got != "not yet due" {
		t.Fatalf("nil *Postpone: Error() = %q", got)
	}
}

func TestPostponeSnoozeError(t *testing.T) {
	err := Snooze(3*time.Second, "rate limited by WeChat Pay", errRateLimited)
	want := "postponed: rate limited by WeChat Pay, run again in 3s: " + errRateLimited.Error()
	if err.Error() != want {
		t.Fatalf("Error() = %q, want %q", err.Error(), want)
	}
	if !errors.Is(err, errRateLimited) {
		t.Fatal("Snooze does not unwrap to its cause")
	}
	if got := Snooze(0, "busy", nil).Error(); got != "postponed: busy, run again after a short pause" {
		t.Fatalf("Error() = %q", got)
	}
	if (*Postpone)(nil).Unwrap() != nil {
		t.Fatal("nil *Postpone unwraps to non-nil")
	}
}

// TestNoWeChatDependency keeps retry a policy package: it must not import
// the WeChat Pay client (directly or through another package).
func TestNoWeChatDependency(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("the go command is not on PATH: %v", err)
	}
	out, err := exec.Command(goTool, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, "github.com/wxclose/wxclose/") && dep != "github.com/wxclose/wxclose/retry" {
			t.Errorf("retry depends on %s; it must know only postponements and plain failures", dep)
		}
	}
}

func BenchmarkDelay(b *testing.B) {
	p := Policy{}
	cases := []struct {
		name string
		err  error
	}{
		{"failure", fmt.Errorf("close: %w", errors.New("wechat: retryable: code=SYSTEMERROR"))},
		{"snooze", Snooze(3*time.Second, "rate limited", errRateLimited)},
		{"postpone", PostponeUntil(time.Now().Add(time.Minute), "early")},
	}
	for _, c := range cases {
		err := c.err
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				n := 0
				for pb.Next() {
					_ = p.Delay(n%20, err)
					n++
				}
			})
		})
	}
}
