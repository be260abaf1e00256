package tasks_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/wxclose/wxclose/internal/redistest"
	"github.com/wxclose/wxclose/tasks"
)

// TestCloseShardIsFNV1a pins the documented shard function: FNV-1a 32 of
// the task id, modulo the number of shards. Producers in other languages
// compute it on their own, so it must never change; the expected values
// were computed outside Go.
func TestCloseShardIsFNV1a(t *testing.T) {
	for _, tc := range []struct {
		id     string
		shards int
		want   int
	}{
		{"close:1900000109:out_trade_no:ORDER-1", 1, 0},
		{"close:1900000109:out_trade_no:ORDER-1", 4, 0},                 // 0x177c47c0
		{"close:1900000109:out_trade_no:ORDER-1", 6, 2},                 // 0x177c47c0
		{"close:1900000109:out_trade_no:ORDER-1", 16, 0},                // 0x177c47c0
		{"close:_:transaction_id:4200000001202611220000000001", 4, 2},   // 0xe096c9fe
		{"close:_:transaction_id:4200000001202611220000000001", 6, 4},   // 0xe096c9fe
		{"close:_:transaction_id:4200000001202611220000000001", 16, 14}, // 0xe096c9fe
		{"close:1900000109.1900000110:out_trade_no:A", 4, 1},            // 0x2e4c7c09
		{"close:1900000109.1900000110:out_trade_no:A", 6, 3},            // 0x2e4c7c09
		{"close:1900000109.1900000110:out_trade_no:A", 0, 0},            // zero means one shard
	} {
		if got := tasks.CloseShard(tc.id, tc.shards); got != tc.want {
			t.Errorf("CloseShard(%q, %d) = %d, want %d", tc.id, tc.shards, got, tc.want)
		}
		wantQueue := fmt.Sprintf("close_order:%d", tc.want)
		if tc.shards <= 1 {
			wantQueue = "close_order"
		}
		if got := tasks.CloseQueue(tc.id, tc.shards); got != wantQueue {
			t.Errorf("CloseQueue(%q, %d) = %q, want %q", tc.id, tc.shards, got, wantQueue)
		}
	}
}

// TestCloseShardSpreads: ids that differ only in the order number spread
// over every shard, roughly evenly.
func TestCloseShardSpreads(t *testing.T) {
	const shards, orders = 6, 6000
	counts := make([]int, shards)
	for i := range orders {
		counts[tasks.CloseShard(tasks.CloseTaskID(tasks.OrderRef{MchID: "1900000109", OutTradeNo: fmt.Sprintf("ORDER-%d", i)}), shards)]++
	}
	for s, n := range counts {
		if n < orders/shards/2 || n > orders/shards*2 {
			t.Errorf("shard %d got %d of %d orders: %v", s, n, orders, counts)
		}
	}
}

func TestIsCloseQueue(t *testing.T) {
	for _, tc := range []struct {
		name string
		want bool
	}{
		{"close_order", true},
		{"close_order:0", true},
		{"close_order:5", true},
		{"close_order:1023", true},
		{"close_order:1024", false},
		{"close_order:01", false},
		{"close_order:", false},
		{"close_order:-1", false},
		{"close_order:+1", false},
		{"close_order:a", false},
		{"close_order:1:2", false},
		{"close_orders", false},
		{"reconciliation", false},
		{"", false},
	} {
		if got := tasks.IsCloseQueue(tc.name); got != tc.want {
			t.Errorf("IsCloseQueue(%q) = %t, want %t", tc.name, got, tc.want)
		}
	}
	if got := strings.Join(tasks.CloseQueues(1), ","); got != "close_order" {
		t.Errorf("CloseQueues(1) = %s", got)
	}
	if got := strings.Join(tasks.CloseQueues(3), ","); got != "close_order:0,close_order:1,close_order:2" {
		t.Errorf("CloseQueues(3) = %s", got)
	}
	for _, q := range tasks.CloseQueues(tasks.MaxShards) {
		if !tasks.IsCloseQueue(q) {
			t.Fatalf("CloseQueues(MaxShards) gives %q, which IsCloseQueue rejects", q)
		}
	}
}

