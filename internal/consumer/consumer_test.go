package consumer_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/wxclose/wxclose/internal/consumer"
	"github.com/wxclose/wxclose/internal/redistest"
	"github.com/wxclose/wxclose/tasks"
)

func TestPlan(t *testing.T) {
	four := tasks.CloseQueues(4)
	tests := []struct {
		name    string
		layout  []string
		states  []consumer.QueueState
		current []string
		want    string
	}{
		{"layout only", four, []consumer.QueueState{}, nil, "close_order:0,close_order:1,close_order:2,close_order:3"},
		{"old queue with work", four, []consumer.QueueState{{Queue: "close_order", Work: 3}}, nil,
			"close_order,close_order:0,close_order:1,close_order:2,close_order:3"},
		{"old queue idle is dropped", four, []consumer.QueueState{{Queue: "close_order"}},
			[]string{"close_order", "close_order:0", "close_order:1", "close_order:2", "close_order:3"},
			"close_order:0,close_order:1,close_order:2,close_order:3"},
		{"unreadable queue is kept", four, []consumer.QueueState{{Queue: "close_order", Unknown: true}}, nil,
			"close_order,close_order:0,close_order:1,close_order:2,close_order:3"},
		{"queue set unreadable: keep current", tasks.CloseQueues(1), nil, []string{"close_order", "close_order:7"},
			"close_order,close_order:7"},
		{"shrinking: old shards with work", tasks.CloseQueues(2),
			[]consumer.QueueState{{Queue: "close_order:2", Work: 1}, {Queue: "close_order:3"}}, nil,
			"close_order:0,close_order:1,close_order:2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := strings.Join(consumer.Plan(tc.layout, tc.states, tc.current), ","); got != tc.want {
				t.Errorf("Plan = %s, want %s", got, tc.want)
			}
		})
	}
}

// recorder is a handler that remembers which queue each task came from.
type recorder struct {
	mu   sync.Mutex
	seen map[string]string // task id -> queue
}

func (r *recorder) ProcessTask(ctx context.Context, _ *asynq.Task) error {
	id, _ := asynq.GetTaskID(ctx)
	q, _ := asynq.GetQueueName(ctx)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen[id] = q
	return nil
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seen)
}

func (r *recorder) queues() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var qs []string
	for _, q := range r.seen {
		if !slices.Contains(qs, q) {
			qs = append(qs, q)
		}
	}
	slices.Sort(qs)
	return qs
}

// waitFor polls cond; the deadline only bounds a broken run.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func asynqConfig() asynq.Config {
	return asynq.Config{
		Concurrency: 4, DelayedTaskCheckInterval: 100 * time.Millisecond, TaskCheckInterval: 50 * time.Millisecond,
		ShutdownTimeout: 5 * time.Second, LogLevel: asynq.FatalLevel,
	}
}

// enqueueDue puts n close-type tasks, due now, into the queues a producer
// with the given number of shards would use.
func enqueueDue(t *testing.T, client *asynq.Client, prefix string, n, shards int) {
	t.Helper()
	for i := range n {
		id := fmt.Sprintf("close:_:out_trade_no:%s-%d", prefix, i)
		if _, err := client.Enqueue(asynq.NewTask(tasks.TypeClose, []byte("{}")), asynq.TaskID(id), asynq.Queue(tasks.CloseQueue(id, shards))); err != nil {
			t.Fatal(err)
		}
	}
}

// TestConsumesLeftoverQueuesUntilEmpty: a worker switched to 4 shards
// still runs the closes waiting in close_order (the 1-shard layout), and
// stops consuming close_order once it is empty.
func TestConsumesLeftoverQueuesUntilEmpty(t *testing.T) {
	srv := redistest.Start(t)
	client := asynq.NewClientFromRedisClient(srv.Client())
	enqueueDue(t, client, "OLD", 20, 1)

	rec := &recorder{seen: map[string]string{}}
	// Two dequeue loops: the swap replaces both servers at once.
	c := consumer.New(consumer.Options{Redis: srv.Client(), Config: asynqConfig(), Shards: 4, Interval: 100 * time.Millisecond, Loops: 2})
	if err := c.Start(rec); err != nil {
		t.Fatal(err)
	}
	defer c.Shutdown()
	if got := c.Queues(); !slices.Contains(got, tasks.QueueClose) || len(got) != 5 {
		t.Fatalf("Queues at start = %v, want close_order and the 4 shards", got)
	}
	enqueueDue(t, client, "NEW", 20, 4)
	waitFor(t, "40 tasks", func() bool { return rec.count() == 40 })
	if got := strings.Join(rec.queues(), ","); got != "close_order,close_order:0,close_order:1,close_order:2,close_order:3" {
		t.Errorf("tasks came from %s", got)
	}
	waitFor(t, "close_order to be dropped", func() bool { return !slices.Contains(c.Queues(), tasks.QueueClose) })
	if got := c.Queues(); len(got) != 4 {
		t.Errorf("Queues after draining = %v, want the 4 shards", got)
	}
	// The old servers are gone, the new ones consume only the shards.
	waitFor(t, "two servers on the 4 shards", func() bool {
		infos, err := asynq.NewInspectorFromRedisClient(srv.Client()).Servers()
		if err != nil || len(infos) != 2 {
			return false
		}
		for _, info := range infos {
			if _, old := info.Queues[tasks.QueueClose]; old || len(info.Queues) != 4 {
				return false
			}
		}
		return true
	})
}

