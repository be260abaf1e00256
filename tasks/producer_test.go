package tasks_test

import (
	"context"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/wxclose/wxclose/internal/redistest"
	"github.com/wxclose/wxclose/tasks"
)

// TestCloseAtTravelsWithTheTask: the merchant's deadline is stored in the
// payload and decides the run time at enqueue and again at requeue (what
// replay does), so a replayed close still waits for it.
func TestCloseAtTravelsWithTheTask(t *testing.T) {
	srv := redistest.Start(t)
	created := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	closeAt := created.Add(40 * time.Minute)
	p := tasks.NewProducerFromRedisClient(srv.Client(), tasks.ProducerConfig{MchID: "1900000109"})
	ctx := context.Background()
	s, err := p.EnqueueClose(ctx, tasks.CloseOrder{OutTradeNo: "DEADLINE-1", TransactionID: "4200000000202611220000000001",
		CreatedAt: created, CloseAt: closeAt})
	if err != nil {
		t.Fatal(err)
	}
	if s.TaskID != "close:1900000109:out_trade_no:DEADLINE-1" || s.DueAt.Before(closeAt) {
		t.Fatalf("EnqueueClose = %+v, want the out_trade_no id, due at close_at %v", s, closeAt)
	}
	insp := asynq.NewInspectorFromRedisClient(srv.Client())
	info, err := insp.GetTaskInfo(tasks.QueueClose, s.TaskID)
	if err != nil {
		t.Fatal(err)
	}
	pl, err := tasks.DecodeClosePayload(info.Payload)
	if err != nil || !pl.CloseAt.Equal(closeAt) {
		t.Fatalf("stored payload %s: %+v, %v; want close_at %v", info.Payload, pl, err, closeAt)
	}
	if info.NextProcessAt.Before(closeAt) {
		t.Fatalf("scheduled for %v, before close_at %v", info.NextProcessAt, closeAt)
	}

	if err := insp.DeleteTask(tasks.QueueClose, s.TaskID); err != nil {
		t.Fatal(err)
	}
	s2, err := p.RequeueClose(ctx, pl)
	if err != nil {
		t.Fatal(err)
	}
	info, err = insp.GetTaskInfo(tasks.QueueClose, s2.TaskID)
	if err != nil {
		t.Fatal(err)
	}
	if s2.TaskID != s.TaskID || info.NextProcessAt.Before(closeAt) || s2.DueAt.Before(closeAt) {
		t.Fatalf("RequeueClose = %+v, runs at %v; want the same id, not before close_at %v", s2, info.NextProcessAt, closeAt)
	}
}
