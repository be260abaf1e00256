// Package ratelimit paces WeChat Pay calls per merchant across every worker
// process that shares a Redis, and lowers the pace when WeChat Pay answers
// RATE_LIMITED anyway.
//
// # Pacing: GCRA with reservations, in one Redis call
//
// The pace is github.com/go-redis/redis_rate's GCRA (one Lua call that reads
// Redis's clock, so workers' clocks do not matter). redis_rate answers
// "allowed now or not", which under a binding limit would have every
// waiting close poll Redis; Reserve instead uses the library's burst as a
// reservation horizon. With the emission interval T = 1/rate and burst
// B = ⌊maxWait/T⌋+1, an allowed call advances the shared theoretical
// arrival time by T and is told (ResetAfter − T) how long after now its own
// slot starts, at most maxWait; the caller sleeps until then. Calls are thus
// spaced T apart across the fleet, each takes exactly one Redis round trip
// whether or not the limit binds, and slots are handed out in the order the
// calls asked for them (first come, first served), so closes leave in the
// order asynq dequeued them. A call whose slot would start later than
// maxWait reserves nothing and learns when to ask again.
//
// # Adapting: multiplicative decrease, additive increase, shared in Redis
//
// The configured rate is an upper bound. When WeChat Pay answers
// RATE_LIMITED anyway (its real limit is lower, or shared with the
// merchant's other systems), Throttled lowers the merchant's effective rate
// at once to Decrease × the current one, in Redis, so every worker sees it;
// it then climbs back by Increase × the configured rate per second until
// it reaches the configured rate again. Redis stores only the rate after
// the last decrease and when it happened (Redis time); each process
// computes the climb from those two numbers, so nothing is written while
// the rate recovers.
//
// One overload lowers the rate once, not once per RATE_LIMITED answer it
// causes: a decrease opens a quiet period that lasts until every slot
// already handed out at the old pace has been used (the GCRA's theoretical
// arrival time at the decrease), plus Refresh for the processes that have
// not read the new rate yet, plus a margin for the calls on the wire.
// Throttled answers within it, and answers to calls paced before the
// latest decrease, are explained by the old pace and change nothing.
//
// Each process re-reads a merchant's shared state at most every Refresh
// (250 ms by default) while it uses the merchant, off the close's path, so
// the hot path stays one Redis call.
//
// Both keys of a merchant carry its id as a Redis Cluster hash tag
// ("{1900000109}"), so the script that reads both stays on one node.
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
)

// Defaults for Options' zero values.
const (
	DefaultPrefix      = "wxclose:ratelimit:"
	DefaultDecrease    = 0.8
	DefaultIncrease    = 0.02
	DefaultMinFraction = 0.05
	DefaultRefresh     = 250 * time.Millisecond
)

// Options configures a Limiter. The zero value is ready to use.
type Options struct {
	// Prefix starts every Redis key the limiter writes (redis_rate adds its
	// own "rate:" before the pacing key). If empty, DefaultPrefix.
	Prefix string
	// Decrease multiplies the effective rate when WeChat Pay throttles a
	// call (0 < Decrease < 1). If zero, 0.8: a fifth less at once.
	Decrease float64
	// Increase is how fast the effective rate climbs back, as a fraction
	// of the configured rate per second. If zero, 0.02: from 80 % back to
	// 100 % in 10 s.
	Increase float64
	// MinFraction bounds the decrease: the effective rate never goes below
	// MinFraction × the configured rate. If zero, 0.05.
	MinFraction float64
	// Refresh is how often a process re-reads a merchant's shared
	// effective rate while it uses it. If zero, 250 ms.
	Refresh time.Duration
	// Now is the local clock, used only to age the shared state between
	// reads. If nil, time.Now.
	Now func() time.Time
}

// Limiter paces calls per key (a merchant id). It is safe for concurrent
// use; its hot path takes no lock.
type Limiter struct {
	rdb    redis.UniversalClient
	gcra   *redis_rate.Limiter
	opts   Options
	states sync.Map // key → *keyState
}