func TestDefaultLoops(t *testing.T) {
	for _, tt := range []struct{ concurrency, want int }{
		{0, 1}, {1, 1}, {10, 1}, {16, 1}, {31, 1}, {32, 2}, {50, 3}, {64, 4}, {100, 4}, {1000, consumer.MaxDefaultLoops},
	} {
		if got := consumer.DefaultLoops(tt.concurrency); got != tt.want {
			t.Errorf("DefaultLoops(%d) = %d, want %d", tt.concurrency, got, tt.want)
		}
	}
}

func TestSplitConcurrency(t *testing.T) {
	for _, tt := range []struct {
		total, loops int
		want         []int
	}{
		{50, 3, []int{17, 17, 16}},
		{100, 4, []int{25, 25, 25, 25}},
		{7, 3, []int{3, 2, 2}},
		{10, 1, []int{10}},
		{2, 5, []int{1, 1}}, // never a server with zero slots
		{5, 0, []int{5}},    // at least one loop
		{5, -2, []int{5}},   // at least one loop
		{0, 3, []int{0}},    // asynq's default (one slot per CPU), one server
		{-1, 3, []int{-1}},  // passed on to asynq as given
		{1, 1, []int{1}},
	} {
		if got := consumer.SplitConcurrency(tt.total, tt.loops); !slices.Equal(got, tt.want) {
			t.Errorf("SplitConcurrency(%d, %d) = %v, want %v", tt.total, tt.loops, got, tt.want)
		}
	}
}

// TestLoopConfigs: the first loop polls at the worker's intervals; the
// others no more often than the helper floors, whatever they were given,
// and every loop keeps the rest of the configuration.
func TestLoopConfigs(t *testing.T) {
	const ms = time.Millisecond
	type intervals struct{ task, delayed, janitor time.Duration }
	worker := intervals{100 * ms, 200 * ms, 0}
	helper := intervals{time.Second, 5 * time.Second, time.Minute}
	for _, tt := range []struct {
		name        string
		concurrency int
		loops       int
		given       intervals
		want        []intervals
	}{
		{"one loop keeps everything", 10, 1, worker, []intervals{worker}},
		{"the worker's defaults, three loops", 50, 3, worker, []intervals{worker, helper, helper}},
		{"asynq's defaults (zero)", 50, 2, intervals{}, []intervals{{}, helper}},
		{"slower than the floors stays slower", 32, 2, intervals{2 * time.Second, 10 * time.Second, 2 * time.Minute},
			[]intervals{{2 * time.Second, 10 * time.Second, 2 * time.Minute}, {2 * time.Second, 10 * time.Second, 2 * time.Minute}}},
		{"more loops than slots", 2, 4, worker, []intervals{worker, helper}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := asynq.Config{
				Concurrency: tt.concurrency, TaskCheckInterval: tt.given.task,
				DelayedTaskCheckInterval: tt.given.delayed, JanitorInterval: tt.given.janitor,
				ShutdownTimeout: 7 * time.Second, StrictPriority: true,
			}
			got := consumer.LoopConfigs(cfg, tt.loops)
			if len(got) != len(tt.want) {
				t.Fatalf("%d configs, want %d", len(got), len(tt.want))
			}
			slots := 0
			for i, c := range got {
				if iv := (intervals{c.TaskCheckInterval, c.DelayedTaskCheckInterval, c.JanitorInterval}); iv != tt.want[i] {
					t.Errorf("loop %d: intervals %v, want %v", i, iv, tt.want[i])
				}
				if c.ShutdownTimeout != cfg.ShutdownTimeout || !c.StrictPriority {
					t.Errorf("loop %d lost the rest of the configuration: %+v", i, c)
				}
				slots += c.Concurrency
			}
			if slots != tt.concurrency {
				t.Errorf("the loops have %d slots in all, want %d", slots, tt.concurrency)
			}
		})
	}
}

