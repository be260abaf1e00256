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
//
// # Dequeue loops
//
// An asynq server takes tasks off Redis in one loop, one task per Redis
// round trip, however many of its Concurrency slots are free. With 50 slots
// that loop, not the slots, bounds a worker: measured with cmd/bench on two
// cores, a bare asynq server with a no-op handler drained about 6,400 tasks/s
// with one loop, 9,500 with two and 11,800 with three, and the worker's v2
// closes went from about 3,000/s to 4,400/s with three, with less CPU per
// close in every process (each wake-up finds more work). So the Consumer
// runs Options.Loops servers over the same queues, splitting the
// concurrency among them; the Asynq UI lists each as a server.
//
// Only the first loop polls at the configured intervals. Every asynq server
// also forwards due tasks, polls empty queues and sweeps expired ones, each
// per queue; run as often by every loop, a worker idling with three loops
// cost Redis three times the commands of one (cmd/bench's capacity
// section: 154 commands/s with one queue, 147 per extra queue). The loops
// live and die together in one process, so the first one's forwarder and
// janitor serve them all; the others poll empty queues and forward at
// asynq's defaults, and a busy loop never sleeps, so throughput under load
// is unchanged (see LoopConfigs).
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
	// Loops is the number of asynq servers (dequeue loops) consuming the
	// same queues, each with its share of Config.Concurrency. If zero,
	// DefaultLoops(Config.Concurrency); at most Config.Concurrency.
	Loops int
	// Logger receives a line each time the consumed queues change. If zero,
	// logging is off.
	Logger zerolog.Logger
}

// MaxDefaultLoops caps DefaultLoops: on two cores a fourth loop no longer
// added throughput, and every loop polls Redis while its queues are empty.
const MaxDefaultLoops = 4

// slotsPerLoop is how many concurrency slots one dequeue loop feeds by
// default.
const slotsPerLoop = 16

// DefaultLoops is the number of dequeue loops for a concurrency: one per 16
// slots, at least 1 and at most MaxDefaultLoops.
func DefaultLoops(concurrency int) int {
	return min(max(concurrency/slotsPerLoop, 1), MaxDefaultLoops)
}

// SplitConcurrency divides total slots among loops servers as evenly as
// possible (sizes differ by at most one, larger first). loops is clamped to
// 1..total, so no server gets zero slots, which asynq would read as "one
// per CPU". A total of zero or less is asynq's own default, kept as one
// server.
func SplitConcurrency(total, loops int) []int {
	if total <= 0 {
		return []int{total}
	}
	loops = min(max(loops, 1), total)
	sizes := make([]int, loops)
	for i := range sizes {
		sizes[i] = total / loops
		if i < total%loops {
			sizes[i]++
		}
	}
	return sizes
}

// The polling floors of every loop but the first. Work is never late
// because of them: the first loop forwards due tasks and polls empty
// queues at the worker's own intervals; the others join in within about
// helperTaskCheckInterval when work appears after an idle spell.
const (
	helperTaskCheckInterval        = time.Second     // asynq's default
	helperDelayedTaskCheckInterval = 5 * time.Second // asynq's default
	helperJanitorInterval          = time.Minute     // asynq's default is 8 s
)

// LoopConfigs returns the asynq configuration of each of loops servers
// sharing cfg (see SplitConcurrency for the number): cfg with its share of
// the concurrency, and, for every server but the first, the polling
// intervals raised to at least the helper floors. Zero intervals mean
// asynq's defaults, which the floors are not below.
func LoopConfigs(cfg asynq.Config, loops int) []asynq.Config {
	var cfgs []asynq.Config
	for i, slots := range SplitConcurrency(cfg.Concurrency, loops) {
		c := cfg
		c.Concurrency = slots
		if i > 0 {
			c.TaskCheckInterval = max(c.TaskCheckInterval, helperTaskCheckInterval)
			c.DelayedTaskCheckInterval = max(c.DelayedTaskCheckInterval, helperDelayedTaskCheckInterval)
			c.JanitorInterval = max(c.JanitorInterval, helperJanitorInterval)
		}
		cfgs = append(cfgs, c)
	}
	return cfgs
}

// Consumer consumes the close queues. Start it once; Shutdown stops it.
type Consumer struct {
	opts      Options
	layout    []string
	inspector *asynq.Inspector

	mu      sync.Mutex
	servers servers // nil until Start and after Shutdown
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
	srv := c.newServers(queues)
	if err := srv.start(h); err != nil {
		return err
	}
	c.mu.Lock()
	c.servers, c.queues, c.handler = srv, queues, h
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
	started := c.servers != nil
	c.mu.Unlock()
	if !started {
		return
	}
	<-c.done
	c.mu.Lock()
	srv := c.servers
	c.servers = nil
	c.mu.Unlock()
	srv.shutdown()
}

// Queues returns the close queues being consumed, sorted.
func (c *Consumer) Queues() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.queues)
}

// Loops returns the number of dequeue loops (asynq servers) the Consumer
// runs.
func (c *Consumer) Loops() int {
	return len(SplitConcurrency(c.opts.Config.Concurrency, c.loops()))
}

func (c *Consumer) loops() int {
	if c.opts.Loops > 0 {
		return c.opts.Loops
	}
	return DefaultLoops(c.opts.Config.Concurrency)
}

func (c *Consumer) newServers(queues []string) servers {
	var group servers
	for _, cfg := range LoopConfigs(c.opts.Config, c.loops()) {
		cfg.Queues = make(map[string]int, len(queues))
		for _, q := range queues {
			cfg.Queues[q] = 1
		}
		group = append(group, asynq.NewServerFromRedisClient(c.opts.Redis, cfg))
	}
	return group
}

// servers are the dequeue loops over one set of queues, started and shut
// down together.
type servers []*asynq.Server

// start starts every server; if one fails, those already started are shut
// down again, so a failed start leaves nothing consuming.
func (g servers) start(h asynq.Handler) error {
	for i, srv := range g {
		if err := srv.Start(h); err != nil {
			g[:i].shutdown()
			return err
		}
	}
	return nil
}

// shutdown shuts the servers down in parallel, so that a shutdown waits for
// the in-flight closes once (ShutdownTimeout), not once per loop.
func (g servers) shutdown() {
	var wg sync.WaitGroup
	for _, srv := range g {
		wg.Go(srv.Shutdown)
	}
	wg.Wait()
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

// swap starts servers for queues, then shuts the previous ones down, so
// that no queue goes unconsumed in between.
func (c *Consumer) swap(queues []string) {
	srv := c.newServers(queues)
	if err := srv.start(c.handler); err != nil {
		// The current server keeps running; the next look tries again.
		c.opts.Logger.Warn().Str("component", "consumer").Err(err).Strs("queues", queues).
			Msg("could not start consuming the changed close queues; keeping the current ones")
		return
	}
	c.mu.Lock()
	old, oldQueues := c.servers, c.queues
	c.servers, c.queues = srv, queues
	c.mu.Unlock()
	c.logQueues(queues, oldQueues)
	old.shutdown()
}

func (c *Consumer) logQueues(queues, old []string) {
	var extra []string
	for _, q := range queues {
		if !slices.Contains(c.layout, q) {
			extra = append(extra, q)
		}
	}
	ev := c.opts.Logger.Info().Str("component", "consumer").Int("shards", len(c.layout)).
		Int("dequeue_loops", c.Loops()).Str("queues", strings.Join(queues, ","))
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
	return fmt.Sprintf("close queues %s (every %s: other close queues holding work), %d dequeue loop(s)", strings.Join(c.layout, ","), c.opts.Interval, c.Loops())
}