func TestInvalidShardSettings(t *testing.T) {
	srv := redistest.Start(t)
	for _, cfg := range []tasks.ProducerConfig{
		{Shards: -1}, {Shards: tasks.MaxShards + 1}, {PreviousShards: -2}, {WaitReplicas: -1},
	} {
		p := tasks.NewProducerFromRedisClient(srv.Client(), cfg)
		_, err := p.EnqueueClose(context.Background(), tasks.CloseOrder{OutTradeNo: "X"})
		if err == nil || !strings.Contains(err.Error(), "ProducerConfig.") {
			t.Errorf("%+v: EnqueueClose error = %v, want one naming the field", cfg, err)
		}
		if err := p.CancelClose(context.Background(), tasks.OrderRef{OutTradeNo: "X"}); err == nil {
			t.Errorf("%+v: CancelClose accepted an invalid configuration", cfg)
		}
	}
}

// TestShardedEnqueue: with Shards = 4 each close goes to the queue its id
// hashes to, a second enqueue finds it there, and LookupClose and
// CancelClose find it.
func TestShardedEnqueue(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	p := tasks.NewProducerFromRedisClient(srv.Client(), tasks.ProducerConfig{MchID: "1900000109", Shards: 4})
	insp := asynq.NewInspectorFromRedisClient(srv.Client())
	used := map[string]bool{}
	for i := range 40 {
		o := tasks.CloseOrder{OutTradeNo: fmt.Sprintf("SHARD-%d", i), CreatedAt: time.Now()}
		s, err := p.EnqueueClose(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		want := tasks.CloseQueue(s.TaskID, 4)
		if s.Queue != want || s.Duplicate {
			t.Fatalf("EnqueueClose = %+v, want a new task in %s", s, want)
		}
		used[s.Queue] = true
		if _, err := insp.GetTaskInfo(want, s.TaskID); err != nil {
			t.Fatalf("task %s not in %s: %v", s.TaskID, want, err)
		}
		again, err := p.EnqueueClose(ctx, o)
		if err != nil || !again.Duplicate || again.Queue != want || again.State != "scheduled" {
			t.Fatalf("second EnqueueClose = %+v, %v; want a duplicate in %s", again, err, want)
		}
		info, err := p.LookupClose(ctx, s.TaskID)
		if err != nil || info.Queue != want {
			t.Fatalf("LookupClose = %+v, %v", info, err)
		}
	}
	if len(used) != 4 {
		t.Errorf("40 orders used shards %v, want all 4", used)
	}
	if qs, err := tasks.ExistingCloseQueues(insp); err != nil || strings.Join(qs, ",") != "close_order:0,close_order:1,close_order:2,close_order:3" {
		t.Errorf("ExistingCloseQueues = %v, %v; want the 4 shards only", qs, err)
	}
	if err := p.CancelClose(ctx, tasks.OrderRef{OutTradeNo: "SHARD-3"}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.LookupClose(ctx, "close:1900000109:out_trade_no:SHARD-3"); !errors.Is(err, tasks.ErrNoClose) {
		t.Fatalf("LookupClose after cancel: %v, want ErrNoClose", err)
	}
}

// TestShardCountChange: tasks enqueued under one layout are found by
// producers on another, with and without PreviousShards.
func TestShardCountChange(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	old := tasks.NewProducerFromRedisClient(srv.Client(), tasks.ProducerConfig{MchID: "1900000109"})
	plain := tasks.NewProducerFromRedisClient(srv.Client(), tasks.ProducerConfig{MchID: "1900000109", Shards: 4})
	aware := tasks.NewProducerFromRedisClient(srv.Client(), tasks.ProducerConfig{MchID: "1900000109", Shards: 4, PreviousShards: 1})
	insp := asynq.NewInspectorFromRedisClient(srv.Client())
	created := time.Now()
	order := func(n string) tasks.CloseOrder { return tasks.CloseOrder{OutTradeNo: n, CreatedAt: created} }

	first, err := old.EnqueueClose(ctx, order("MOVE-1"))
	if err != nil || first.Queue != tasks.QueueClose {
		t.Fatalf("EnqueueClose with 1 shard = %+v, %v", first, err)
	}

	// With PreviousShards the old task is recognised: no second task.
	dup, err := aware.EnqueueClose(ctx, order("MOVE-1"))
	if err != nil || !dup.Duplicate || dup.Queue != tasks.QueueClose || dup.State != "scheduled" || dup.DueAt.IsZero() {
		t.Fatalf("EnqueueClose with PreviousShards = %+v, %v; want the duplicate in close_order", dup, err)
	}
	newQueue := tasks.CloseQueue(first.TaskID, 4)
	if _, err := insp.GetTaskInfo(newQueue, first.TaskID); err == nil {
		t.Fatalf("a second task was created in %s", newQueue)
	}

	// Without it, the lookup still finds the old task in close_order.
	info, err := plain.LookupClose(ctx, first.TaskID)
	if err != nil || info.Queue != tasks.QueueClose {
		t.Fatalf("LookupClose without PreviousShards = %+v, %v; want the task in close_order", info, err)
	}

	// Without it, an enqueue creates a second task (asynq's ids are per
	// queue). Cancel with PreviousShards removes both copies.
	second, err := plain.EnqueueClose(ctx, order("MOVE-1"))
	if err != nil || second.Duplicate || second.Queue != newQueue {
		t.Fatalf("EnqueueClose without PreviousShards = %+v, %v; want a new task in %s", second, err, newQueue)
	}
	if err := aware.CancelClose(ctx, tasks.OrderRef{OutTradeNo: "MOVE-1"}); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{tasks.QueueClose, newQueue} {
		if _, err := insp.GetTaskInfo(q, first.TaskID); !errors.Is(err, asynq.ErrTaskNotFound) {
			t.Errorf("after cancel, %s still holds the task: %v", q, err)
		}
	}

	// A task found only outside both layouts (here: under 1 shard, looked
	// for with 4 and no PreviousShards) is cancelled too.
	if _, err := old.EnqueueClose(ctx, order("MOVE-2")); err != nil {
		t.Fatal(err)
	}
	if err := plain.CancelClose(ctx, tasks.OrderRef{OutTradeNo: "MOVE-2"}); err != nil {
		t.Fatalf("cancel of a task under the old layout: %v", err)
	}
	if err := plain.CancelClose(ctx, tasks.OrderRef{OutTradeNo: "MOVE-2"}); !errors.Is(err, tasks.ErrNoClose) {
		t.Fatalf("second cancel: %v, want ErrNoClose", err)
	}
}

// TestWaitReplicasWithoutReplica: a producer asking for a replica's
// acknowledgement from a Redis that has none is told the task is not
// replicated, so the enqueue does not count as acknowledged. Enqueueing
// again reports the duplicate and fails the same way.
func TestWaitReplicasWithoutReplica(t *testing.T) {
	srv := redistest.Start(t)
	if srv.Embedded {
		t.Skip("miniredis has no WAIT command")
	}
	ctx := context.Background()
	p := tasks.NewProducerFromRedisClient(srv.Client(), tasks.ProducerConfig{MchID: "1900000109", WaitReplicas: 1, WaitTimeout: 20 * time.Millisecond})
	o := tasks.CloseOrder{OutTradeNo: "WAIT-1", CreatedAt: time.Now()}
	s, err := p.EnqueueClose(ctx, o)
	if !errors.Is(err, tasks.ErrNotReplicated) {
		t.Fatalf("EnqueueClose = %+v, %v; want ErrNotReplicated", s, err)
	}
	if _, err := p.EnqueueClose(ctx, o); !errors.Is(err, tasks.ErrNotReplicated) {
		t.Fatalf("second EnqueueClose: %v; want ErrNotReplicated", err)
	}
	if _, err := p.EnqueueReconcile(ctx, tasks.ReconcilePayload{OutTradeNo: "WAIT-1", MchID: "1900000109"}); !errors.Is(err, tasks.ErrNotReplicated) {
		t.Fatalf("EnqueueReconcile: %v; want ErrNotReplicated", err)
	}
	// With no wait asked for, the same Redis acknowledges at once.
	q := tasks.NewProducerFromRedisClient(srv.Client(), tasks.ProducerConfig{MchID: "1900000109"})
	if s, err := q.EnqueueClose(ctx, o); err != nil || !s.Duplicate {
		t.Fatalf("EnqueueClose without wait = %+v, %v", s, err)
	}
}