// TestLoopsShareTheQueues: three dequeue loops are three asynq servers
// over the same queues with the concurrency split among them; together they
// run every task once, and Shutdown stops all of them.
func TestLoopsShareTheQueues(t *testing.T) {
	srv := redistest.Start(t)
	client := asynq.NewClientFromRedisClient(srv.Client())
	cfg := asynqConfig()
	cfg.Concurrency = 7
	runs := &runCounter{n: map[string]int{}}
	c := consumer.New(consumer.Options{Redis: srv.Client(), Config: cfg, Shards: 2, Loops: 3})
	if c.Loops() != 3 {
		t.Fatalf("Loops() = %d, want 3", c.Loops())
	}
	if err := c.Start(runs); err != nil {
		t.Fatal(err)
	}
	insp := asynq.NewInspectorFromRedisClient(srv.Client())
	var slots []int
	waitFor(t, "three servers", func() bool {
		infos, err := insp.Servers()
		if err != nil || len(infos) != 3 {
			return false
		}
		slots = slots[:0]
		for _, info := range infos {
			if len(info.Queues) != 2 {
				t.Fatalf("a server consumes %v, want the 2 shards", info.Queues)
			}
			slots = append(slots, info.Concurrency)
		}
		return true
	})
	slices.Sort(slots)
	if !slices.Equal(slots, []int{2, 2, 3}) {
		t.Errorf("servers' concurrency = %v, want 2, 2 and 3", slots)
	}
	enqueueDue(t, client, "LOOPS", 300, 2)
	waitFor(t, "300 tasks", func() bool { return runs.total() >= 300 })
	c.Shutdown()
	if dup := runs.repeated(); len(dup) > 0 {
		t.Errorf("tasks run more than once: %v", dup)
	}
	waitFor(t, "no server left", func() bool {
		infos, err := insp.Servers()
		return err == nil && len(infos) == 0
	})
}

// runCounter counts how often each task ran.
type runCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (r *runCounter) ProcessTask(_ context.Context, t *asynq.Task) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n[t.ResultWriter().TaskID()]++
	return nil
}

func (r *runCounter) total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	total := 0
	for _, n := range r.n {
		total += n
	}
	return total
}

func (r *runCounter) repeated() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ids []string
	for id, n := range r.n {
		if n > 1 {
			ids = append(ids, id)
		}
	}
	return ids
}

// TestDiscoversNewQueues: a worker on 1 shard picks up the queues of
// producers that already use 4.
func TestDiscoversNewQueues(t *testing.T) {
	srv := redistest.Start(t)
	client := asynq.NewClientFromRedisClient(srv.Client())
	rec := &recorder{seen: map[string]string{}}
	c := consumer.New(consumer.Options{Redis: srv.Client(), Config: asynqConfig(), Shards: 1, Interval: 100 * time.Millisecond})
	if err := c.Start(rec); err != nil {
		t.Fatal(err)
	}
	defer c.Shutdown()
	if got := c.Queues(); len(got) != 1 || got[0] != tasks.QueueClose {
		t.Fatalf("Queues at start = %v", got)
	}
	enqueueDue(t, client, "AHEAD", 30, 4)
	waitFor(t, "30 tasks", func() bool { return rec.count() == 30 })
	if got := strings.Join(rec.queues(), ","); got != "close_order:0,close_order:1,close_order:2,close_order:3" {
		t.Errorf("tasks came from %s", got)
	}
	// Scheduled tasks are work too: a queue holding only those stays.
	id := "close:_:out_trade_no:LATER"
	if _, err := client.Enqueue(asynq.NewTask(tasks.TypeClose, []byte("{}")), asynq.TaskID(id),
		asynq.Queue(tasks.CloseQueue(id, 4)), asynq.ProcessIn(time.Hour)); err != nil {
		t.Fatal(err)
	}
	// Wait for the whole set: a look that read the scheduled task's queue
	// before the enqueue above, and another queue while its last task was
	// still active, rightly keeps that other queue until the next look.
	want := []string{tasks.QueueClose, tasks.CloseQueue(id, 4)}
	slices.Sort(want)
	var got []string
	deadline := time.Now().Add(30 * time.Second)
	for got = c.Queues(); !slices.Equal(got, want); got = c.Queues() {
		if time.Now().After(deadline) {
			t.Fatalf("Queues = %v, want %v: the queues without work dropped, the one with a scheduled task kept", got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestShutdownBeforeStart(t *testing.T) {
	srv := redistest.Start(t)
	c := consumer.New(consumer.Options{Redis: srv.Client(), Config: asynqConfig()})
	c.Shutdown()
	c.Shutdown()
}
