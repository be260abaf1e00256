// Package taskstest helps a checkout service test its own use of wxclose:
// that it scheduled the close of an order, when, and that it cancelled one.
// It reads the same Redis the service's tasks.Producer wrote to.
package taskstest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/wxclose/wxclose/tasks"
)

// Close is a close task as the producer stored it.
type Close struct {
	Payload tasks.ClosePayload
	// DueAt is when the close will run (zero once it ran).
	DueAt time.Time
	Info  *asynq.TaskInfo
}

// RequireClose fails the test unless ref's order has a close task waiting
// (scheduled or pending) that will not run before creation + 5 minutes nor
// before its close_at, and returns it. ref.MchID must be what the
// producer used (its ProducerConfig.MchID when the order named none).
func RequireClose(tb testing.TB, r asynq.RedisConnOpt, ref tasks.OrderRef) Close {
	tb.Helper()
	info := lookup(tb, r, ref)
	if info == nil {
		tb.Fatalf("no close task for %s (task id %s)", ref.Number(), tasks.CloseTaskID(ref))
		return Close{}
	}
	if info.State != asynq.TaskStateScheduled && info.State != asynq.TaskStatePending {
		tb.Fatalf("close task %s is %s, want scheduled or pending", info.ID, info.State)
	}
	p, err := tasks.DecodeClosePayload(info.Payload)
	if err != nil {
		tb.Fatalf("close task %s: %v", info.ID, err)
	}
	if due := info.NextProcessAt; !due.IsZero() && due.Before(p.NotBefore()) {
		tb.Fatalf("close task %s runs at %s, before creation + 5 minutes or close_at (%s)", info.ID, due, p.NotBefore())
	}
	return Close{Payload: p, DueAt: info.NextProcessAt, Info: info}
}

// RequireNoClose fails the test if ref's order has a close task in any
// state, for example after the service cancelled it.
func RequireNoClose(tb testing.TB, r asynq.RedisConnOpt, ref tasks.OrderRef) {
	tb.Helper()
	if info := lookup(tb, r, ref); info != nil {
		tb.Fatalf("order %s still has close task %s (%s)", ref.Number(), info.ID, info.State)
	}
}

// lookup finds the order's close task in whichever close queue holds it
// (close_order or any shard, whatever WXCLOSE_SHARDS the producer used), as
// tasks.Producer.LookupClose does.
func lookup(tb testing.TB, r asynq.RedisConnOpt, ref tasks.OrderRef) *asynq.TaskInfo {
	tb.Helper()
	p := tasks.NewProducer(r, tasks.ProducerConfig{})
	defer p.Close()
	info, err := p.LookupClose(context.Background(), tasks.CloseTaskID(ref))
	switch {
	case errors.Is(err, tasks.ErrNoClose):
		return nil
	case err != nil:
		tb.Fatalf("look up close task of %s: %v", ref.Number(), err)
	}
	return info
}
