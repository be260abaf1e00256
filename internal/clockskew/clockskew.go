// Package clockskew estimates how far this worker's clock is from its
// peers' (WeChat Pay, Redis), from the clock readings their answers carry.
//
// WeChat Pay refuses a close sooner than 5 minutes after the order's
// creation, by its own clock. The worker checks the 5-minute mark by its
// clock, so a worker running ahead of WeChat Pay calls early; the
// close margin (1 s by default) is the only cushion. The tracker measures the
// offset so the guard can add it and an alert can fire.
//
// # Method
//
// An exchange gives four readings: the local clock when the request left
// (sent) and when the answer arrived (received), and the peer's clock in the
// answer (peer), truncated to its resolution (WeChat Pay's timestamps are
// whole seconds, Redis TIME microseconds). The peer read its clock somewhere
// in between, so the offset θ = local − peer lies in
//
//	(sent − peer − resolution, received − peer]
//
// and the sample's estimate is the middle: (sent+received)/2 − (peer +
// resolution/2). One sample is off by up to half the round trip plus half
// the resolution; the tracker keeps the last Window samples per peer and
// reports their median, which a single odd answer (a proxy's Date header, a
// slow response) cannot move. The median of the samples' upper ends,
// received − peer, is also kept: every honest sample bounds θ from above, so
// it is a safe "at most this far ahead" for the 5-minute guard.
//
// The median only cancels the truncation error when the samples fall at
// different points of the peer's second. A busy worker gets thousands of
// answers a second: its last Window samples then span a few milliseconds,
// share one truncation error, and the median swings by up to ±0.5 s with
// the moment it is read (a worker 0.3 s ahead read anywhere from -0.2 s to
// +0.8 s at 5,000 answers/s). So the offset is the median of samples kept at
// least 0.618 × the resolution apart (the golden ratio's fractional part,
// which spreads successive phases evenly over the second at any traffic),
// about 9 s of WeChat Pay answers. The upper bound keeps using every sample:
// it is safe at any phase, and it must follow a clock that jumps ahead at
// once.
package clockskew

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Peers, used as the peer label of wxclose_clock_offset_seconds.
const (
	PeerWeChatPay = "wechatpay"
	PeerRedis     = "redis"
)

// Defaults for Options' zero values.
const (
	DefaultWindow       = 15
	DefaultMaxRoundTrip = 5 * time.Second
)

// WeChatResolution is the resolution of WeChat Pay's clock readings
// (Wechatpay-Timestamp and Date are whole seconds).
const WeChatResolution = time.Second

// RedisResolution is the resolution of Redis TIME.
const RedisResolution = time.Microsecond

// Options configures a Tracker. The zero value is ready to use.
type Options struct {
	// Window is the number of recent samples per peer an estimate is made
	// from. If zero, DefaultWindow.
	Window int
	// MaxRoundTrip drops samples whose round trip took longer: their
	// uncertainty (half the round trip) says nothing useful. If zero,
	// DefaultMaxRoundTrip.
	MaxRoundTrip time.Duration
}

// Sample is one exchange with a peer.
type Sample struct {
	// Sent and Received are the local clock when the request left and the
	// answer arrived.
	Sent, Received time.Time
	// Peer is the peer's clock reading in the answer, truncated to
	// Resolution.
	Peer       time.Time
	Resolution time.Duration
}

// Offset is the sample's estimate of local − peer: the middle of the
// interval the offset must lie in.
func (s Sample) Offset() time.Duration {
	mid := s.Sent.Add(s.Received.Sub(s.Sent) / 2)
	return mid.Sub(s.Peer.Add(s.Resolution / 2))
}

// AtMost is the largest local − peer consistent with the sample.
func (s Sample) AtMost() time.Duration { return s.Received.Sub(s.Peer) }

// Estimate is a peer's offset as estimated from recent samples. Positive
// means this worker's clock is ahead of the peer's.
type Estimate struct {
	// Offset is the median of the samples' estimates. From a Tracker: of
	// the last Window samples kept spreadFraction × resolution apart.
	Offset time.Duration
	// AtMost is the median of the samples' upper bounds: with a majority of
	// truthful samples, the worker is at most this far ahead of the peer.
	// From a Tracker: of the last Window samples.
	AtMost time.Duration
	// Samples is how many samples AtMost is made from.
	Samples int
}

// spreadFraction is the least time between two samples the Offset of a
// Tracker uses, as a fraction of their resolution (see the package
// documentation).
const spreadFraction = 0.6180339887

// estimate returns the estimate from samples, which must not be empty.
// offsets and bounds are scratch space of at least len(samples), so that
// the estimate kept up to date on every sample allocates nothing.
func estimate(samples []Sample, offsets, bounds []time.Duration) Estimate {
	return Estimate{Offset: medianOffset(samples, offsets), AtMost: medianAtMost(samples, bounds), Samples: len(samples)}
}

func medianOffset(samples []Sample, scratch []time.Duration) time.Duration {
	scratch = scratch[:len(samples)]
	for i, s := range samples {
		scratch[i] = s.Offset()
	}
	return median(scratch)
}

func medianAtMost(samples []Sample, scratch []time.Duration) time.Duration {
	scratch = scratch[:len(samples)]
	for i, s := range samples {
		scratch[i] = s.AtMost()
	}
	return median(scratch)
}

