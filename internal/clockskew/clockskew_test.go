package clockskew

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/wxclose/wxclose/internal/redistest"
)

var t0 = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

// at builds a whole-second WeChat Pay sample: the request left at sent
// (relative to t0), took rtt, and the peer's clock read peer (relative to
// t0, truncated to whole seconds as WeChat Pay sends it).
func at(sent, rtt, peer time.Duration) Sample {
	return Sample{
		Sent: t0.Add(sent), Received: t0.Add(sent + rtt),
		Peer: t0.Add(peer).Truncate(time.Second), Resolution: time.Second,
	}
}

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

func TestSampleBounds(t *testing.T) {
	tests := []struct {
		name           string
		s              Sample
		offset, atMost time.Duration
	}{
		// The peer read 10:00:00.xxx while we were between .200 and .400:
		// the offset lies in (-0.8 s, 0.4 s]; the middle is -0.2 s.
		{"in sync, whole seconds", at(ms(200), ms(200), ms(300)), ms(-200), ms(400)},
		// Worker 3 s ahead: our 10:00:03.5 is the peer's 10:00:00.5.
		{"worker ahead", at(3*time.Second+ms(450), ms(100), ms(500)), 3 * time.Second, ms(3550)},
		// Worker 2 s behind.
		{"worker behind", at(ms(-1550), ms(100), ms(500)), ms(-2000), ms(-1450)},
		{"microsecond peer", Sample{Sent: t0, Received: t0.Add(ms(2)), Peer: t0.Add(ms(1)), Resolution: time.Microsecond},
			-time.Microsecond / 2, ms(1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.s.Offset(); got != tt.offset {
				t.Errorf("Offset = %v, want %v", got, tt.offset)
			}
			if got := tt.s.AtMost(); got != tt.atMost {
				t.Errorf("AtMost = %v, want %v", got, tt.atMost)
			}
		})
	}
}

