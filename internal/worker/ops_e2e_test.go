package worker_test

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/wxclose/wxclose/internal/ops"
	"github.com/wxclose/wxclose/tasks"
	"github.com/wxclose/wxclose/wechat"
	"github.com/wxclose/wxclose/wechat/sandbox"
)

// An order whose retries ran out is replayed after "the cause is fixed" and
// then closes, with its full retry budget back.
func TestReplayGivesAFreshBudgetAndTheCloseSucceeds(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{api: wechat.APIv3, maxRetry: 1})
	o := b.order(t, "REPLAY-1", 0, sandbox.StateUnpaid)
	b.sandbox.Script("REPLAY-1", sandbox.ServerError(503), sandbox.ServerError(503))
	s := b.enqueue(t, o)
	info := b.waitFinal(t, s.TaskID)
	if info.State != asynq.TaskStateArchived || info.Retried != 1 {
		t.Fatalf("before replay: state %s retried %d, want archived with its 1 retry spent", info.State, info.Retried)
	}

	client := ops.New(b.rdb, tasks.ProducerConfig{MchID: b.creds.MchID, MaxRetry: 1})
	sum, err := client.Replay(context.Background(), ops.ReplayOptions{Filter: ops.ReplayFilter{OutTradeNo: "REPLAY-1"}, Out: io.Discard, Err: io.Discard})
	if err != nil || sum.Replayed != 1 {
		t.Fatalf("Replay = %+v, %v; want 1 replayed", sum, err)
	}
	info = b.waitFinal(t, s.TaskID)
	if info.State != asynq.TaskStateCompleted || info.Retried != 0 || closeResult(t, info).Outcome != tasks.OutcomeClosed {
		t.Fatalf("after replay: state %s retried %d result %s, want completed/closed with no retry spent", info.State, info.Retried, info.Result)
	}
	if n := len(b.sandbox.CallsFor("REPLAY-1")); n != 3 {
		t.Fatalf("%d calls, want 3 (two 503s, then the replayed close)", n)
	}
}

// A cancelled close never reaches WeChat Pay. A second order due at the same
// second shows when the cancelled one would have run.
func TestCancelRemovesTheScheduledClose(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{api: wechat.APIv3})
	created := time.Now().Add(-tasks.MinCloseAge + 2*time.Second)
	for _, no := range []string{"CANCEL-1", "SENTINEL-1"} {
		b.sandbox.AddOrder(sandbox.Order{OutTradeNo: no, CreatedAt: created})
	}
	cancelled := b.enqueue(t, tasks.CloseOrder{OutTradeNo: "CANCEL-1", CreatedAt: created})
	sentinel := b.enqueue(t, tasks.CloseOrder{OutTradeNo: "SENTINEL-1", CreatedAt: created})
	if !cancelled.DueAt.Equal(sentinel.DueAt) {
		t.Fatalf("due times differ: %s, %s", cancelled.DueAt, sentinel.DueAt)
	}
	if err := b.producer.CancelClose(context.Background(), tasks.OrderRef{OutTradeNo: "CANCEL-1"}); err != nil {
		t.Fatal(err)
	}
	b.waitFinal(t, sentinel.TaskID)
	time.Sleep(500 * time.Millisecond) // let any straggler of the same second arrive
	if calls := b.sandbox.CallsFor("CANCEL-1"); len(calls) != 0 {
		t.Fatalf("cancelled order was closed: %+v", calls)
	}
	if _, err := b.inspector.GetTaskInfo(tasks.QueueClose, cancelled.TaskID); !errors.Is(err, asynq.ErrTaskNotFound) {
		t.Fatalf("cancelled task still present: %v", err)
	}
	if err := b.producer.CancelClose(context.Background(), tasks.OrderRef{OutTradeNo: "CANCEL-1"}); !errors.Is(err, tasks.ErrNoClose) {
		t.Fatalf("second cancel = %v, want ErrNoClose", err)
	}
}

// SIGTERM while a close is in flight: the worker lets it finish before it
// stops, so the order is closed and the task completed, not left active.
func TestGracefulShutdownFinishesInFlightClose(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{api: wechat.APIv3})
	o := b.order(t, "SLOW-1", 0, sandbox.StateUnpaid)
	b.sandbox.Script("SLOW-1", sandbox.Slow(1500*time.Millisecond))
	s := b.enqueue(t, o)
	for deadline := time.Now().Add(30 * time.Second); len(b.sandbox.CallsFor("SLOW-1")) == 0; {
		info, err := b.inspector.GetTaskInfo(tasks.QueueClose, s.TaskID)
		if err == nil && info.State == asynq.TaskStateActive {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("close never started")
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.stop()
	info, err := b.inspector.GetTaskInfo(tasks.QueueClose, s.TaskID)
	if err != nil || info.State != asynq.TaskStateCompleted || closeResult(t, info).Outcome != tasks.OutcomeClosed {
		t.Fatalf("after shutdown: %+v %v, want completed/closed", info, err)
	}
	if st, _ := b.sandbox.Order("SLOW-1"); st.State != sandbox.StateClosed {
		t.Fatalf("sandbox order %v, want closed", st.State)
	}
}