// median sorts d and returns its middle value (the mean of the two middle
// values for an even count).
func median(d []time.Duration) time.Duration {
	slices.Sort(d)
	n := len(d)
	if n%2 == 1 {
		return d[n/2]
	}
	return d[n/2-1] + (d[n/2]-d[n/2-1])/2
}

// Tracker collects samples per peer. It is safe for concurrent use; its
// methods only take a mutex and never block on I/O, so they may be called on
// the request path.
type Tracker struct {
	window       int
	maxRoundTrip time.Duration

	mu    sync.Mutex
	peers map[string]*ring
}

// ring holds the last samples of one peer and their estimate. The estimate
// is recomputed when a sample arrives rather than when it is read: the
// close guard reads it before every call, and a window of samples costs a
// sort, so reads must be a copy under the mutex.
type ring struct {
	recent window // every kept sample: AtMost
	spread window // samples spreadFraction × resolution apart: Offset
	// lastSpread is when the newest sample of spread arrived.
	lastSpread      time.Time
	estimate        Estimate
	offsets, bounds []time.Duration // scratch for estimate
}

// window is the last samples of a ring, oldest overwritten first.
type window struct {
	samples []Sample
	next    int
}

func (w *window) add(s Sample, size int) {
	if len(w.samples) < size {
		w.samples = append(w.samples, s)
		return
	}
	w.samples[w.next] = s
	w.next = (w.next + 1) % size
}

// spreads reports whether s arrived far enough from the newest sample of
// spread to join it. Concurrent answers reach Observe slightly out of
// order, so a sample received a little before the newest does not join
// either. Received times carry Go's monotonic clock reading, so a stepped
// wall clock does not matter; a sample that seems to precede the newest by
// more than the spacing (a stepped clock without monotonic readings) joins,
// so that a step never freezes the estimate.
func (r *ring) spreads(s Sample) bool {
	if len(r.spread.samples) == 0 {
		return true
	}
	gap := s.Received.Sub(r.lastSpread)
	spacing := time.Duration(spreadFraction * float64(s.Resolution))
	return gap >= spacing || gap <= -spacing
}

// New returns a Tracker with no samples.
func New(opts Options) *Tracker {
	t := &Tracker{window: opts.Window, maxRoundTrip: opts.MaxRoundTrip, peers: map[string]*ring{}}
	if t.window <= 0 {
		t.window = DefaultWindow
	}
	if t.maxRoundTrip <= 0 {
		t.maxRoundTrip = DefaultMaxRoundTrip
	}
	return t
}

// Observe records one exchange with peer. A sample whose round trip is
// negative (the local clock stepped back meanwhile) or longer than
// MaxRoundTrip, or that has no peer reading, is dropped; Observe reports
// whether it was kept.
func (t *Tracker) Observe(peer string, s Sample) bool {
	rtt := s.Received.Sub(s.Sent)
	if rtt < 0 || rtt > t.maxRoundTrip || s.Peer.IsZero() || s.Resolution < 0 {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.peers[peer]
	if r == nil {
		r = &ring{offsets: make([]time.Duration, t.window), bounds: make([]time.Duration, t.window)}
		t.peers[peer] = r
	}
	r.recent.add(s, t.window)
	r.estimate.AtMost, r.estimate.Samples = medianAtMost(r.recent.samples, r.bounds), len(r.recent.samples)
	if r.spreads(s) {
		r.spread.add(s, t.window)
		r.lastSpread = s.Received
		r.estimate.Offset = medianOffset(r.spread.samples, r.offsets)
	}
	return true
}

// Estimate returns peer's current estimate, and false before its first
// sample.
func (t *Tracker) Estimate(peer string) (Estimate, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.peers[peer]
	if r == nil {
		return Estimate{}, false
	}
	return r.estimate, true
}

// Offsets returns the estimated offset (local − peer) of every peer that
// has samples, for the wxclose_clock_offset_seconds gauge.
func (t *Tracker) Offsets() map[string]time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]time.Duration, len(t.peers))
	for p, r := range t.peers {
		out[p] = r.estimate.Offset
	}
	return out
}

// WeChatHook is meant for wechat.Hooks.ServerClock.
func (t *Tracker) WeChatHook(sent, received, server time.Time) {
	t.Observe(PeerWeChatPay, Sample{Sent: sent, Received: received, Peer: server, Resolution: WeChatResolution})
}

// WeChatAhead is meant for closehandler.Config.ClockAhead: how far this
// worker's clock runs ahead of WeChat Pay's at most (Estimate.AtMost), or 0
// when it is not ahead or nothing is known yet. The upper bound rather than
// the median is used because the guard must not call early: erring late by
// a fraction of a second is harmless.
func (t *Tracker) WeChatAhead() time.Duration {
	e, ok := t.Estimate(PeerWeChatPay)
	if !ok {
		return 0
	}
	return max(e.AtMost, 0)
}

// ProbeRedis asks Redis for its clock (TIME) once and records the sample.
// The caller bounds it with ctx.
func (t *Tracker) ProbeRedis(ctx context.Context, rdb redis.Cmdable) error {
	sent := time.Now()
	peer, err := rdb.Time(ctx).Result()
	received := time.Now()
	if err != nil {
		return fmt.Errorf("redis TIME: %w", err)
	}
	t.Observe(PeerRedis, Sample{Sent: sent, Received: received, Peer: peer, Resolution: RedisResolution})
	return nil
}
