package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/wxclose/wxclose/tasks"
)

// The capacity section measures what docs/capacity.md builds on: what one
// close costs Redis (commands, bytes on the wire, CPU) over its whole life,
// from the enqueue through the scheduled set, the move to pending, the
// dequeue and the completion, and what it costs the worker's CPU; and what
// an idle worker costs Redis per close queue it polls (WXCLOSE_SHARDS
// multiplies it).
//
// Orders become due over capacityDueSpread, a few seconds after they are
// enqueued, while a v3 worker runs, as in production. The idle polling
// measured just before is subtracted from the lifecycle figures, so that
// they do not depend on how long the run took.

const (
	capacityDueIn     = 4 * time.Second
	capacityDueSpread = 4 * time.Second
	capacityIdleFor   = 5 * time.Second
)

// capSnap is the Redis and worker counters at one instant.
type capSnap struct {
	at            time.Time
	calls         map[string]int64
	netIn, netOut int64
	redisCPU      time.Duration
	workerCPU     time.Duration
}

func (b *bench) capSnap(ctx context.Context, workerPID int) (capSnap, error) {
	s := capSnap{at: time.Now()}
	var err error
	if s.calls, err = b.redis.commandCalls(ctx); err != nil {
		return s, err
	}
	if s.redisCPU, err = b.redis.cpu(ctx); err != nil {
		return s, err
	}
	for _, f := range []struct {
		field string
		dst   *int64
	}{{"total_net_input_bytes", &s.netIn}, {"total_net_output_bytes", &s.netOut}} {
		v, err := b.redis.info(ctx, "stats", f.field)
		if err != nil {
			return s, err
		}
		if *f.dst, err = strconv.ParseInt(v, 10, 64); err != nil {
			return s, err
		}
	}
	if workerPID != 0 {
		s.workerCPU, _ = procCPU(workerPID)
	}
	return s, nil
}

// capDelta is the difference of two snapshots.
type capDelta struct {
	wall           time.Duration
	calls          float64 // every command Redis ran, those inside asynq's Lua scripts included; INFO left out
	scripts        float64 // EVALSHA and EVAL: asynq's script calls, each one round trip
	bytes          float64 // network in + out
	redisCPU       time.Duration
	workerCPU      time.Duration
	calls0, calls1 map[string]int64
}

func capDiff(a, z capSnap) capDelta {
	d := capDelta{wall: z.at.Sub(a.at), bytes: float64(z.netIn - a.netIn + z.netOut - a.netOut),
		redisCPU: z.redisCPU - a.redisCPU, workerCPU: z.workerCPU - a.workerCPU, calls0: a.calls, calls1: z.calls}
	for name, n := range z.calls {
		switch name {
		case "info":
			continue
		case "evalsha", "eval":
			d.scripts += float64(n - a.calls[name])
		}
		d.calls += float64(n - a.calls[name])
	}
	return d
}

// minus removes idle's rate from d, scaled to d's duration.
func (d capDelta) minus(idle capDelta) capDelta {
	if idle.wall <= 0 {
		return d
	}
	f := d.wall.Seconds() / idle.wall.Seconds()
	d.calls -= idle.calls * f
	d.scripts -= idle.scripts * f
	d.bytes -= idle.bytes * f
	d.redisCPU -= time.Duration(float64(idle.redisCPU) * f)
	d.workerCPU -= time.Duration(float64(idle.workerCPU) * f)
	return d
}

// idlePolling measures what an idle worker consuming shards close queues
// costs Redis per second.
func (b *bench) idlePolling(ctx context.Context, shards int) (capDelta, error) {
	w, err := b.startLimitedWorker(ctx, fmt.Sprintf("worker-idle-%d", shards), b.o.concurrency, "WXCLOSE_SHARDS="+strconv.Itoa(shards))
	if err != nil {
		return capDelta{}, err
	}
	defer w.kill()
	// Let it settle: the first heartbeat and queue registration.
	time.Sleep(time.Second)
	s0, err := b.capSnap(ctx, w.pid())
	if err != nil {
		return capDelta{}, err
	}
	select {
	case <-ctx.Done():
		return capDelta{}, ctx.Err()
	case <-time.After(capacityIdleFor):
	}
	s1, err := b.capSnap(ctx, w.pid())
	if err != nil {
		return capDelta{}, err
	}
	if err := w.shutdown(); err != nil {
		return capDelta{}, err
	}
	return capDiff(s0, s1), nil
}

