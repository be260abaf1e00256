package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"

	"github.com/wxclose/wxclose/internal/consumer"
	"github.com/wxclose/wxclose/tasks"
	"github.com/wxclose/wxclose/wechat"
	"github.com/wxclose/wxclose/wechat/sandbox"
)

// enqueueConcurrency is how many goroutines put orders on the queue before
// a measurement (not itself measured).
const enqueueConcurrency = 16

// measure runs the selected sections, each on an empty Redis. Each
// baseline runs right before the figure divided by it (signing bound, v3;
// bare drain, v2), so that on a shared machine the two see as similar a
// load as possible; the report prints them in the order of sections.
func (b *bench) measure(ctx context.Context) error {
	defer b.report.sort()
	defer b.report.relate()
	// A ratio's baseline is measured on both sides of its figure (when
	// both run) and the two measurements are averaged: see report.bracket.
	minimal := func(api string) func(context.Context) error {
		return func(ctx context.Context) error { return b.measureMinimal(ctx, api) }
	}
	steps := []struct {
		name string
		fn   func(context.Context) error
		// with, when set, names another section: the step runs only if
		// that one runs too.
		with string
	}{
		{name: "sign", fn: b.measureSign},
		{name: "minimal", fn: minimal("v3"), with: "v3"},
		{name: "v3", fn: func(ctx context.Context) error { return b.measureCloses(ctx, "v3") }},
		{name: "minimal", fn: minimal("v3"), with: "v3"},
		{name: "sign", fn: b.measureSign, with: "v3"},
		{name: "drain", fn: b.measureDrain},
		{name: "minimal", fn: minimal("v2"), with: "v2"},
		{name: "v2", fn: func(ctx context.Context) error { return b.measureCloses(ctx, "v2") }},
		{name: "minimal", fn: minimal("v2"), with: "v2"},
		{name: "drain", fn: b.measureDrain, with: "v2"},
		{name: "burst", fn: b.measureBurst},
		{name: "latency", fn: b.measureLatency},
		{name: "bulk", fn: b.measureBulk},
		{name: "memory", fn: b.measureMemory},
		{name: "rss", fn: b.measureRSS},
		{name: "ratelimit", fn: b.measureRateLimit},
		{name: "capacity", fn: b.measureCapacity}, // capacity.go
		{name: "api", fn: b.measureAPI},           // api.go
		{name: "webhook", fn: b.measureWebhook},   // webhook.go
	}
	defer func() { b.report.Machine["loadavg_at_end"] = loadavg() }()
	for _, s := range steps {
		if !b.o.runs(s.name) || (s.with != "" && !b.o.runs(s.with)) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		b.progress("%s", s.name)
		if err := b.redis.reset(ctx); err != nil {
			return fmt.Errorf("%s: reset Redis: %w", s.name, err)
		}
		// A fresh producer: an asynq client registers a queue in
		// asynq:queues only on its first enqueue, and the reset removed it.
		b.producer = tasks.NewProducerFromRedisClient(b.redis.rdb, tasks.ProducerConfig{MchID: b.creds.MchID})
		if err := s.fn(ctx); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	return nil
}

// orders returns n orders with realistic 22-character order numbers (a
// letter naming the section, the creation second and a sequence number),
// created at created(i), optionally registered as unpaid at the sandbox.
func (b *bench) orders(prefix byte, n int, created func(i int) time.Time, register bool) []tasks.CloseOrder {
	stamp := time.Now().Format("20060102150405")
	out := make([]tasks.CloseOrder, n)
	for i := range out {
		out[i] = tasks.CloseOrder{OutTradeNo: fmt.Sprintf("%c%s%07d", prefix, stamp, i), CreatedAt: created(i)}
		if register {
			b.sandbox.AddOrder(sandbox.Order{OutTradeNo: out[i].OutTradeNo, CreatedAt: out[i].CreatedAt})
		}
	}
	return out
}

func longAgo(int) time.Time { return time.Now().Add(-10 * time.Minute) }
func justNow(int) time.Time { return time.Now() }

// enqueueAll enqueues orders through p with a few goroutines and fails on
// any error or duplicate.
func enqueueAll(ctx context.Context, p *tasks.Producer, orders []tasks.CloseOrder) ([]tasks.Scheduled, error) {
	out := make([]tasks.Scheduled, len(orders))
	err := inParallel(ctx, len(orders), func(i int) error {
		s, err := p.EnqueueClose(ctx, orders[i])
		if err == nil && s.Duplicate {
			err = fmt.Errorf("%s was already scheduled", orders[i].OutTradeNo)
		}
		out[i] = s
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// inParallel calls do for every index below n from enqueueConcurrency
// goroutines, stops handing out indexes at the first error, and returns
// that error, or ctx's.
func inParallel(ctx context.Context, n int, do func(i int) error) error {
	var next atomic.Int64
	errs := make(chan error, enqueueConcurrency)
	var wg sync.WaitGroup
	for range enqueueConcurrency {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := do(i); err != nil {
					errs <- err
					next.Store(int64(n))
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	return ctx.Err()
}

// measureSign measures the machine's RSA-2048 signing bound: GOMAXPROCS
// goroutines signing v3 request messages with the merchant key, as the
// worker does once per close.
func (b *bench) measureSign(ctx context.Context) error {
	key, err := wechat.LoadPrivateKey(b.creds.MerchantPrivateKeyPEM)
	if err != nil {
		return err
	}
	msg := wechat.BuildV3Message("POST", "/v3/global/transactions/out-trade-no/P202611221030150000001/close",
		fmt.Sprint(time.Now().Unix()), "5K8264ILTKCH16CQ2502SI8ZNMTM67VS", []byte(`{"mchid":"`+b.creds.MchID+`"}`))
	n := runtime.GOMAXPROCS(0)
	var total atomic.Int64
	var failed atomic.Value
	c0 := b.snap(ctx, 0)
	start := c0.at
	deadline := start.Add(b.o.signFor)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for time.Now().Before(deadline) && ctx.Err() == nil {
				if _, err := wechat.SignV3(key, msg); err != nil {
					failed.Store(err)
					return
				}
				total.Add(1)
			}
		})
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	u := between(c0, b.snap(ctx, 0))
	el, cpu := u.wall, u.self
	rate := float64(total.Load()) / el.Seconds()
	perSign := cpu / time.Duration(total.Load())
	b.report.bracket(row{
		Key: "sign.signs_per_s", Figure: fmt.Sprintf("RSA-2048 signing bound (%d goroutines)", n),
		Value: rate, Unit: "signs/s", Text: thousands(rate) + " signs/s",
		OtherCPUs: u.otherCPUs(), perOpCPU: perSign,
		Details: fmt.Sprintf("%s signs/s: %d wechat.SignV3 calls in %.1f s on %d goroutines, %s of CPU each; the bench got %.2f of %d CPUs; CPU-normalized bound %d CPUs / %s = %s signs/s",
			thousands(rate), total.Load(), el.Seconds(), n, perOp(perSign, 1), cpu.Seconds()/el.Seconds(), runtime.NumCPU(),
			runtime.NumCPU(), perOp(perSign, 1), thousands(float64(runtime.NumCPU())/perSign.Seconds())),
	})
	return nil
}

// quietLogger drops asynq's log lines.
type quietLogger struct{}

func (quietLogger) Debug(...any) {}
func (quietLogger) Info(...any)  {}
func (quietLogger) Warn(...any)  {}
func (quietLogger) Error(...any) {}
func (quietLogger) Fatal(...any) {}

// measureDrain measures a bare asynq server (no-op handler, the worker's
// concurrency and check intervals) draining the same close tasks the
// producer writes, already due: the baseline issue 8 names. The worker
// splits its concurrency among several asynq servers (dequeue loops, see
// internal/consumer), so the same drain is measured with as many servers as
// the worker runs too: the ratio to it is the handler's own cost.
func (b *bench) measureDrain(ctx context.Context) error {
	if err := b.drain(ctx, 1, 'D'); err != nil {
		return err
	}
	if loops := consumer.DefaultLoops(b.o.concurrency); loops > 1 {
		return b.drain(ctx, loops, 'E')
	}
	return nil
}

func (b *bench) drain(ctx context.Context, loops int, prefix byte) error {
	n := b.o.orders
	mem0, err := b.redis.usedMemory(ctx)
	if err != nil {
		return err
	}
	if _, err := enqueueAll(ctx, b.producer, b.orders(prefix, n, longAgo, false)); err != nil {
		return err
	}
	var count, first atomic.Int64
	done := make(chan time.Time, 1)
	mux := asynq.NewServeMux()
	mux.HandleFunc(tasks.TypeClose, func(context.Context, *asynq.Task) error {
		now := time.Now()
		first.CompareAndSwap(0, now.UnixNano())
		if count.Add(1) == int64(n) {
			done <- now
		}
		return nil
	})
	var servers []*asynq.Server
	base := asynq.Config{
		Concurrency: b.o.concurrency, Queues: map[string]int{tasks.QueueClose: 1},
		DelayedTaskCheckInterval: 200 * time.Millisecond, TaskCheckInterval: 100 * time.Millisecond,
		Logger: quietLogger{}, LogLevel: asynq.ErrorLevel,
	}
	for _, cfg := range consumer.LoopConfigs(base, loops) {
		servers = append(servers, asynq.NewServer(b.redis.opt, cfg))
	}
	shutdown := func() {
		for _, srv := range servers {
			srv.Shutdown()
		}
	}
	defer shutdown() // asynq ignores a second Shutdown
	c0 := b.snap(ctx, 0)
	for _, srv := range servers {
		if err := srv.Start(mux); err != nil {
			return err
		}
	}
	var last time.Time
	select {
	case last = <-done:
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(time.Duration(n)*time.Millisecond + time.Minute):
		return fmt.Errorf("the no-op server handled %d of %d tasks", count.Load(), n)
	}
	u := between(c0, b.snap(ctx, 0))
	window := last.Sub(time.Unix(0, first.Load()))
	shutdown()
	if _, err := b.queueDrained(ctx, time.Minute); err != nil {
		return err
	}
	mem1, err := b.redis.usedMemory(ctx)
	if err != nil {
		return err
	}
	rate := float64(n-1) / window.Seconds()
	r := row{
		Key: "drain.tasks_per_s", Figure: fmt.Sprintf("bare asynq drain, no-op handler (concurrency %d)", b.o.concurrency),
		Value: rate, Unit: "tasks/s", Text: thousands(rate) + " tasks/s",
		OtherCPUs: u.otherCPUs(),
		Details: fmt.Sprintf("%s tasks/s: %d pending close tasks in %.2f s; CPU per task: asynq server (bench process) %s, redis %s (measured from server start to the last task); %s; Redis %s B per completed task (no result written)",
			thousands(rate), n, window.Seconds(), perOp(u.self, n), perOp(u.redis, n), u.redisCommands(n), thousands(float64(mem1-mem0)/float64(n))),
		perOpCPU: u.total() / time.Duration(n),
	}
	if loops > 1 {
		r.Key = "drain.loops_tasks_per_s"
		r.Figure = fmt.Sprintf("bare asynq drain, %d servers as the worker runs (concurrency %d)", loops, b.o.concurrency)
	}
	b.report.bracket(r)
	return nil
}

// loadResult is what runLoad measured while a worker closed orders.
type loadResult struct {
	calls    []call
	rate     float64 // calls per second, first to last call
	window   time.Duration
	use      cpuUse // from the first call to the last
	closes   int    // closes made during use
	conns    int    // connections the sandbox accepted during use
	hwmKB    int64
	profile  string
	closedAt time.Time
}

// runLoad waits until the worker w has made n close calls since the sandbox
// had seen from, and measures the rate (first to last call), the CPU per
// close of each process over that window, and the worker's peak RSS.
// A nil w is a handler in the bench process (the minimal worker).
func (b *bench) runLoad(ctx context.Context, w *workerRun, from, n int) (loadResult, error) {
	pid, name := 0, "the bench's own handler"
	if w != nil {
		pid, name = w.pid(), w.name
	}
	var (
		lr             loadResult
		started        bool
		c0             cpuSnap
		at0, lastCount int
		lastProgress   = time.Now()
		prof           *profiler
		conns0         int64
	)
	for {
		c := b.calls.count() - from
		if !started && c > 0 {
			started = true
			c0, at0 = b.snap(ctx, pid), c
			conns0 = b.calls.conns.Load()
			if w != nil && w.pprofAddr != "" {
				var err error
				if prof, err = startProfile(ctx, w.pprofAddr, b.o.profileDir, w.name, b.o.profileFor); err != nil {
					return lr, fmt.Errorf("profile: %w", err)
				}
			}
		}
		if c >= n {
			break
		}
		if c != lastCount {
			lastCount, lastProgress = c, time.Now()
		}
		if err := ctx.Err(); err != nil {
			return lr, err
		}
		if w != nil && !w.running() {
			return lr, fmt.Errorf("%s exited after %d of %d closes: %v\n%s", w.name, c, n, w.exitErr(), w.logTail())
		}
		if time.Since(lastProgress) > time.Minute {
			tail := ""
			if w != nil {
				tail = "\n" + w.logTail()
			}
			return lr, fmt.Errorf("%s made no close call for a minute (%d of %d done)%s", name, c, n, tail)
		}
		time.Sleep(10 * time.Millisecond)
	}
	lr.use = between(c0, b.snap(ctx, pid))
	lr.closedAt = time.Now()
	if w != nil {
		lr.hwmKB, _ = procStatusKB(pid, "VmHWM")
	}
	lr.calls = b.calls.since(from)
	first, last := lr.calls[0].at, lr.calls[0].at
	for _, c := range lr.calls {
		if c.at.Before(first) {
			first = c.at
		}
		if c.at.After(last) {
			last = c.at
		}
	}
	lr.window = last.Sub(first)
	lr.rate = float64(len(lr.calls)-1) / lr.window.Seconds()
	lr.closes = n - at0
	lr.conns = int(b.calls.conns.Load() - conns0)
	if prof != nil {
		var err error
		if lr.profile, err = prof.finish(ctx, lr.closes, lr.closedAt, b.o.profileFor); err != nil {
			return lr, fmt.Errorf("profile: %w", err)
		}
	}
	return lr, nil
}

// checkClosed waits for the queue to drain and checks that every one of n
// tasks completed, and that the sandbox saw no early close since early0.
func (b *bench) checkClosed(ctx context.Context, n, early0 int) error {
	qi, err := b.queueDrained(ctx, time.Minute)
	if err != nil {
		return err
	}
	if qi.Completed != n || qi.Archived != 0 {
		return fmt.Errorf("%d of %d close tasks completed, %d archived", qi.Completed, n, qi.Archived)
	}
	if early := b.sandbox.EarlyCalls() - early0; early != 0 {
		return fmt.Errorf("the sandbox refused %d early closes", early)
	}
	return nil
}

// measureCloses measures the worker closing orders that are all due, with
// the chosen API, from its first to its last call to the sandbox.
func (b *bench) measureCloses(ctx context.Context, api string) error {
	n := b.o.orders
	prefix := byte('3')
	if api == "v2" {
		prefix = '2'
	}
	orders := b.orders(prefix, n, longAgo, true)
	mem0, err := b.redis.usedMemory(ctx)
	if err != nil {
		return err
	}
	if _, err := enqueueAll(ctx, b.producer, orders); err != nil {
		return err
	}
	from, early0 := b.calls.count(), b.sandbox.EarlyCalls()
	w, err := b.startWorker(ctx, "worker-"+api, api, b.o.concurrency, b.o.profileDir != "")
	if err != nil {
		return err
	}
	defer w.kill()
	lr, err := b.runLoad(ctx, w, from, n)
	if err != nil {
		return err
	}
	if err := b.checkClosed(ctx, n, early0); err != nil {
		return err
	}
	mem1, err := b.redis.usedMemory(ctx)
	if err != nil {
		return err
	}
	if err := w.shutdown(); err != nil {
		return err
	}
	r := row{
		Key: api + ".closes_per_s", Figure: fmt.Sprintf("%s closes/s (concurrency %d)", api, b.o.concurrency),
		Value: lr.rate, Unit: "closes/s", Text: thousands(lr.rate) + " closes/s",
		OtherCPUs: lr.use.otherCPUs(),
		Details: fmt.Sprintf("%d closes in %.2f s; %s; %d new HTTP connections to the sandbox during %d closes; worker VmHWM %.1f MiB; Redis %s B per completed close (kept 24 h)",
			n, lr.window.Seconds(), lr.use.perClose(lr.closes), lr.conns, lr.closes, float64(lr.hwmKB)/1024, thousands(float64(mem1-mem0)/float64(n))),
	}
	// On a shared machine the figure and its baseline may see different
	// loads; CPU time per operation does not depend on the share the
	// bench got, so the CPU-bound estimate is printed too.
	r.perOpCPU = lr.use.total() / time.Duration(lr.closes)
	if b.o.profileDir != "" {
		r.Figure += " [profiling build]"
		r.Details += "; " + lr.profile
	}
	r.ratio = &ratioSpec{baseKey: "sign.signs_per_s", baseName: "RSA-2048 signing bound", target: 0.72,
		note: func(x, base row, all *report) string {
			return fmt.Sprintf("CPU-normalized: %s per close in all processes vs %s per signature = %.2f of the signing bound",
				perOp(x.perOpCPU, 1), perOp(base.perOpCPU, 1), base.perOpCPU.Seconds()/x.perOpCPU.Seconds()) + minimalNote(x, all, "v3")
		}}
	if api == "v2" {
		loops := consumer.DefaultLoops(b.o.concurrency)
		r.ratio = &ratioSpec{baseKey: "drain.tasks_per_s", baseName: "bare asynq drain", target: 0.50,
			note: func(x, base row, all *report) string {
				note := fmt.Sprintf("CPU per close in all processes %s vs %s per bare asynq task (%.1f×)",
					perOp(x.perOpCPU, 1), perOp(base.perOpCPU, 1), x.perOpCPU.Seconds()/base.perOpCPU.Seconds())
				if l, ok := all.find("drain.loops_tasks_per_s"); ok {
					note += fmt.Sprintf("; %.2f of the bare drain with the worker's %d servers (%s/s)", x.Value/l.Value, loops, thousands(l.Value))
				}
				return note + minimalNote(x, all, "v2")
			}}
	}
	r.Target = fmt.Sprintf("≥ %.2f", r.ratio.target)
	b.report.add(r)
	return nil
}

// minimalNote compares a closes/s figure with the minimal close worker's
// (minimal.go), when that ran.
func minimalNote(x row, all *report, api string) string {
	m, ok := all.find("minimal." + api + "_closes_per_s")
	if !ok || m.Value == 0 || m.perOpCPU == 0 {
		return ""
	}
	return fmt.Sprintf("; %.2f of the minimal close worker's closes/s (%s/s, mean of %d runs around this one), CPU per close %.2f× the minimal worker's (%s)",
		x.Value/m.Value, thousands(m.Value), len(m.Samples), x.perOpCPU.Seconds()/m.perOpCPU.Seconds(), perOp(m.perOpCPU, 1))
}

// measureBurst schedules -burst closes due in the same second while a v3
// worker waits, and measures how long after that second each order's first
// call reached the sandbox.
func (b *bench) measureBurst(ctx context.Context) error {
	n := b.o.burst
	w, err := b.startWorker(ctx, "worker-burst", "v3", b.o.concurrency, false)
	if err != nil {
		return err
	}
	defer w.kill()
	// Creation times spread over one second so that creation + 5 min +
	// margin, rounded up to the second as the producer does, is the same
	// second for every order, while their fractional parts differ as real
	// orders' do.
	due := time.Now().Add(2*time.Second + time.Duration(n)*200*time.Microsecond).Truncate(time.Second).Add(time.Second)
	base := due.Add(-tasks.MinCloseAge - tasks.DefaultCloseMargin)
	orders := b.orders('B', n, func(i int) time.Time { return base.Add(-time.Duration(i) * time.Second / time.Duration(n)) }, true)
	from, early0 := b.calls.count(), b.sandbox.EarlyCalls()
	scheduled, err := enqueueAll(ctx, b.producer, orders)
	if err != nil {
		return err
	}
	enqueued := time.Now()
	for i, s := range scheduled {
		if !s.DueAt.Equal(due) {
			return fmt.Errorf("order %s is due at %s, not at %s", orders[i].OutTradeNo, s.DueAt, due)
		}
	}
	lr, err := b.runLoad(ctx, w, from, n)
	if err != nil {
		return err
	}
	if err := b.checkClosed(ctx, n, early0); err != nil {
		return err
	}
	if err := w.shutdown(); err != nil {
		return err
	}
	firstCall := map[string]time.Time{}
	for _, c := range lr.calls {
		if t, ok := firstCall[c.order]; !ok || c.at.Before(t) {
			firstCall[c.order] = c.at
		}
	}
	lateness := make([]time.Duration, 0, len(firstCall))
	for _, t := range firstCall {
		lateness = append(lateness, t.Sub(due))
	}
	slices.Sort(lateness)
	p50, p99, mx := percentile(lateness, 0.50), percentile(lateness, 0.99), lateness[len(lateness)-1]
	early := b.sandbox.EarlyCalls() - early0
	r := row{
		Key: "burst.lateness_max_s", Figure: fmt.Sprintf("burst of %s due in one second (v3): first call − due second", thousands(float64(n))),
		Value: mx.Seconds(), Unit: "s",
		Text: fmt.Sprintf("p50 %.2f s, p99 %.2f s, max %.2f s", p50.Seconds(), p99.Seconds(), mx.Seconds()),
		Details: fmt.Sprintf("%d orders, %d calls; enqueue finished %.2f s before the due second; drained at %s closes/s; %s",
			len(firstCall), len(lr.calls), due.Sub(enqueued).Seconds(), thousands(lr.rate), lr.use.perClose(lr.closes)),
		Target:    "max ≤ baseline, 0 early",
		OtherCPUs: lr.use.otherCPUs(),
	}
	if v3, ok := b.report.find("v3.closes_per_s"); ok {
		target := time.Duration(float64(n)/v3.Value*float64(time.Second)) + 500*time.Millisecond
		r.Baseline = fmt.Sprintf("%s / v3 rate + 0.5 s = %.2f s", thousands(float64(n)), target.Seconds())
		r.BaselineValue, r.Ratio = target.Seconds(), mx.Seconds()/target.Seconds()
		own := time.Duration(float64(n)/lr.rate*float64(time.Second)) + 500*time.Millisecond
		r.Details += fmt.Sprintf("; against the burst's own drain rate: %s / %s/s + 0.5 s = %.2f s (%.2f)",
			thousands(float64(n)), thousands(lr.rate), own.Seconds(), mx.Seconds()/own.Seconds())
		// The target divides by a rate measured half a minute earlier; a
		// machine that changed speed since then (the same code drains a
		// burst as fast as the v3 run on a steady machine) makes the
		// comparison meaningless, as with a bracketed baseline.
		if gap := math.Abs(lr.rate-v3.Value) / ((lr.rate + v3.Value) / 2); gap > maxSpread {
			r.Target += " (unreliable: machine speed changed)"
			r.Details += fmt.Sprintf("; the burst drained at a rate %.0f%% away from the v3 run's: the machine's speed changed, so the ratio is not reliable", 100*gap)
		} else {
			r.judge(mx <= target && early == 0, v3)
		}
	} else {
		r.Baseline = "v3 rate not measured (-only)"
	}
	b.report.add(r)
	b.report.add(row{
		Key: "burst.early_calls", Figure: "burst: early calls (sandbox counter)",
		Value: float64(early), Unit: "calls", Text: fmt.Sprint(early), Target: "0", Met: met(early == 0),
	})
	return nil
}

// measureLatency times sequential tasks.Producer.EnqueueClose calls on
// loopback Redis, after a short warm-up.
func (b *bench) measureLatency(ctx context.Context) error {
	k := b.o.latencySamples
	warm := min(100, k/10)
	orders := b.orders('L', k+warm, justNow, false)
	lat := make([]time.Duration, 0, k)
	var c0 cpuSnap
	for i, o := range orders {
		if i == warm {
			c0 = b.snap(ctx, 0)
		}
		t0 := time.Now()
		s, err := b.producer.EnqueueClose(ctx, o)
		d := time.Since(t0)
		if err != nil {
			return err
		}
		if s.Duplicate {
			return fmt.Errorf("%s was already scheduled", o.OutTradeNo)
		}
		if i >= warm {
			lat = append(lat, d)
		}
	}
	u := between(c0, b.snap(ctx, 0))
	slices.Sort(lat)
	p99 := percentile(lat, 0.99)
	b.report.add(row{
		Key: "latency.enqueue_close_p99_ms", Figure: "tasks.Producer.EnqueueClose latency (sequential, loopback)",
		Value: float64(p99) / float64(time.Millisecond), Unit: "ms",
		Text:   fmt.Sprintf("p50 %s, p99 %s", ms(percentile(lat, 0.5)), ms(p99)),
		Target: "p99 ≤ 1 ms", Met: met(p99 <= time.Millisecond), OtherCPUs: u.otherCPUs(),
		Details: fmt.Sprintf("%d calls after %d warm-up calls, %s calls/s; max %s",
			k, warm, thousands(float64(k)/u.wall.Seconds()), ms(lat[len(lat)-1])),
	})
	return nil
}

// measureBulk times the built enqueue CLI over a JSON Lines file against
// sequential asynq Client.Enqueue calls of the same tasks.
func (b *bench) measureBulk(ctx context.Context) error {
	n := b.o.orders
	path := filepath.Join(b.dir, "orders.jsonl")
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	created := time.Now().UTC().Format(time.RFC3339)
	for _, o := range b.orders('K', n, justNow, false) {
		fmt.Fprintf(f, `{"out_trade_no":%q,"created_at":%q}`+"\n", o.OutTradeNo, created)
	}
	if err := f.Close(); err != nil {
		return err
	}
	cmd := exec.Command(b.enqueueBin, "--file", path, "--quiet")
	cmd.Env = append(cleanEnv(), "REDIS_URL="+b.redis.url, "WECHATPAY_MCHID="+b.creds.MchID)
	c0 := b.snap(ctx, 0)
	t0 := time.Now()
	c, err := b.procs.start("enqueue", cmd, filepath.Join(b.dir, "enqueue.log"))
	if err != nil {
		return err
	}
	select {
	case <-c.exited:
	case <-ctx.Done():
		c.kill()
		return ctx.Err()
	}
	bulkTime := time.Since(t0)
	bulkUse := between(c0, b.snap(ctx, 0))
	if ps := c.cmd.ProcessState; ps != nil {
		// The CLI has exited: its CPU comes from its rusage, not /proc.
		bulkUse.worker = ps.UserTime() + ps.SystemTime()
		bulkUse.other = max(bulkUse.other-bulkUse.worker, 0)
	}
	if err := c.exitErr(); err != nil {
		return fmt.Errorf("%w\n%s", err, c.logTail())
	}
	insp := asynq.NewInspectorFromRedisClient(b.redis.rdb)
	if qi, err := insp.GetQueueInfo(tasks.QueueClose); err != nil || qi.Scheduled != n {
		return fmt.Errorf("after enqueue --file: %+v, %v; want %d scheduled", qi, err, n)
	}
	bulkRate := float64(n) / bulkTime.Seconds()

	if err := b.redis.reset(ctx); err != nil {
		return err
	}
	client := asynq.NewClient(b.redis.opt)
	defer client.Close()
	orders := b.orders('S', n, justNow, false)
	c0 = b.snap(ctx, 0)
	for _, o := range orders {
		if err := b.enqueueRaw(ctx, client, o); err != nil {
			return err
		}
	}
	seqUse := between(c0, b.snap(ctx, 0))
	seqRate := float64(n) / seqUse.wall.Seconds()
	ratio := bulkRate / seqRate
	b.report.add(row{
		Key: "bulk.orders_per_s", Figure: "bulk enqueue --file (built CLI, JSON Lines)",
		Value: bulkRate, Unit: "orders/s", Text: thousands(bulkRate) + " orders/s",
		Baseline: "sequential asynq Client.Enqueue " + thousands(seqRate) + "/s", BaselineValue: seqRate, Ratio: ratio,
		Target: "≥ 2.5", Met: met(ratio >= 2.5), OtherCPUs: bulkUse.otherCPUs(),
		Details: fmt.Sprintf("%d orders; the CLI's wall time including process start, default --concurrency; CPU per order: CLI %s, redis %s; baseline: client %s, redis %s per order, other processes %.2f CPUs",
			n, perOp(bulkUse.worker, n), perOp(bulkUse.redis, n), perOp(seqUse.self, n), perOp(seqUse.redis, n), deref(seqUse.otherCPUs())),
	})
	return nil
}

// enqueueRaw enqueues o as the producer does (same task, options and
// header) with a plain asynq client: the baseline of the bulk CLI.
func (b *bench) enqueueRaw(ctx context.Context, c *asynq.Client, o tasks.CloseOrder) error {
	pl, due, err := b.producer.Payload(o)
	if err != nil {
		return err
	}
	data, err := json.Marshal(pl)
	if err != nil {
		return err
	}
	t := asynq.NewTaskWithHeaders(tasks.TypeClose, data, map[string]string{tasks.HeaderDue: tasks.FormatDue(due)})
	_, err = c.EnqueueContext(ctx, t, asynq.Queue(tasks.QueueClose), asynq.TaskID(tasks.CloseTaskID(pl.Ref())),
		asynq.ProcessAt(due), asynq.MaxRetry(tasks.DefaultMaxRetry), asynq.Timeout(tasks.DefaultCloseTimeout),
		asynq.Retention(tasks.DefaultCloseRetention))
	return err
}

// measureRSS runs a v3 worker at -rss-concurrency over due orders and
// reports its peak resident set (VmHWM).
func (b *bench) measureRSS(ctx context.Context) error {
	n := b.o.orders
	if _, err := enqueueAll(ctx, b.producer, b.orders('R', n, longAgo, true)); err != nil {
		return err
	}
	from, early0 := b.calls.count(), b.sandbox.EarlyCalls()
	w, err := b.startWorker(ctx, "worker-rss", "v3", b.o.rssConcurrency, false)
	if err != nil {
		return err
	}
	defer w.kill()
	lr, err := b.runLoad(ctx, w, from, n)
	if err != nil {
		return err
	}
	if err := b.checkClosed(ctx, n, early0); err != nil {
		return err
	}
	if err := w.shutdown(); err != nil {
		return err
	}
	mib := float64(lr.hwmKB) / 1024
	b.report.add(row{
		Key: "rss.peak_mib", Figure: fmt.Sprintf("worker peak RSS (v3, concurrency %d, while closing)", b.o.rssConcurrency),
		Value: mib, Unit: "MiB", Text: fmt.Sprintf("%.1f MiB", mib),
		Target: "≤ 60 MB", Met: met(float64(lr.hwmKB)*1024 <= 60e6), OtherCPUs: lr.use.otherCPUs(),
		Details: fmt.Sprintf("VmHWM after %d closes at %s closes/s; %s; %d new HTTP connections to the sandbox during %d closes",
			n, thousands(lr.rate), lr.use.perClose(lr.closes), lr.conns, lr.closes),
	})
	return nil
}