func TestEstimate(t *testing.T) {
	tests := []struct {
		name    string
		samples []Sample
		want    Estimate
	}{
		{"one sample", []Sample{at(ms(200), ms(200), ms(300))}, Estimate{Offset: ms(-200), AtMost: ms(400), Samples: 1}},
		{
			// The worker is 1.3 s ahead; the peer's sub-second phase varies
			// from call to call, so single samples scatter by ±0.5 s and the
			// median recovers the offset within 0.1 s.
			"true offset 1.3 s, phases spread",
			[]Sample{
				at(1300*time.Millisecond+ms(0), ms(100), ms(50)),
				at(1300*time.Millisecond+ms(200), ms(100), ms(250)),
				at(1300*time.Millisecond+ms(400), ms(100), ms(450)),
				at(1300*time.Millisecond+ms(600), ms(100), ms(650)),
				at(1300*time.Millisecond+ms(800), ms(100), ms(850)),
			},
			Estimate{Offset: ms(1250), AtMost: ms(1800), Samples: 5},
		},
		{
			// A proxy's Date header 40 s off and a slow answer do not move
			// the median.
			"outliers",
			[]Sample{
				at(ms(1500), ms(100), ms(550)),
				at(ms(1500), ms(100), ms(550)+40*time.Second),
				at(ms(1500), ms(100), ms(550)),
				at(ms(1500), 4*time.Second, ms(550)),
				at(ms(1500), ms(100), ms(550)),
			},
			Estimate{Offset: ms(1050), AtMost: ms(1600), Samples: 5},
		},
		{
			"even count: mean of the middle two",
			[]Sample{at(0, 0, ms(-1000)), at(0, 0, 0)},
			Estimate{Offset: 0, AtMost: ms(500), Samples: 2},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := estimate(tt.samples, make([]time.Duration, len(tt.samples)), make([]time.Duration, len(tt.samples))); got != tt.want {
				t.Errorf("estimate = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestTrackerKeepsRecentSamples(t *testing.T) {
	tr := New(Options{Window: 3})
	if _, ok := tr.Estimate(PeerWeChatPay); ok {
		t.Fatal("estimate before any sample")
	}
	if tr.WeChatAhead() != 0 {
		t.Fatal("WeChatAhead before any sample")
	}
	// Three answers a second apart 10 s behind, then three 2 s ahead: the
	// window forgets the old ones.
	for i := range 3 {
		sec := time.Duration(i) * time.Second
		tr.WeChatHook(t0.Add(sec), t0.Add(sec+ms(100)), t0.Add(sec+10*time.Second))
	}
	if ahead := tr.WeChatAhead(); ahead != 0 {
		t.Fatalf("WeChatAhead = %v with the worker behind, want 0", ahead)
	}
	for i := range 3 {
		sec := time.Duration(3+i) * time.Second
		tr.WeChatHook(t0.Add(sec+ms(2450)), t0.Add(sec+ms(2550)), t0.Add(sec))
	}
	e, _ := tr.Estimate(PeerWeChatPay)
	if e.Offset != 2*time.Second || e.Samples != 3 {
		t.Fatalf("Estimate = %+v, want offset 2s from 3 samples", e)
	}
	if ahead := tr.WeChatAhead(); ahead != ms(2550) {
		t.Fatalf("WeChatAhead = %v, want the upper bound 2.55s", ahead)
	}
	if got := tr.Offsets(); len(got) != 1 || got[PeerWeChatPay] != 2*time.Second {
		t.Fatalf("Offsets = %v", got)
	}
}

// TestOffsetOfABusyWorker: thousands of answers a second all carry the same
// whole second of WeChat Pay's clock. The exported offset must still be
// close to the truth whenever it is read, and the guard's upper bound must
// never fall below it.
func TestOffsetOfABusyWorker(t *testing.T) {
	for _, theta := range []time.Duration{ms(300), ms(-700), 2 * time.Second} {
		tr := New(Options{})
		base := time.Unix(1_800_000_000, 0)
		var worst time.Duration
		// 5,000 answers a second for 30 s, each round trip 2 ms; WeChat Pay
		// reads its clock 1 ms into the request. Concurrent answers reach
		// the tracker out of order: each pair is observed swapped.
		for i := range 150_000 {
			sent := base.Add(time.Duration(i^1) * 200 * time.Microsecond)
			peer := sent.Add(ms(1)).Truncate(time.Second)
			tr.WeChatHook(sent.Add(theta), sent.Add(ms(2)+theta), peer)
			e, _ := tr.Estimate(PeerWeChatPay)
			if e.AtMost < theta {
				t.Fatalf("offset %v: AtMost %v below the true offset after %d answers", theta, e.AtMost, i+1)
			}
			if i >= 50_000 { // after 10 s, when the spread window is full
				worst = max(worst, e.Offset-theta, theta-e.Offset)
			}
		}
		// 15 samples spread evenly over the second: about 1/15 s apart.
		if worst > ms(100) {
			t.Errorf("offset %v: the estimate strayed %v from it", theta, worst)
		}
	}
}

// TestClockJumpReachesTheGuardAtOnce: the guard's bound uses every sample,
// so a clock that jumps ahead while the worker is busy delays the next
// closes within a window of answers, not seconds.
func TestClockJumpReachesTheGuardAtOnce(t *testing.T) {
	tr := New(Options{})
	base := time.Unix(1_800_000_000, 0)
	answer := func(i int, theta time.Duration) {
		sent := base.Add(time.Duration(i) * 200 * time.Microsecond)
		tr.WeChatHook(sent.Add(theta), sent.Add(ms(2)+theta), sent.Add(ms(1)).Truncate(time.Second))
	}
	for i := range 10_000 {
		answer(i, 0)
	}
	for i := 10_000; i < 10_000+DefaultWindow; i++ {
		answer(i, 3*time.Second)
	}
	if ahead := tr.WeChatAhead(); ahead < 3*time.Second {
		t.Fatalf("WeChatAhead = %v a window of answers after a 3 s jump, want at least 3s", ahead)
	}
}

// TestSpreadSpacing: which samples the offset estimate takes.
func TestSpreadSpacing(t *testing.T) {
	sample := func(received time.Duration) Sample {
		return Sample{Sent: t0.Add(received - ms(1)), Received: t0.Add(received), Peer: t0, Resolution: time.Second}
	}
	tests := []struct {
		name     string
		received []time.Duration // in order; the last one is judged
		joins    bool
	}{
		{"the first sample", []time.Duration{0}, true},
		{"too soon", []time.Duration{0, ms(617)}, false},
		{"0.618 s later", []time.Duration{0, ms(619)}, true},
		{"measured from the last one that joined", []time.Duration{0, ms(400), ms(619)}, true},
		{"received a little before the newest (concurrent answers)", []time.Duration{0, ms(700), ms(690)}, false},
		{"a clock stepped back", []time.Duration{time.Hour, ms(5)}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &ring{offsets: make([]time.Duration, 4), bounds: make([]time.Duration, 4)}
			var joined bool
			for _, rec := range tt.received {
				s := sample(rec)
				if joined = r.spreads(s); joined {
					r.spread.add(s, 4)
					r.lastSpread = s.Received
				}
			}
			if joined != tt.joins {
				t.Errorf("joined = %v, want %v", joined, tt.joins)
			}
		})
	}
}

func TestTrackerDropsUselessSamples(t *testing.T) {
	tr := New(Options{MaxRoundTrip: time.Second})
	tests := []struct {
		name string
		s    Sample
		keep bool
	}{
		{"fine", at(0, ms(300), 0), true},
		{"clock stepped back mid-request", Sample{Sent: t0, Received: t0.Add(-ms(1)), Peer: t0, Resolution: time.Second}, false},
		{"round trip too long", at(0, 2*time.Second, 0), false},
		{"no peer reading", Sample{Sent: t0, Received: t0}, false},
	}
	for _, tt := range tests {
		if got := tr.Observe(PeerWeChatPay, tt.s); got != tt.keep {
			t.Errorf("%s: Observe = %v, want %v", tt.name, got, tt.keep)
		}
	}
	if e, _ := tr.Estimate(PeerWeChatPay); e.Samples != 1 {
		t.Fatalf("Samples = %d, want 1", e.Samples)
	}
}

func TestTrackerConcurrentUse(t *testing.T) {
	tr := New(Options{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for j := range 200 {
				tr.WeChatHook(t0, t0.Add(ms(10)), t0)
				if j%10 == 0 {
					_ = tr.Offsets()
					_ = tr.WeChatAhead()
				}
			}
		})
	}
	wg.Wait()
	if e, _ := tr.Estimate(PeerWeChatPay); e.Samples != DefaultWindow {
		t.Fatalf("Samples = %d, want %d", e.Samples, DefaultWindow)
	}
}

// TestProbeRedis reads a real Redis's clock. Redis runs on this machine, so
// the true offset is zero and must lie inside the sample's bounds.
func TestProbeRedis(t *testing.T) {
	srv := redistest.Start(t)
	tr := New(Options{Window: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := tr.ProbeRedis(ctx, srv.Client()); err != nil {
		t.Fatal(err)
	}
	e, ok := tr.Estimate(PeerRedis)
	if !ok {
		t.Fatal("no Redis sample")
	}
	lower := 2*e.Offset - e.AtMost - RedisResolution // the sample's lower bound
	if lower > 0 || e.AtMost < 0 {
		t.Fatalf("offset bounds (%v, %v] exclude zero on one machine", lower, e.AtMost)
	}
}
