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
	c := consumer.New(consumer.Options{Redis: srv.Client(), Config: asynqConfig(), Shards: 4, Interval: 100 * time.Millisecond})
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
	waitFor(t, "the queues without work to be dropped", func() bool { return len(c.Queues()) == 2 })
	if got := c.Queues(); !slices.Contains(got, tasks.CloseQueue(id, 4)) {
		t.Errorf("Queues = %v, want close_order and %s", got, tasks.CloseQueue(id, 4))
	}
}

func TestShutdownBeforeStart(t *testing.T) {
	srv := redistest.Start(t)
	c := consumer.New(consumer.Options{Redis: srv.Client(), Config: asynqConfig()})
	c.Shutdown()
	c.Shutdown()
}
