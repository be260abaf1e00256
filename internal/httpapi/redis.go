package httpapi

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// boundedRedis opens the API's own Redis client, on which no call can take
// much longer than timeout: a request must get a 503 quickly when Redis is
// down or hung, never hang with it.
//
// Two mechanisms are needed because asynq's Inspector calls Redis with
// context.Background() and go-redis ignores context deadlines on socket
// reads and writes unless ContextTimeoutEnabled is set (which asynq's
// connection options cannot set):
//   - the dial, read and write timeouts of the connection options are capped
//     at timeout, which bounds every socket operation;
//   - a hook gives every command and dial a context deadline of timeout
//     (or the caller's, if sooner), which bounds the wait for a pooled
//     connection and stops go-redis's retries once the time is spent.
//
// So one command takes at most about timeout plus a retry back-off, and
// the API's requests make at most three commands.
func boundedRedis(opt asynq.RedisConnOpt, timeout time.Duration) (redis.UniversalClient, error) {
	// Pointer forms are copied first, so the caller's options are never changed.
	switch o := opt.(type) {
	case *asynq.RedisClientOpt:
		opt = *o
	case *asynq.RedisFailoverClientOpt:
		opt = *o
	case *asynq.RedisClusterClientOpt:
		opt = *o
	}
	switch o := opt.(type) {
	case asynq.RedisClientOpt:
		o.DialTimeout, o.ReadTimeout, o.WriteTimeout = capAt(o.DialTimeout, timeout), capAt(o.ReadTimeout, timeout), capAt(o.WriteTimeout, timeout)
		opt = o
	case asynq.RedisFailoverClientOpt:
		o.DialTimeout, o.ReadTimeout, o.WriteTimeout = capAt(o.DialTimeout, timeout), capAt(o.ReadTimeout, timeout), capAt(o.WriteTimeout, timeout)
		opt = o
	case asynq.RedisClusterClientOpt:
		o.DialTimeout, o.ReadTimeout, o.WriteTimeout = capAt(o.DialTimeout, timeout), capAt(o.ReadTimeout, timeout), capAt(o.WriteTimeout, timeout)
		opt = o
	}
	rdb, ok := opt.MakeRedisClient().(redis.UniversalClient)
	if !ok {
		return nil, fmt.Errorf("httpapi: unsupported Redis connection option %T", opt)
	}
	rdb.AddHook(deadlineHook{timeout: timeout})
	return rdb, nil
}

// capAt returns d, or limit when d is unset (0, go-redis's default of
// several seconds), negative (no timeout) or longer than limit.
func capAt(d, limit time.Duration) time.Duration {
	if d <= 0 || d > limit {
		return limit
	}
	return d
}

// deadlineHook gives every Redis command, pipeline and dial a deadline.
type deadlineHook struct{ timeout time.Duration }

func (h deadlineHook) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if d, ok := ctx.Deadline(); ok && time.Until(d) <= h.timeout {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, h.timeout)
}

func (h deadlineHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		ctx, cancel := h.bound(ctx)
		defer cancel()
		return next(ctx, network, addr)
	}
}

func (h deadlineHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		ctx, cancel := h.bound(ctx)
		defer cancel()
		return next(ctx, cmd)
	}
}

func (h deadlineHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		ctx, cancel := h.bound(ctx)
		defer cancel()
		return next(ctx, cmds)
	}
}
