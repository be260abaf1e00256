// Package consumer runs the asynq server that takes close tasks off the
// close queues: every shard of the configured layout (WXCLOSE_SHARDS, see
// tasks.CloseQueues), with equal weight, and any other close queue that
// still holds work, left over from another number of shards.
//
// asynq fixes a server's queues when it is built. Close tasks of a layout
// that is being replaced keep waiting in their queues (close_order, or
// close_order:<n> of the old count) for up to days, and a producer not yet
// switched may add more; a worker that consumed only its own layout would
// leave them behind. So the Consumer looks at asynq's queue set at start
// and every Interval, and when the close queues holding work change it
// starts a server for the new set and then shuts the old one down
// gracefully (its in-flight closes finish or go back to their queue, as at
// any shutdown). A queue outside the layout is dropped once it holds
// nothing to run (no pending, active, scheduled or retry task); archived
// tasks brought back by replay make it hold work again, and it is consumed
// again from the next look.
package consumer

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/wxclose/wxclose/tasks"
)

// DefaultInterval is how often the close queues are looked at when
// Options.Interval is zero. Closes are due five minutes after they are
// enqueued at the earliest, so a queue found this late still runs its
// closes on time; only a replayed close in a queue that was dropped waits
// up to this long.
const DefaultInterval = 30 * time.Second

// Options configures a Consumer.
type Options struct {
	// Redis holds the queues. Required; the Consumer never closes it.
	Redis redis.UniversalClient
	// Config is the asynq configuration of every server the Consumer
	// starts; its Queues field is replaced by the close queues (weight 1
	// each).
	Config asynq.Config
	// Shards is the number of close queues of the layout (WXCLOSE_SHARDS).
	// If zero, 1.
	Shards int
	// Interval is how often the close queues holding work are looked for.
	// If zero, DefaultInterval.
	Interval time.Duration
	// Logger receives a line each time the consumed queues change. If zero,
	// logging is off.
	Logger zerolog.Logger
}

// Consumer consumes the close queues. Start it once; Shutdown stops it.
type Consumer struct {
	opts      Options
	layout    []string
	inspector *asynq.Inspector

	mu      sync.Mutex
	server  *asynq.Server
	queues  []string
	handler asynq.Handler

	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

// New returns a Consumer. It does not touch Redis.
func New(opts Options) *Consumer {
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	return &Consumer{
		opts:      opts,
		layout:    tasks.CloseQueues(opts.Shards),
		inspector: asynq.NewInspectorFromRedisClient(opts.Redis),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
}

// Start looks for close queues holding work, starts consuming them and the
// layout's queues with h, and keeps looking every Interval until Shutdown.
// It fails if the first server cannot start (Redis unreachable).
func (c *Consumer) Start(h asynq.Handler) error {
	queues := c.discover()
	srv := c.newServer(queues)
	if err := srv.Start(h); err != nil {
		return err
	}
	c.mu.Lock()
	c.server, c.queues, c.handler = srv, queues, h
	c.mu.Unlock()
	c.logQueues(queues, nil)
	go c.watch()
	return nil
}

// Shutdown stops looking for queues and shuts the server down gracefully:
// in-flight closes get the configured ShutdownTimeout to finish, the rest go
// back to their queues.
// Calling it before Start, or twice, is harmless.
func (c *Consumer) Shutdown() {
	c.stopOnce.Do(func() { close(c.stop) })
	c.mu.Lock()
	started := c.server != nil
	c.mu.Unlock()
	if !started {
		return
	}
	<-c.done
	c.mu.Lock()
	srv := c.server
	c.server = nil
	c.mu.Unlock()
	if srv != nil {
		srv.Shutdown()
	}
}

// Queues returns the close queues being consumed, sorted.
func (c *Consumer) Queues() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.queues)
}

func (c *Consumer) newServer(queues []string) *asynq.Server {
	cfg := c.opts.Config
	cfg.Queues = make(map[string]int, len(queues))
	for _, q := range queues {
		cfg.Queues[q] = 1
	}
	return asynq.NewServerFromRedisClient(c.opts.Redis, cfg)
}

func (c *Consumer) watch() {
	defer close(c.done)
	tick := time.NewTicker(c.opts.Interval)
	defer tick.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-tick.C:
		}
		queues := c.discover()
		c.mu.Lock()
		same := slices.Equal(queues, c.queues)
		c.mu.Unlock()
		if !same {
			c.swap(queues)
		}
	}
}

