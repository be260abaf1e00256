package ratelimit

import (
	"context"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/wxclose/wxclose/internal/redistest"
)

// Every test runs against a private redis-server (redistest): the pacing is
// redis_rate's Lua script and the adaptive state two scripts of ours, so
// only a real Redis tests them.

const key = "1900000109"

func newLimiter(t *testing.T, srv *redistest.Server, opts Options) *Limiter {
	t.Helper()
	l, err := New(srv.Client(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestReserveSpacesSlotsAcrossProcesses: two limiters (two worker
// processes) share one Redis; every slot they hand out is exactly one
// interval after the previous one, in the order the calls asked. The
// check brackets Redis's clock by the local times around each call (same
// host clock), so it holds however slow the machine is.
func TestReserveSpacesSlotsAcrossProcesses(t *testing.T) {
	srv := redistest.Start(t)
	a, b := newLimiter(t, srv, Options{}), newLimiter(t, srv, Options{})
	const rate = 200.0
	interval := time.Duration(float64(time.Second) / rate)
	type slot struct {
		lo, hi time.Time
		wait   time.Duration
	}
	var slots []slot
	ctx := context.Background()
	for i := range 60 {
		l := a
		if i%2 == 1 {
			l = b
		}
		before := time.Now()
		s, err := l.Reserve(ctx, key, rate, time.Second)
		after := time.Now()
		if err != nil {
			t.Fatal(err)
		}
		if !s.Reserved {
			t.Fatalf("call %d: no slot within 1s at %v/s after %d calls", i, rate, i)
		}
		if s.Wait < 0 || s.Wait > time.Second {
			t.Fatalf("call %d: wait %s outside [0, 1s]", i, s.Wait)
		}
		slots = append(slots, slot{before.Add(s.Wait), after.Add(s.Wait), s.Wait})
	}
	for i := 1; i < len(slots); i++ {
		// slot i starts exactly one interval after slot i-1 unless the
		// queue was empty (then at once, later than that).
		minGap := slots[i].lo.Sub(slots[i-1].hi)
		maxGap := slots[i].hi.Sub(slots[i-1].lo)
		if maxGap < interval-time.Millisecond {
			t.Fatalf("slots %d and %d are at most %s apart, want at least %s", i-1, i, maxGap, interval)
		}
		if slots[i].wait > 0 && minGap > interval+time.Millisecond {
			t.Fatalf("slot %d waited %s yet starts at least %s after slot %d, want exactly %s", i, slots[i].wait, minGap, i-1, interval)
		}
	}
}

// TestReserveBeyondHorizonTakesNothing: a slot further away than maxWait
// is not taken, and the answer says when to ask again.
func TestReserveBeyondHorizonTakesNothing(t *testing.T) {
	srv := redistest.Start(t)
	l := newLimiter(t, srv, Options{})
	ctx := context.Background()
	const rate = 2.0 // one slot every 500 ms
	reserved, refused := 0, 0
	start := time.Now()
	for range 10 {
		s, err := l.Reserve(ctx, key, rate, 600*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if s.Reserved {
			reserved++
			if s.Wait > 600*time.Millisecond {
				t.Errorf("reserved a slot %s away, beyond maxWait", s.Wait)
			}
			continue
		}
		refused++
		if s.RetryAfter <= 0 || s.RetryAfter > time.Second {
			t.Errorf("refused with RetryAfter %s, want within (0, 1s]", s.RetryAfter)
		}
	}
	elapsed := time.Since(start)
	// Slots at 0 and 500 ms fit in the horizon, plus one per 500 ms the
	// loop took.
	if maxReserved := 2 + int(elapsed/(500*time.Millisecond)); reserved < 2 || reserved > maxReserved {
		t.Fatalf("reserved %d of 10 (loop took %s), want 2..%d", reserved, elapsed, maxReserved)
	}
	if refused == 0 {
		t.Fatal("nothing refused")
	}
}

// fakeClock is a local clock the test moves; Redis's clock still runs.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func near(got, want float64) bool { return math.Abs(got-want) < 0.5 }

// TestThrottledDecreasesOncePerOverload: the first throttled answer lowers
// the shared rate at once, for every process; answers to calls paced
// before that decrease, or sent before the old pace's slots are used up
// (the quiet period), change nothing; a throttled answer after it lowers
// the rate again; the rate never goes below MinFraction.
func TestThrottledDecreasesOncePerOverload(t *testing.T) {
	srv := redistest.Start(t)
	clk := &fakeClock{now: time.Now()}
	// The local clock stands still, so only Throttled's replies update
	// what each process knows; Refresh (part of the quiet period, on
	// Redis's clock) is short.
	opts := Options{Now: clk.Now, Refresh: time.Millisecond, MinFraction: 0.5}
	a, b := newLimiter(t, srv, opts), newLimiter(t, srv, opts)
	ctx := context.Background()
	const rate = 100.0

	sa, err := a.Reserve(ctx, key, rate, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := b.Reserve(ctx, key, rate, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if sa.Rate != rate || sb.Rate != rate {
		t.Fatalf("first slots paced at %v and %v, want the configured %v", sa.Rate, sb.Rate, rate)
	}
	if dec, err := a.Throttled(ctx, key, rate, sa); err != nil || !dec {
		t.Fatalf("first throttled answer: decreased=%t, %v; want a decrease", dec, err)
	}
	if got := a.Effective(key, rate); !near(got, 80) {
		t.Fatalf("effective after one decrease = %v, want 80", got)
	}
	// b's slot was paced before a's decrease: the same overload.
	if dec, err := b.Throttled(ctx, key, rate, sb); err != nil || dec {
		t.Fatalf("throttled answer to a slot paced before the decrease: decreased=%t, %v; want none", dec, err)
	}
	if got := b.Effective(key, rate); !near(got, 80) {
		t.Fatalf("b learned effective %v from the reply, want 80", got)
	}
	// Paced at the new rate, but throttled within the quiet period: the
	// old pace's calls still explain it.
	sb2, err := b.Reserve(ctx, key, rate, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !near(sb2.Rate, 80) {
		t.Fatalf("slot after the decrease paced at %v, want 80", sb2.Rate)
	}
	if dec, err := b.Throttled(ctx, key, rate, sb2); err != nil || dec {
		t.Fatalf("throttled within the quiet period: decreased=%t, %v; want none", dec, err)
	}
	// After the quiet period, a throttled answer lowers it again.
	decreaseAgain := func() {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			s, err := b.Reserve(ctx, key, rate, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			dec, err := b.Throttled(ctx, key, rate, s)
			if err != nil {
				t.Fatal(err)
			}
			if dec {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("the quiet period never ended")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	decreaseAgain()
	if got := b.Effective(key, rate); !near(got, 64) {
		t.Fatalf("effective after two decreases = %v, want 64", got)
	}
	st, err := a.Read(ctx, key, rate)
	if err != nil {
		t.Fatal(err)
	}
	if !near(st.Effective, 64) || !st.Throttled {
		t.Fatalf("Read = %+v, want effective 64, throttled", st)
	}
	// Floor: never below MinFraction × rate (50/s).
	decreaseAgain() // 51.2
	decreaseAgain() // 50, not 41
	if got := b.Effective(key, rate); !near(got, 50) {
		t.Fatalf("effective after four decreases = %v, want the floor 50", got)
	}
}

// TestEffectiveClimbsBackToTheConfiguredRate: after a decrease the rate
// climbs by Increase × rate per second and stops at the configured rate.
func TestEffectiveClimbsBackToTheConfiguredRate(t *testing.T) {
	srv := redistest.Start(t)
	clk := &fakeClock{now: time.Now()}
	l := newLimiter(t, srv, Options{Now: clk.Now, Refresh: time.Hour})
	ctx := context.Background()
	const rate = 100.0
	s, err := l.Reserve(ctx, key, rate, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Throttled(ctx, key, rate, s); err != nil {
		t.Fatal(err)
	}
	clk.advance(5 * time.Second) // +2/s for 5 s
	if got := l.Effective(key, rate); !near(got, 90) {
		t.Fatalf("effective 5s after the decrease = %v, want 90", got)
	}
	clk.advance(time.Minute)
	if got := l.Effective(key, rate); got != rate {
		t.Fatalf("effective a minute later = %v, want the configured %v", got, rate)
	}
	// A lower configured rate caps the effective one at once.
	if got := l.Effective(key, 20); got != 20 {
		t.Fatalf("effective with the configured rate lowered to 20 = %v", got)
	}
}

// TestRefreshSpreadsTheDecrease: a process that did not see the throttled
// answer learns the lower rate from Redis within its refresh interval.
func TestRefreshSpreadsTheDecrease(t *testing.T) {
	srv := redistest.Start(t)
	a := newLimiter(t, srv, Options{})
	b := newLimiter(t, srv, Options{Refresh: 10 * time.Millisecond})
	ctx := context.Background()
	const rate = 100.0
	if got := b.Effective(key, rate); got != rate {
		t.Fatalf("b before any decrease: %v", got)
	}
	s, err := a.Reserve(ctx, key, rate, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Throttled(ctx, key, rate, s); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for b.Effective(key, rate) > 85 {
		if time.Now().After(deadline) {
			t.Fatal("b never learned the decrease")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestKeysAreIndependent: one merchant's pace and decrease leave another's
// alone.
func TestKeysAreIndependent(t *testing.T) {
	srv := redistest.Start(t)
	l := newLimiter(t, srv, Options{Refresh: time.Hour})
	ctx := context.Background()
	s, err := l.Reserve(ctx, "1", 1, time.Second)
	if err != nil || !s.Reserved {
		t.Fatalf("first slot of merchant 1: %+v, %v", s, err)
	}
	if _, err := l.Throttled(ctx, "1", 1, s); err != nil {
		t.Fatal(err)
	}
	s2, err := l.Reserve(ctx, "2", 1, 0)
	if err != nil || !s2.Reserved || s2.Wait != 0 || s2.Rate != 1 {
		t.Fatalf("merchant 2 after merchant 1 used its slot: %+v, %v; want an immediate slot at the full rate", s2, err)
	}
}

func TestOptionsAndArguments(t *testing.T) {
	srv := redistest.Start(t)
	for _, o := range []Options{{Decrease: 1}, {Decrease: -0.5}, {Increase: 2}, {MinFraction: 1.5}, {Refresh: -1}} {
		if _, err := New(srv.Client(), o); err == nil {
			t.Errorf("New(%+v) accepted", o)
		}
	}
	l := newLimiter(t, srv, Options{})
	if _, err := l.Reserve(context.Background(), key, 0, time.Second); err == nil {
		t.Error("Reserve with rate 0 accepted")
	}
	if _, err := l.Throttled(context.Background(), key, math.NaN(), Slot{}); err == nil {
		t.Error("Throttled with rate NaN accepted")
	}
}