// New returns a Limiter on rdb, which it does not close.
func New(rdb redis.UniversalClient, opts Options) (*Limiter, error) {
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if opts.Decrease == 0 {
		opts.Decrease = DefaultDecrease
	}
	if opts.Increase == 0 {
		opts.Increase = DefaultIncrease
	}
	if opts.MinFraction == 0 {
		opts.MinFraction = DefaultMinFraction
	}
	if opts.Refresh == 0 {
		opts.Refresh = DefaultRefresh
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	switch {
	case !(opts.Decrease > 0 && opts.Decrease < 1):
		return nil, fmt.Errorf("ratelimit: Options.Decrease %v must be between 0 and 1", opts.Decrease)
	case !(opts.Increase > 0 && opts.Increase <= 1):
		return nil, fmt.Errorf("ratelimit: Options.Increase %v must be above 0 and at most 1", opts.Increase)
	case !(opts.MinFraction > 0 && opts.MinFraction <= 1):
		return nil, fmt.Errorf("ratelimit: Options.MinFraction %v must be above 0 and at most 1", opts.MinFraction)
	case opts.Refresh < 0:
		return nil, errors.New("ratelimit: Options.Refresh must not be negative")
	}
	return &Limiter{rdb: rdb, gcra: redis_rate.NewLimiter(rdb), opts: opts}, nil
}

// Slot is the answer to Reserve.
type Slot struct {
	// Reserved is true when a slot was taken; the call may be made after
	// Wait. When false nothing was taken, and a slot within maxWait is
	// expected to be free after RetryAfter.
	Reserved   bool
	Wait       time.Duration
	RetryAfter time.Duration
	// Rate is the effective rate (calls per second) the slot was paced at.
	Rate float64
	// epoch is the decrease the slot was paced under (see Throttled).
	epoch int64
}

// Reserve asks for key's next slot at rate calls per second (the configured
// rate; the effective one may be lower). When the slot starts within
// maxWait it is taken and Slot.Wait says how long to sleep first;
// otherwise nothing is taken and Slot.RetryAfter says when to ask again.
// It costs one Redis round trip. rate must be positive.
func (l *Limiter) Reserve(ctx context.Context, key string, rate float64, maxWait time.Duration) (Slot, error) {
	if !(rate > 0) {
		return Slot{}, fmt.Errorf("ratelimit: rate %v must be positive", rate)
	}
	st := l.state(key)
	now := l.opts.Now()
	l.maybeRefresh(st, key, now)
	eff, epoch := st.effective(now, rate, l.opts.Increase)
	interval := time.Duration(float64(time.Second) / eff)
	if interval <= 0 {
		interval = 1
	}
	burst := 1
	if maxWait > 0 {
		burst = int(min(maxWait/interval, math.MaxInt32-1)) + 1
	}
	res, err := l.gcra.Allow(ctx, st.paceKey, redis_rate.Limit{Rate: 1, Period: interval, Burst: burst})
	if err != nil {
		return Slot{}, fmt.Errorf("ratelimit: reserve a slot: %w", err)
	}
	s := Slot{Rate: eff, epoch: epoch}
	if res.Allowed == 0 {
		// Come back when the slots handed out so far are used (ResetAfter
		// runs to the last of them), rather than as soon as one more fits
		// in the horizon: a close postponed that long finds room, instead
		// of churning through the queue every few milliseconds.
		s.RetryAfter = max(res.ResetAfter, res.RetryAfter, 0)
		return s, nil
	}
	// ResetAfter runs to the end of this call's slot; it starts one
	// interval earlier.
	s.Reserved, s.Wait = true, max(res.ResetAfter-interval, 0)
	return s, nil
}

// Throttled reports that WeChat Pay answered RATE_LIMITED to a call made in
// slot s of key, configured at rate. Unless the fleet has already lowered
// the rate since s was reserved, it lowers the shared effective rate to
// Options.Decrease times the current one (not below MinFraction × rate),
// and reports whether it did. The new state is visible to this process at
// once and to the others at their next refresh.
func (l *Limiter) Throttled(ctx context.Context, key string, rate float64, s Slot) (bool, error) {
	if !(rate > 0) {
		return false, fmt.Errorf("ratelimit: rate %v must be positive", rate)
	}
	st := l.state(key)
	sentAt := l.opts.Now()
	grace := l.opts.Refresh + quietMargin
	v, err := decreaseScript.Run(ctx, l.rdb, []string{l.stateKey(key), "rate:" + l.paceKey(key)},
		s.epoch, l.opts.Decrease, rate, l.opts.Increase*rate, l.opts.MinFraction*rate, grace.Milliseconds()).Result()
	if err != nil {
		return false, fmt.Errorf("ratelimit: lower the rate: %w", err)
	}
	sh, decreased, err := parseShared(v, sentAt)
	if err != nil {
		return false, err
	}
	st.shared.Store(sh)
	st.refreshed.Store(sentAt.UnixNano())
	return decreased, nil
}

// Effective returns key's effective rate as this process knows it (no
// Redis call; a refresh is started in the background when the knowledge is
// older than Options.Refresh). rate is the configured rate.
func (l *Limiter) Effective(key string, rate float64) float64 {
	if !(rate > 0) {
		return 0
	}
	st := l.state(key)
	now := l.opts.Now()
	l.maybeRefresh(st, key, now)
	eff, _ := st.effective(now, rate, l.opts.Increase)
	return eff
}

// State is a merchant's shared pacing state, as Read returns it.
type State struct {
	// Effective is the rate in force now, in calls per second.
	Effective float64
	// Throttled is true when WeChat Pay throttled the merchant recently
	// enough that the rate has not climbed back yet; Since is how long ago
	// the last decrease was.
	Throttled bool
	Since     time.Duration
}

// Read returns key's shared state from Redis, for reports (enqueue
// merchants). rate is the configured rate.
func (l *Limiter) Read(ctx context.Context, key string, rate float64) (State, error) {
	if !(rate > 0) {
		return State{}, fmt.Errorf("ratelimit: rate %v must be positive", rate)
	}
	now := l.opts.Now()
	v, err := readScript.Run(ctx, l.rdb, []string{l.stateKey(key)}).Result()
	if err != nil {
		return State{}, fmt.Errorf("ratelimit: read the shared rate: %w", err)
	}
	sh, _, err := parseShared(v, now)
	if err != nil {
		return State{}, err
	}
	eff, _ := sh.effective(now, rate, l.opts.Increase)
	st := State{Effective: eff}
	if sh.epoch != 0 && eff < rate {
		st.Throttled, st.Since = true, sh.age
	}
	return st, nil
}

// quietMargin is added to a decrease's quiet period for calls on the wire
// (and clocks between Redis and its clients).
const quietMargin = 100 * time.Millisecond

// paceKey is the GCRA's key (redis_rate prefixes "rate:"), stateKey the
// adaptive state's; both hash-tagged by key.
func (l *Limiter) paceKey(key string) string  { return l.opts.Prefix + "{" + key + "}" }
func (l *Limiter) stateKey(key string) string { return l.opts.Prefix + "{" + key + "}:aimd" }

// keyState is what a process knows about one key.
type keyState struct {
	paceKey    string // built once: Reserve runs for every close
	shared     atomic.Pointer[shared]
	refreshed  atomic.Int64 // local UnixNano of the last read; 0: never
	refreshing atomic.Bool
}

// shared is the state Redis holds for a key: the rate right after the
// last decrease (floor), that decrease's time (epoch, ms since 2017 on
// Redis's clock; 0: never), and how long ago it was (age) at the local
// instant at.
type shared struct {
	floor float64
	epoch int64
	age   time.Duration
	at    time.Time
}

func (sh *shared) effective(now time.Time, rate, increase float64) (float64, int64) {
	if sh == nil || sh.epoch == 0 {
		return rate, 0
	}
	age := sh.age + now.Sub(sh.at)
	return min(rate, sh.floor+increase*rate*max(age, 0).Seconds()), sh.epoch
}

func (st *keyState) effective(now time.Time, rate, increase float64) (float64, int64) {
	return st.shared.Load().effective(now, rate, increase)
}

func (l *Limiter) state(key string) *keyState {
	if v, ok := l.states.Load(key); ok {
		return v.(*keyState)
	}
	v, _ := l.states.LoadOrStore(key, &keyState{paceKey: l.paceKey(key)})
	return v.(*keyState)
}

// maybeRefresh re-reads key's shared state in the background when this
// process's copy is older than Options.Refresh, one read at a time.
func (l *Limiter) maybeRefresh(st *keyState, key string, now time.Time) {
	if now.UnixNano()-st.refreshed.Load() < int64(l.opts.Refresh) || !st.refreshing.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer st.refreshing.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		sentAt := l.opts.Now()
		v, err := readScript.Run(ctx, l.rdb, []string{l.stateKey(key)}).Result()
		if err != nil {
			return // keep what is known; the next use tries again
		}
		if sh, _, err := parseShared(v, sentAt); err == nil {
			st.shared.Store(sh)
			st.refreshed.Store(sentAt.UnixNano())
		}
	}()
}

