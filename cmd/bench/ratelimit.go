package main

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/hibiken/asynq"

	"github.com/wxclose/wxclose/tasks"
	"github.com/wxclose/wxclose/wechat/sandbox"
)

// The ratelimit section measures issue 9's figures for the rate limit
// shared by the fleet (internal/ratelimit):
//
//   - its cost on the hot path when it does not bind: v3 closes/s of one
//     worker with WXCLOSE_RATE_LIMIT=100000 (far above what it reaches, so
//     every close takes its slot at once: one Redis round trip) over the
//     same run with WXCLOSE_RATE_LIMIT=off;
//   - a burst of -ratelimit-orders closes due in one second for one
//     merchant limited to -ratelimit-rate R, two worker processes, the
//     sandbox enforcing R: drain rate, RATE_LIMITED answers, retries spent,
//     early calls;
//   - the same burst with the sandbox enforcing only -ratelimit-low: the
//     effective rate after the first 10 s, the share of RATE_LIMITED
//     answers, every order closed, no retry spent.
//
//	go run ./cmd/bench -only ratelimit                                  # 30,000 closes, R=500/s; sandbox 500/s, then 300/s
//	go run ./cmd/bench -only ratelimit -ratelimit-orders 3000 -ratelimit-rate 100 -ratelimit-low 60

// measureRateLimit runs the three measurements, each on an empty Redis.
func (b *bench) measureRateLimit(ctx context.Context) error {
	if err := b.rateLimitCost(ctx); err != nil {
		return err
	}
	for _, enforce := range []int{b.o.rlRate, b.o.rlLow} {
		if err := b.redis.reset(ctx); err != nil {
			return err
		}
		b.producer = tasks.NewProducerFromRedisClient(b.redis.rdb, tasks.ProducerConfig{MchID: b.creds.MchID})
		if err := b.rateLimitBurst(ctx, enforce); err != nil {
			return err
		}
	}
	return nil
}

// startLimitedWorker starts a v3 worker with extra environment, before
// -worker-env (which still wins).
func (b *bench) startLimitedWorker(ctx context.Context, name string, concurrency int, extra ...string) (*workerRun, error) {
	saved := b.o.workerEnv
	b.o.workerEnv = append(append([]string(nil), extra...), saved...)
	defer func() { b.o.workerEnv = saved }()
	return b.startWorker(ctx, name, "v3", concurrency, false)
}

// rateLimitCost compares one worker's v3 closes/s without the limiter and
// with a limit that never binds.
func (b *bench) rateLimitCost(ctx context.Context) error {
	n := b.o.orders
	var lrs [2]loadResult
	for i, limit := range []string{"off", "100000"} {
		if i > 0 {
			if err := b.redis.reset(ctx); err != nil {
				return err
			}
			b.producer = tasks.NewProducerFromRedisClient(b.redis.rdb, tasks.ProducerConfig{MchID: b.creds.MchID})
		}
		if _, err := enqueueAll(ctx, b.producer, b.orders(byte('O'+i), n, longAgo, true)); err != nil {
			return err
		}
		from, early0 := b.calls.count(), b.sandbox.EarlyCalls()
		w, err := b.startLimitedWorker(ctx, "worker-ratelimit-"+limit, b.o.concurrency, "WXCLOSE_RATE_LIMIT="+limit)
		if err != nil {
			return err
		}
		lr, err := b.runLoad(ctx, w, from, n)
		if err == nil {
			err = b.checkClosed(ctx, n, early0)
		}
		if err == nil {
			err = w.shutdown()
		}
		w.kill()
		if err != nil {
			return err
		}
		lrs[i] = lr
	}
	off, on := lrs[0], lrs[1]
	ratio := on.rate / off.rate
	// On a shared machine the two runs may not get the same share of it;
	// CPU time per close does not depend on that share.
	cpuOn, cpuOff := on.use.total()/time.Duration(on.closes), off.use.total()/time.Duration(off.closes)
	b.report.add(row{
		Key: "ratelimit.cost_ratio", Figure: fmt.Sprintf("v3 closes/s with a rate limit that does not bind (concurrency %d)", b.o.concurrency),
		Value: on.rate, Unit: "closes/s", Text: thousands(on.rate) + " closes/s",
		Baseline: "WXCLOSE_RATE_LIMIT=off " + thousands(off.rate) + " closes/s", BaselineValue: off.rate, Ratio: ratio,
		Target: "≥ 0.90", Met: met(ratio >= 0.90), OtherCPUs: on.use.otherCPUs(),
		Details: fmt.Sprintf("%d closes each; CPU-normalized: %s per close in all processes with the limit vs %s without = %.2f; with the limit: %s; without: %s",
			n, perOp(cpuOn, 1), perOp(cpuOff, 1), cpuOff.Seconds()/cpuOn.Seconds(), on.use.perClose(on.closes), off.use.perClose(off.closes)),
	})
	return nil
}

