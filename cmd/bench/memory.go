package main

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/wxclose/wxclose/tasks"
)

// memoryVariant is one Redis configuration whose bytes per scheduled close
// the memory section measures, each on a fresh private server.
type memoryVariant struct {
	name     string
	settings []string // name, value pairs
}

// memoryVariants: Redis' defaults and the recommended settings (the figure
// issue 8 targets). Also tried, with no effect on bytes per scheduled close
// (within 1 B): hash-max-listpack-value 1024, hash-max-listpack-entries 8,
// zset-max-listpack-entries 1024 (the scheduled set is far larger anyway)
// and activerehashing no.
var memoryVariants = []memoryVariant{
	{"Redis defaults", nil},
	{strings.Join(recommendedRedis, " ") + " (recommended)", recommendedRedis},
}

// measureMemory measures Redis used_memory growth per scheduled close.
// With a private server every variant runs on a fresh server; with
// -redis=env only that server's own settings are measured.
func (b *bench) measureMemory(ctx context.Context) error {
	m := b.o.memoryCloses
	if !b.redis.owned {
		per, sample, err := b.memoryPerClose(ctx, b.redis, m)
		if err != nil {
			return err
		}
		b.report.add(row{
			Key: "memory.bytes_per_scheduled_close", Figure: "Redis bytes per scheduled close (REDIS_URL's settings)",
			Value: per, Unit: "B", Text: thousands(per) + " B", Target: "≤ 600 B", Met: met(per <= 600),
			Details: sample,
		})
		return nil
	}
	var defaults float64
	for i, v := range memoryVariants {
		r, err := startRedis(ctx, b.procs, b.dir, fmt.Sprintf("redis-memory-%d", i), v.settings)
		if err != nil {
			return err
		}
		per, sample, err := b.memoryPerClose(ctx, r, m)
		r.close()
		if err != nil {
			return fmt.Errorf("%s: %w", v.name, err)
		}
		x := row{
			Key: "memory.variant." + fmt.Sprint(i), Figure: "Redis bytes per scheduled close, " + v.name,
			Value: per, Unit: "B", Text: thousands(per) + " B", Details: sample,
		}
		if i == 0 {
			defaults = per
		} else {
			x.Baseline, x.BaselineValue, x.Ratio = "Redis defaults "+thousands(defaults)+" B", defaults, per/defaults
		}
		if strings.Join(v.settings, " ") == strings.Join(recommendedRedis, " ") {
			x.Key, x.Target, x.Met = "memory.bytes_per_scheduled_close", "≤ 600 B", met(per <= 600)
		}
		b.report.add(x)
	}
	return nil
}

// memoryPerClose enqueues m scheduled closes through the producer into the
// empty server r and returns the used_memory growth per close, with a
// description of one task's storage.
func (b *bench) memoryPerClose(ctx context.Context, r *redisServer, m int) (float64, string, error) {
	p := tasks.NewProducerFromRedisClient(r.rdb, tasks.ProducerConfig{MchID: b.creds.MchID})
	// Open the connections the enqueue will use first, so that their
	// buffers are not counted.
	var wg sync.WaitGroup
	for range enqueueConcurrency {
		wg.Go(func() { r.rdb.Ping(ctx) })
	}
	wg.Wait()
	before, err := r.usedMemory(ctx)
	if err != nil {
		return 0, "", err
	}
	orders := b.orders('M', m, justNow, false)
	if _, err := enqueueAll(ctx, p, orders); err != nil {
		return 0, "", err
	}
	after, err := r.usedMemory(ctx)
	if err != nil {
		return 0, "", err
	}
	key := "asynq:{" + tasks.QueueClose + "}:t:" + tasks.CloseTaskID(tasks.OrderRef{OutTradeNo: orders[0].OutTradeNo, MchID: b.creds.MchID})
	enc, _ := r.rdb.ObjectEncoding(ctx, key).Result()
	msgLen, _ := r.rdb.Do(ctx, "HSTRLEN", key, "msg").Int64()
	keyMem, _ := r.rdb.MemoryUsage(ctx, key, 0).Result()
	zsetMem, _ := r.rdb.MemoryUsage(ctx, "asynq:{"+tasks.QueueClose+"}:scheduled", 0).Result()
	sample := fmt.Sprintf("%d closes; one task: key %d B, hash %s, msg field %d B, MEMORY USAGE %d B; scheduled zset %d B per entry",
		m, len(key), enc, msgLen, keyMem, zsetMem/int64(m))
	return float64(after-before) / float64(m), sample, nil
}