// parseShared reads {floor, age_ms, epoch_ms, decreased} as both scripts
// return it.
func parseShared(v any, at time.Time) (*shared, bool, error) {
	vals, ok := v.([]any)
	if !ok || len(vals) != 4 {
		return nil, false, fmt.Errorf("ratelimit: unexpected script reply %T", v)
	}
	sh := &shared{at: at}
	if s, _ := vals[0].(string); s != "" {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, false, fmt.Errorf("ratelimit: unexpected floor %q", s)
		}
		sh.floor = f
	}
	age, _ := vals[1].(int64)
	sh.epoch, _ = vals[2].(int64)
	decreased, _ := vals[3].(int64)
	sh.age = time.Duration(age) * time.Millisecond
	return sh, decreased == 1, nil
}

// The shared state is a hash {floor, epoch}: the effective rate right after
// the last decrease and when it was made, in milliseconds since 2017-01-01
// on Redis's clock (as redis_rate counts, to stay exact in a double). It
// expires a minute after the rate has climbed back, so idle merchants
// leave nothing behind. Both scripts reply {floor, age_ms, epoch_ms,
// decreased}.
const nowMS = `
local t = redis.call("TIME")
local now = (tonumber(t[1]) - 1483228800) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

var readScript = redis.NewScript(`
redis.replicate_commands()
` + nowMS + `
local h = redis.call("HMGET", KEYS[1], "floor", "epoch")
local epoch = tonumber(h[2]) or 0
if not h[1] or epoch == 0 then
  return {"", 0, 0, 0}