func (b *bench) measureCapacity(ctx context.Context) error {
	if !b.redis.owned {
		return errors.New("the capacity section reads the private Redis' CPU and counters: run it with -redis=private")
	}
	idle1, err := b.idlePolling(ctx, 1)
	if err != nil {
		return err
	}
	idle8, err := b.idlePolling(ctx, 8)
	if err != nil {
		return err
	}
	perQueue := (idle8.calls/idle8.wall.Seconds() - idle1.calls/idle1.wall.Seconds()) / 7
	b.report.add(row{
		Key: "capacity.idle_commands_per_s", Figure: "idle worker: Redis commands/s for each close queue it polls",
		Value: perQueue, Unit: "commands/s", Text: fmt.Sprintf("%.1f commands/s", perQueue),
		Details: fmt.Sprintf("an idle worker costs %.1f commands/s (%.0f script calls/s, %s Redis CPU/s) with WXCLOSE_SHARDS=1 and %.1f (%.0f, %s) with 8; "+
			"the difference over 7 queues is the cost of each extra queue per worker (forwarder every 200 ms, dequeue every 100 ms when idle)",
			idle1.calls/idle1.wall.Seconds(), idle1.scripts/idle1.wall.Seconds(), perOp(idle1.redisCPU, int(idle1.wall.Seconds())),
			idle8.calls/idle8.wall.Seconds(), idle8.scripts/idle8.wall.Seconds(), perOp(idle8.redisCPU, int(idle8.wall.Seconds()))),
	})

	if err := b.redis.reset(ctx); err != nil {
		return err
	}
	b.producer = tasks.NewProducerFromRedisClient(b.redis.rdb, tasks.ProducerConfig{MchID: b.creds.MchID})
	n := b.o.orders
	start := time.Now()
	orders := b.orders('C', n, func(i int) time.Time {
		return start.Add(-tasks.MinCloseAge + capacityDueIn + capacityDueSpread*time.Duration(i)/time.Duration(n))
	}, true)
	w, err := b.startWorker(ctx, "worker-capacity", "v3", b.o.concurrency, false)
	if err != nil {
		return err
	}
	defer w.kill()
	from, early0 := b.calls.count(), b.sandbox.EarlyCalls()
	s0, err := b.capSnap(ctx, w.pid())
	if err != nil {
		return err
	}
	if _, err := enqueueAll(ctx, b.producer, orders); err != nil {
		return err
	}
	s1, err := b.capSnap(ctx, w.pid())
	if err != nil {
		return err
	}
	for b.calls.count()-from < n {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !w.running() {
			return fmt.Errorf("%s exited: %w\n%s", w.name, w.exitErr(), w.logTail())
		}
		if time.Since(start) > 5*time.Minute {
			return fmt.Errorf("%d of %d closes after 5 minutes", b.calls.count()-from, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := b.checkClosed(ctx, n, early0); err != nil {
		return err
	}
	s2, err := b.capSnap(ctx, w.pid())
	if err != nil {
		return err
	}
	if err := w.shutdown(); err != nil {
		return err
	}
	enq := capDiff(s0, s1)
	run := capDiff(s1, s2).minus(idle1)
	all := capDiff(s0, s2).minus(idle1)
	per := func(v float64) float64 { return v / float64(n) }
	b.report.add(row{
		Key: "capacity.commands_per_close", Figure: "Redis commands per close, enqueue to completion",
		Value: per(all.calls), Unit: "commands", Text: fmt.Sprintf("%.1f commands (%.1f script calls)", per(all.calls), per(all.scripts)),
		Details: fmt.Sprintf("%d closes due over %s, enqueued by %d goroutines while a v3 worker (concurrency %d) ran; idle polling subtracted. "+
			"Lua-internal commands count as Redis work; evalsha is one round trip each. Enqueue: %.1f commands, %.1f script calls [%s]. Forward, dequeue, run, complete: %.1f commands, %.1f script calls [%s]",
			n, capacityDueSpread, enqueueConcurrency, b.o.concurrency,
			per(enq.calls), per(enq.scripts), commandsPer(enq.calls0, enq.calls1, n),
			per(run.calls), per(run.scripts), commandsPer(run.calls0, run.calls1, n)),
	})
	b.report.add(row{
		Key: "capacity.bytes_per_close", Figure: "Redis network bytes per close, enqueue to completion",
		Value: per(all.bytes), Unit: "bytes", Text: thousands(per(all.bytes)) + " B",
		Details: fmt.Sprintf("in + out: enqueue %s B, the rest %s B (idle polling subtracted)", thousands(per(enq.bytes)), thousands(per(run.bytes))),
	})
	redisPerClose := time.Duration(per(float64(all.redisCPU)))
	b.report.add(row{
		Key: "capacity.closes_per_redis_cpu_s", Figure: "closes/s one Redis node can carry (its CPU per close)",
		Value: 1 / redisPerClose.Seconds(), Unit: "closes/s", Text: thousands(1/redisPerClose.Seconds()) + " closes/s",
		Details: fmt.Sprintf("Redis CPU per close %s (enqueue %s, the rest %s); Redis runs commands on one thread, so this is one node at 100 %% of a core",
			perOp(all.redisCPU, n), perOp(enq.redisCPU, n), perOp(run.redisCPU, n)),
	})
	if err := b.measureCancelCost(ctx); err != nil {
		return err
	}
	workerPerClose := time.Duration(per(float64(run.workerCPU)))
	b.report.add(row{
		Key: "capacity.closes_per_worker_cpu_s", Figure: "v3 closes/s per worker CPU (its CPU per close)",
		Value: 1 / workerPerClose.Seconds(), Unit: "closes/s", Text: thousands(1/workerPerClose.Seconds()) + " closes/s",
		Details: fmt.Sprintf("worker CPU per close %s, RSA-2048 signing included (idle polling subtracted)", perOp(run.workerCPU, n)),
	})
	return nil
}

// measureCancelCost measures what cancelling a waiting close costs Redis:
// the checkout service's call when an order is paid, as frequent as
// enqueues for a merchant whose payers mostly pay.
func (b *bench) measureCancelCost(ctx context.Context) error {
	if err := b.redis.reset(ctx); err != nil {
		return err
	}
	b.producer = tasks.NewProducerFromRedisClient(b.redis.rdb, tasks.ProducerConfig{MchID: b.creds.MchID})
	n := b.o.orders
	orders := b.orders('K', n, justNow, false)
	if _, err := enqueueAll(ctx, b.producer, orders); err != nil {
		return err
	}
	s0, err := b.capSnap(ctx, 0)
	if err != nil {
		return err
	}
	if err := inParallel(ctx, n, func(i int) error {
		return b.producer.CancelClose(ctx, tasks.OrderRef{OutTradeNo: orders[i].OutTradeNo})
	}); err != nil {
		return fmt.Errorf("cancel: %w", err)
	}
	s1, err := b.capSnap(ctx, 0)
	if err != nil {
		return err
	}
	d := capDiff(s0, s1)
	per := func(v float64) float64 { return v / float64(n) }
	b.report.add(row{
		Key: "capacity.cancel_cost", Figure: "Redis cost of cancelling a waiting close (tasks.Producer.CancelClose)",
		Value: per(d.calls), Unit: "commands", Text: fmt.Sprintf("%.1f commands, %s B, %s CPU", per(d.calls), thousands(per(d.bytes)), perOp(d.redisCPU, n)),
		Details: fmt.Sprintf("%d cancels by %d goroutines: %.1f script calls each [%s]", n, enqueueConcurrency, per(d.scripts), commandsPer(d.calls0, d.calls1, n)),
	})
	return nil
}
