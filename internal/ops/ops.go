// Package ops is the logic behind the enqueue operator command: enqueueing
// one order or a JSON Lines file of orders, cancelling, inspecting, listing
// and replaying close tasks. Functions write their human-readable or JSON
// output to writers they are given, so the command itself is only flag
// parsing, and everything here can be tested against a real Redis.
package ops

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/wxclose/wxclose/internal/redisurl"
	"github.com/wxclose/wxclose/tasks"
)

// DefaultConcurrency is the number of concurrent Redis operations of bulk
// enqueue and replay when their Concurrency option is zero.
const DefaultConcurrency = 16

// ErrUsage is wrapped by errors caused by the operator's options (a missing
// filter, an unknown state, conflicting flags), as opposed to failures of
// Redis or of individual orders.
var ErrUsage = errors.New("usage error")

// Client runs operator commands against one Redis. It is safe for
// concurrent use.
type Client struct {
	rdb       redis.UniversalClient // closed by Close when owned
	owned     bool
	producer  *tasks.Producer
	inspector *asynq.Inspector
	mchID     string
	now       func() time.Time
}

// New returns a Client using rdb, which the caller keeps owning. cfg
// configures the Producer used to enqueue and replay; cfg.MchID is also the
// merchant assumed by Cancel and Status when an OrderRef has none.
func New(rdb redis.UniversalClient, cfg tasks.ProducerConfig) *Client {
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return &Client{
		rdb:       rdb,
		producer:  tasks.NewProducerFromRedisClient(rdb, cfg),
		inspector: asynq.NewInspectorFromRedisClient(rdb),
		mchID:     cfg.MchID,
		now:       now,
	}
}

// Dial parses redisURL (redis://, rediss://, redis-socket://,
// redis-sentinel:// or redis-cluster://, as redisurl.Parse reads them),
// checks that Redis
// answers, and returns a Client that owns the connection. Errors never
// repeat any part of the URL, which may contain a password; a URL that
// does not parse gives an error wrapping ErrUsage and redisurl.ErrInvalid.
func Dial(ctx context.Context, redisURL string, cfg tasks.ProducerConfig) (*Client, error) {
	opt, err := redisurl.Parse(redisURL)
	if err != nil {
		// redisurl's errors never quote the URL.
		return nil, fmt.Errorf("%w: the Redis URL (--redis or REDIS_URL) is %w", ErrUsage, err)
	}
	rdb, ok := opt.MakeRedisClient().(redis.UniversalClient)
	if !ok {
		return nil, fmt.Errorf("%w: unsupported Redis URL type %T", ErrUsage, opt)
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("cannot reach Redis at %s: %v; check --redis or REDIS_URL", redisAddr(opt), err)
	}
	c := New(rdb, cfg)
	c.owned = true
	return c, nil
}

func redisAddr(opt asynq.RedisConnOpt) string {
	switch o := opt.(type) {
	case asynq.RedisClientOpt:
		return o.Addr
	case asynq.RedisFailoverClientOpt:
		return "sentinel " + o.MasterName + "@" + strings.Join(o.SentinelAddrs, ",")
	case asynq.RedisClusterClientOpt:
		return strings.Join(o.Addrs, ",")
	}
	return "the configured address"
}

// Close releases the Redis connection if the Client opened it.
func (c *Client) Close() error {
	if c.owned {
		return c.rdb.Close()
	}
	return nil
}

// Enqueue schedules the close of one order; see tasks.Producer.EnqueueClose.
func (c *Client) Enqueue(ctx context.Context, o tasks.CloseOrder) (tasks.Scheduled, error) {
	return c.producer.EnqueueClose(ctx, o)
}

// Cancel removes the pending close of an order whose payment was confirmed.
// It returns errors wrapping tasks.ErrNoClose, tasks.ErrCloseInProgress or
// tasks.ErrCloseFinished as tasks.Producer.CancelClose does, and
// tasks.ErrInvalidPayload for a malformed reference. It returns the id of
// the removed task.
func (c *Client) Cancel(ctx context.Context, ref tasks.OrderRef) (string, error) {
	ref = c.withMchID(ref)
	if err := c.producer.CancelClose(ctx, ref); err != nil {
		return "", err
	}
	return tasks.CloseTaskID(ref), nil
}

func (c *Client) withMchID(ref tasks.OrderRef) tasks.OrderRef {
	if ref.MchID == "" {
		ref.MchID = c.mchID
	}
	return ref
}

// Message returns err's text without the "invalid close order: " or
// "usage error: " prefix, so a line reads "out_trade_no \"x\" must be ...".
func Message(err error) string {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, tasks.ErrInvalidPayload.Error()+": ")
	return strings.TrimPrefix(msg, ErrUsage.Error()+": ")
}

// formatTime prints t in RFC 3339 with the local zone, or "-" when zero.
func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format(time.RFC3339)
}

// describeDue says when a close runs, relative to now.
func describeDue(due, now time.Time) string {
	if due.IsZero() {
		return "not waiting to run"
	}
	d := due.Sub(now).Round(time.Second)
	if d <= 0 {
		return "due " + formatTime(due) + " (runs now)"
	}
	return "due " + formatTime(due) + " (in " + d.String() + ")"
}