end
return {h[1], now - epoch, epoch, 0}
`)

// KEYS: the state, the GCRA's key. ARGV: caller's epoch, decrease factor,
// configured rate, increase per second (absolute), minimum rate, grace
// (ms) added to the quiet period.
var decreaseScript = redis.NewScript(`
redis.replicate_commands()
` + nowMS + `
local h = redis.call("HMGET", KEYS[1], "floor", "epoch", "quiet")
local epoch = tonumber(h[2]) or 0
local quiet = tonumber(h[3]) or 0
local conf = tonumber(ARGV[3])
local inc = tonumber(ARGV[4])
if h[1] and (tonumber(ARGV[1]) < epoch or now < quiet) then
  -- paced before the latest decrease, or sent while the old pace's slots
  -- were still being used: that decrease already explains it
  return {h[1], now - epoch, epoch, 0}
end
local cur = conf
if h[1] then
  cur = math.min(conf, tonumber(h[1]) + inc * (now - epoch) / 1000)
end
local floor = math.max(tonumber(ARGV[5]), cur * tonumber(ARGV[2]))
if now <= epoch then
  now = epoch + 1 -- each decrease is a new generation, even within a millisecond
end
local fs = tostring(floor)
-- the quiet period: until the last slot handed out at the old pace, plus
-- the grace for processes that have not read the new rate yet
local tat = tonumber(redis.call("GET", KEYS[2]) or "0") or 0
quiet = math.max(now, math.ceil(tat * 1000)) + tonumber(ARGV[6])
redis.call("HSET", KEYS[1], "floor", fs, "epoch", now, "quiet", quiet)
redis.call("EXPIRE", KEYS[1], math.ceil((conf - floor) / inc) + 60)
return {fs, 0, now, 1}
`)
