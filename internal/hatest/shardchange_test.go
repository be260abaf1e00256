package hatest

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/wxclose/wxclose/internal/config"
	"github.com/wxclose/wxclose/internal/redistest"
	"github.com/wxclose/wxclose/tasks"
)

// TestShardCountChange follows the README's procedure for changing
// WXCLOSE_SHARDS from 1 to 4 on a live system: closes scheduled under one
// queue are still run after every worker switched (nothing lost), none
// early; a duplicate enqueue across the change is recognised with
// WXCLOSE_PREVIOUS_SHARDS, and without it creates a second task that
// WeChat Pay answers with ORDERCLOSED, counted as already_closed; workers
// stop consuming close_order once it is empty.
func TestShardCountChange(t *testing.T) {
	srv := redistest.Start(t)
	r := newRig(t)
	ctx := context.Background()
	discover := 200 * time.Millisecond

	// Before: one queue, one worker.
	old := r.startWorker(t, srv.ConnOpt(), workerOptions{layout: config.Layout{Shards: 1}, discover: discover})
	p1 := tasks.NewProducerFromRedisClient(srv.Client(), tasks.ProducerConfig{MchID: r.creds.MchID})
	var before []string
	for _, no := range numbers("BEFORE", 0, 40) {
		if _, err := p1.EnqueueClose(ctx, r.order(no, 5*time.Second)); err != nil {
			t.Fatal(err)
		}
		before = append(before, no)
	}

	// Step 1: workers on the new count start (they also consume close_order,
	// which holds work); the old ones stop before any BEFORE order is due.
	neu := r.startWorker(t, srv.ConnOpt(), workerOptions{layout: config.Layout{Shards: 4}, discover: discover})
	waitFor(t, "the new worker to consume close_order and the 4 shards", func() bool {
		got := neu.w.CloseQueues()
		return slices.Contains(got, tasks.QueueClose) && len(got) == 5
	})
	old.stop()

	// Step 2: producers switch, with PreviousShards for the retention period.
	p4 := tasks.NewProducerFromRedisClient(srv.Client(), tasks.ProducerConfig{MchID: r.creds.MchID, Shards: 4, PreviousShards: 1})
	var after []string
	for _, no := range numbers("AFTER", 0, 40) {
		s, err := p4.EnqueueClose(ctx, r.order(no, 3*time.Second))
		if err != nil || s.Queue != tasks.CloseQueue(s.TaskID, 4) {
			t.Fatalf("EnqueueClose(%s) = %+v, %v", no, s, err)
		}
		after = append(after, no)
	}
	// A checkout service retrying BEFORE orders: recognised in close_order.
	for _, no := range before[:10] {
		s, err := p4.EnqueueClose(ctx, tasks.CloseOrder{OutTradeNo: no, CreatedAt: time.Now()})
		if err != nil || !s.Duplicate || s.Queue != tasks.QueueClose {
			t.Fatalf("duplicate of %s with PreviousShards = %+v, %v; want it found in close_order", no, s, err)
		}
	}
	// A producer switched without PreviousShards makes a second task; the
	// order is closed once, the second close is answered ORDERCLOSED.
	careless := tasks.NewProducerFromRedisClient(srv.Client(), tasks.ProducerConfig{MchID: r.creds.MchID, Shards: 4})
	doubled := before[10:15]
	for _, no := range doubled {
		o, _ := r.sb.Order(no)
		s, err := careless.EnqueueClose(ctx, tasks.CloseOrder{OutTradeNo: no, CreatedAt: o.CreatedAt})
		if err != nil || s.Duplicate {
			t.Fatalf("enqueue of %s without PreviousShards = %+v, %v; want a second task", no, s, err)
		}
	}

	r.waitClosed(t, append(slices.Clone(before), after...), 60*time.Second)
	r.requireNoEarlyCalls(t)
	insp := asynq.NewInspectorFromRedisClient(srv.Client())
	for _, no := range before {
		id := tasks.CloseTaskID(tasks.OrderRef{OutTradeNo: no, MchID: r.creds.MchID})
		waitFor(t, id+" completed in close_order", func() bool {
			info, err := insp.GetTaskInfo(tasks.QueueClose, id)
			return err == nil && info.State == asynq.TaskStateCompleted
		})
	}
	// The second tasks ran too, and met a closed order.
	for _, no := range doubled {
		waitFor(t, "the second close of "+no, func() bool { return len(r.sb.CallsFor(no)) == 2 })
		// Both copies are due the same second and may run side by side:
		// whichever comes second meets a closed order.
		outcomes := map[string]int{}
		for _, c := range r.sb.CallsFor(no) {
			outcomes[c.Outcome]++
		}
		if outcomes["closed"] != 1 || outcomes["already_closed"] != 1 {
			t.Errorf("the two closes of %s were answered %v, want one closed and one ORDERCLOSED", no, outcomes)
		}
	}
	metrics := neu.get(t, "/metrics")
	if !strings.Contains(metrics, `outcome="already_closed"`) {
		t.Errorf("/metrics does not count the duplicate closes as already_closed")
	}
	waitFor(t, "close_order to be dropped once empty", func() bool { return !slices.Contains(neu.w.CloseQueues(), tasks.QueueClose) })
}