// swap starts a server for queues, then shuts the previous one down, so
// that no queue goes unconsumed in between.
func (c *Consumer) swap(queues []string) {
	srv := c.newServer(queues)
	if err := srv.Start(c.handler); err != nil {
		// The current server keeps running; the next look tries again.
		c.opts.Logger.Warn().Str("component", "consumer").Err(err).Strs("queues", queues).
			Msg("could not start consuming the changed close queues; keeping the current ones")
		return
	}
	c.mu.Lock()
	old, oldQueues := c.server, c.queues
	c.server, c.queues = srv, queues
	c.mu.Unlock()
	c.logQueues(queues, oldQueues)
	old.Shutdown()
}

func (c *Consumer) logQueues(queues, old []string) {
	var extra []string
	for _, q := range queues {
		if !slices.Contains(c.layout, q) {
			extra = append(extra, q)
		}
	}
	ev := c.opts.Logger.Info().Str("component", "consumer").Int("shards", len(c.layout)).
		Str("queues", strings.Join(queues, ","))
	if len(extra) > 0 {
		ev = ev.Str("outside_layout", strings.Join(extra, ","))
	}
	if old != nil {
		ev = ev.Str("previous_queues", strings.Join(old, ","))
	}
	ev.Msg("consuming close queues")
}

// discover returns the queues to consume now. A failure to read asynq's
// queue set keeps the queues outside the layout already consumed: dropping
// one on a read error could strand its closes until the next look.
func (c *Consumer) discover() []string {
	c.mu.Lock()
	current := slices.Clone(c.queues)
	c.mu.Unlock()
	existing, err := tasks.ExistingCloseQueues(c.inspector)
	if err != nil {
		c.opts.Logger.Warn().Str("component", "consumer").Err(err).Msg("could not list the close queues; consuming the same ones")
		return Plan(c.layout, nil, current)
	}
	var states []QueueState
	for _, q := range existing {
		if slices.Contains(c.layout, q) {
			continue
		}
		states = append(states, c.state(q))
	}
	return Plan(c.layout, states, current)
}

// state reads whether a queue outside the layout holds work.
func (c *Consumer) state(q string) QueueState {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	type result struct {
		info *asynq.QueueInfo
		err  error
	}
	ch := make(chan result, 1)
	// asynq's Inspector takes no context; bound the wait, not the call.
	go func() {
		info, err := c.inspector.GetQueueInfo(q)
		ch <- result{info, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			c.opts.Logger.Warn().Str("component", "consumer").Str("queue", q).Err(r.err).
				Msg("could not read a close queue's size; treating it as holding work")
			return QueueState{Queue: q, Unknown: true}
		}
		return QueueState{Queue: q, Work: r.info.Pending + r.info.Active + r.info.Scheduled + r.info.Retry}
	case <-ctx.Done():
		c.opts.Logger.Warn().Str("component", "consumer").Str("queue", q).
			Msg("reading a close queue's size timed out; treating it as holding work")
		return QueueState{Queue: q, Unknown: true}
	}
}

// QueueState is what Plan needs to know of a close queue outside the
// layout.
type QueueState struct {
	Queue string
	// Work is the number of tasks that still have to run: pending, active,
	// scheduled and retry.
	Work int
	// Unknown is true when the queue could not be read.
	Unknown bool
}

// Plan decides which close queues to consume: every queue of the layout,
// and each other close queue that holds work or could not be read (a queue
// is only dropped when it is known to be idle). Without states (the queue
// set could not be read), the queues outside the layout in current are
// kept. The result is sorted.
func Plan(layout []string, states []QueueState, current []string) []string {
	queues := slices.Clone(layout)
	if states == nil {
		for _, q := range current {
			if !slices.Contains(queues, q) {
				queues = append(queues, q)
			}
		}
	}
	for _, s := range states {
		if (s.Work > 0 || s.Unknown) && !slices.Contains(queues, s.Queue) {
			queues = append(queues, s.Queue)
		}
	}
	slices.Sort(queues)
	return queues
}

// String describes the consumer for the startup log.
func (c *Consumer) String() string {
	return fmt.Sprintf("close queues %s (every %s: other close queues holding work)", strings.Join(c.layout, ","), c.opts.Interval)
}