// rateLimitBurst runs a burst for one merchant limited to -ratelimit-rate
// with two workers while the sandbox enforces enforce calls/s.
func (b *bench) rateLimitBurst(ctx context.Context, enforce int) error {
	n, rate := b.o.rlOrders, b.o.rlRate
	if err := b.sandbox.SetRateLimit("", sandbox.RateLimit{PerSecond: float64(enforce)}); err != nil {
		return err
	}
	defer func() { _ = b.sandbox.SetRateLimit("", sandbox.RateLimit{}) }()
	var workers []*workerRun
	defer func() {
		for _, w := range workers {
			w.kill()
		}
	}()
	for i := range 2 {
		w, err := b.startLimitedWorker(ctx, fmt.Sprintf("worker-limited-%d-%d", enforce, i), b.o.concurrency,
			fmt.Sprintf("WXCLOSE_RATE_LIMIT=%d", rate), "WXCLOSE_LOG_LEVEL=warn")
		if err != nil {
			return err
		}
		workers = append(workers, w)
	}
	due := time.Now().Add(3*time.Second + time.Duration(n)*200*time.Microsecond).Truncate(time.Second).Add(time.Second)
	base := due.Add(-tasks.MinCloseAge - tasks.DefaultCloseMargin)
	orders := b.orders('R', n, func(i int) time.Time { return base.Add(-time.Duration(i) * time.Second / time.Duration(n)) }, true)
	calls0, early0 := len(b.sandbox.Calls()), b.sandbox.EarlyCalls()
	if _, err := enqueueAll(ctx, b.producer, orders); err != nil {
		return err
	}
	// Throttled closes are snoozed for the first retry backoff (10 s), so
	// allow for a few rounds beyond the drain itself.
	qi, err := b.queueDrained(ctx, time.Duration(n/enforce)*3*time.Second+3*time.Minute)
	if err != nil {
		return err
	}
	for _, w := range workers {
		if err := w.shutdown(); err != nil {
			return err
		}
	}
	spent, err := b.retriesSpent(ctx)
	if err != nil {
		return err
	}
	var accepted []time.Time
	throttled, total := 0, 0
	for _, c := range b.sandbox.Calls()[calls0:] {
		if c.API != "v3" {
			continue
		}
		total++
		switch c.Outcome {
		case "rate_limited":
			throttled++
		case "closed", "already_closed":
			accepted = append(accepted, c.At)
		}
	}
	slices.SortFunc(accepted, func(x, y time.Time) int { return x.Compare(y) })
	if len(accepted) < 2 {
		return fmt.Errorf("only %d closes accepted", len(accepted))
	}
	early := b.sandbox.EarlyCalls() - early0
	first, last := accepted[0], accepted[len(accepted)-1]
	drain := float64(len(accepted)-1) / last.Sub(first).Seconds()
	after := 0
	for _, at := range accepted {
		if !at.Before(first.Add(10 * time.Second)) {
			after++
		}
	}
	effective := float64(after) / last.Sub(first.Add(10*time.Second)).Seconds()
	share := float64(throttled) / float64(total)
	allClosed := qi.Completed == n && qi.Archived == 0 && len(accepted) == n
	details := fmt.Sprintf("%d orders, %d calls, %d RATE_LIMITED (%.2f %%), %d retries spent, %d early calls, %d completed, %d archived; drained in %.1f s at %s/s; %s/s after the first 10 s",
		n, total, throttled, 100*share, spent, early, qi.Completed, qi.Archived, last.Sub(first).Seconds(), thousands(drain), thousands(effective))
	if enforce >= rate {
		ok := drain >= 0.95*float64(rate) && throttled == 0 && spent == 0 && early == 0 && allClosed
		b.report.add(row{
			Key:    "ratelimit.burst_closes_per_s",
			Figure: fmt.Sprintf("burst of %s for one merchant, R=%d/s, sandbox %d/s, 2 workers", thousands(float64(n)), rate, enforce),
			Value:  drain, Unit: "closes/s", Text: thousands(drain) + " closes/s",
			Baseline: fmt.Sprintf("R = %d/s", rate), BaselineValue: float64(rate), Ratio: drain / float64(rate),
			Target: "≥ 0.95 R, 0 RATE_LIMITED, 0 retries, 0 early", Met: met(ok), Details: details,
		})
		return nil
	}
	ok := effective >= 0.85*float64(enforce) && share <= 0.02 && spent == 0 && early == 0 && allClosed
	b.report.add(row{
		Key:    "ratelimit.adaptive_closes_per_s",
		Figure: fmt.Sprintf("burst of %s, R=%d/s, sandbox enforcing %d/s: effective rate after 10 s", thousands(float64(n)), rate, enforce),
		Value:  effective, Unit: "closes/s", Text: fmt.Sprintf("%s closes/s, %.2f %% RATE_LIMITED", thousands(effective), 100*share),
		Baseline: fmt.Sprintf("sandbox %d/s", enforce), BaselineValue: float64(enforce), Ratio: effective / float64(enforce),
		Target: "≥ 0.85, RATE_LIMITED ≤ 2 %, all closed, 0 retries", Met: met(ok), Details: details,
	})
	return nil
}

// retriesSpent sums the retries the completed close tasks spent
// (postponements spend none).
func (b *bench) retriesSpent(ctx context.Context) (int, error) {
	insp := asynq.NewInspectorFromRedisClient(b.redis.rdb)
	spent := 0
	for page := 1; ; page++ {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		infos, err := insp.ListCompletedTasks(tasks.QueueClose, asynq.PageSize(5000), asynq.Page(page))
		if err != nil {
			return 0, err
		}
		for _, in := range infos {
			spent += in.Retried
		}
		if len(infos) < 5000 {
			return spent, nil
		}
	}
}
