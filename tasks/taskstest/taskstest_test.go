package taskstest_test

import (
	"context"
	"testing"
	"time"

	"github.com/wxclose/wxclose/internal/redistest"
	"github.com/wxclose/wxclose/tasks"
	"github.com/wxclose/wxclose/tasks/taskstest"
)

// recorder is a testing.TB that records failures instead of stopping the
// real test, so the helpers' failure paths can be checked.
type recorder struct {
	testing.TB
	failed bool
}

func (r *recorder) Helper() {}
func (r *recorder) Fatalf(string, ...any) {
	r.failed = true
}

func TestHelpers(t *testing.T) {
	srv := redistest.Start(t)
	p := tasks.NewProducerFromRedisClient(srv.Client(), tasks.ProducerConfig{MchID: "1900000109"})
	created := time.Now().Add(-time.Minute)
	ctx := context.Background()
	if _, err := p.EnqueueClose(ctx, tasks.CloseOrder{OutTradeNo: "ORDER-1", CreatedAt: created}); err != nil {
		t.Fatal(err)
	}
	ref := tasks.OrderRef{OutTradeNo: "ORDER-1", MchID: "1900000109"}

	c := taskstest.RequireClose(t, srv.ConnOpt(), ref)
	if c.Payload.OutTradeNo != "ORDER-1" || c.DueAt.Before(tasks.EarliestClose(created)) {
		t.Fatalf("RequireClose = %+v", c)
	}

	// The merchant's own deadline travels with the task and decides when
	// it runs.
	closeAt := created.Add(20 * time.Minute)
	if _, err := p.EnqueueClose(ctx, tasks.CloseOrder{OutTradeNo: "ORDER-2", CreatedAt: created, CloseAt: closeAt}); err != nil {
		t.Fatal(err)
	}
	c2 := taskstest.RequireClose(t, srv.ConnOpt(), tasks.OrderRef{OutTradeNo: "ORDER-2", MchID: "1900000109"})
	if !c2.Payload.CloseAt.Equal(closeAt) || c2.DueAt.Before(closeAt) {
		t.Fatalf("RequireClose(ORDER-2) = close_at %v due %v, want close_at %v and due not before it", c2.Payload.CloseAt, c2.DueAt, closeAt)
	}
	r := &recorder{TB: t}
	taskstest.RequireNoClose(r, srv.ConnOpt(), ref)
	if !r.failed {
		t.Fatal("RequireNoClose passed although the order has a close task")
	}

	if err := p.CancelClose(ctx, ref); err != nil {
		t.Fatal(err)
	}
	taskstest.RequireNoClose(t, srv.ConnOpt(), ref)
	r = &recorder{TB: t}
	taskstest.RequireClose(r, srv.ConnOpt(), ref)
	if !r.failed {
		t.Fatal("RequireClose passed although the close was cancelled")
	}
}
