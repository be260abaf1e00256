package ops

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/wxclose/wxclose/tasks"
)

// TestReplayLegacyDueHeader replays a close enqueued by a producer that
// wrote the legacy header (wxclose-due-at, RFC 3339): the replayed task
// carries the new header with the replay's runnable time, and every reader
// (tasks.DueFromHeaders) takes that, not the stale legacy value left beside
// it, so the worker measures the first run's lateness from the replay.
func TestReplayLegacyDueHeader(t *testing.T) {
	e := newEnv(t)
	w := e.startWorker(t)
	created := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	p, id := order("R-LEGACY", created)
	legacyDue := tasks.DueAt(p.CreatedAt, time.Time{}, tasks.DefaultCloseMargin)
	w.set(id, behaviour{err: errText, failure: failSystem()})
	cl := asynq.NewClientFromRedisClient(e.srv.Client())
	task := asynq.NewTaskWithHeaders(tasks.TypeClose, mustJSON(t, p), map[string]string{tasks.HeaderDueAt: legacyDue.Format(time.RFC3339Nano)})
	if _, err := cl.Enqueue(task, asynq.Queue(tasks.QueueClose), asynq.TaskID(id), asynq.MaxRetry(0)); err != nil {
		t.Fatal(err)
	}
	e.waitState(t, id, asynq.TaskStateArchived)
	w.srv.Shutdown()

	before := time.Now()
	sum, err := e.c.Replay(context.Background(), ReplayOptions{Filter: ReplayFilter{OutTradeNo: "R-LEGACY"}, Out: io.Discard, Err: io.Discard})
	if err != nil || sum.Replayed != 1 {
		t.Fatalf("Replay = %+v, %v", sum, err)
	}
	info := e.info(t, id)
	got, ok := tasks.DueFromHeaders(info.Headers)
	// Long past due: runnable from the replay on.
	if !ok || got.Before(before.Truncate(time.Millisecond)) || info.Headers[tasks.HeaderDue] == "" {
		t.Errorf("replayed headers %v read as due %v, %t; want the replay's time (after %v)", info.Headers, got, ok, before)
	}
}
