package worker_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/wxclose/wxclose/internal/ops"
	"github.com/wxclose/wxclose/tasks"
	"github.com/wxclose/wxclose/wechat"
	"github.com/wxclose/wxclose/wechat/sandbox"
)

// TestFailureRecords: the worker stores each failed attempt's WeChat Pay
// answer as data with the task (asynq's result field, which asynq keeps
// through retry and archive), and `enqueue status`, `list` and `replay
// --code` read it; a later success replaces it with the close's result.
// Real Redis, the sandbox over HTTP, the worker as production runs it.
func TestFailureRecords(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{api: wechat.APIv3, maxRetry: 5})
	client := ops.New(b.rdb, tasks.ProducerConfig{MchID: b.creds.MchID, MaxRetry: 5})
	ctx := context.Background()

	retryOrder := b.order(t, "REC-RETRY", 0, sandbox.StateUnpaid)
	b.sandbox.Script("REC-RETRY", sandbox.SystemError(), sandbox.SystemError())
	retried := b.enqueue(t, retryOrder)
	authOrder := b.order(t, "REC-AUTH", 0, sandbox.StateUnpaid)
	b.sandbox.Script("REC-AUTH", sandbox.Fail(http.StatusForbidden, "NO_AUTH", "no permission (test)"))
	archived := b.enqueue(t, authOrder)

	t.Run("a retried close shows WeChat Pay's code and class", func(t *testing.T) {
		st := waitStatus(t, client, "REC-RETRY", func(st ops.Status) bool { return st.State == "retry" })
		f := st.Failure
		if f == nil || f.Outcome != tasks.OutcomeRetry || f.Code != "SYSTEM_ERROR" || f.Class != tasks.ClassRetryable ||
			f.HTTPStatus != http.StatusInternalServerError || f.Attempt < 1 || f.At.IsZero() || st.Result != nil {
			t.Fatalf("status of a retried close: failure %+v, result %+v", f, st.Result)
		}
		var text bytes.Buffer
		if err := ops.WriteStatus(&text, st, false); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(text.String(), "last failure:") || !strings.Contains(text.String(), "code=SYSTEM_ERROR class=retryable status=500") {
			t.Errorf("status text:\n%s", text.String())
		}
		// The retries succeed in the end: the close's result replaces the
		// failure record.
		info := b.waitFinal(t, retried.TaskID)
		if info.State != asynq.TaskStateCompleted {
			t.Fatalf("state %s, want completed", info.State)
		}
		st, err := client.Status(ctx, tasks.OrderRef{OutTradeNo: "REC-RETRY"})
		if err != nil || st.Result == nil || st.Result.Outcome != tasks.OutcomeClosed || st.Failure != nil {
			t.Fatalf("status after success: %+v, result %+v, failure %+v, %v", st, st.Result, st.Failure, err)
		}
	})

	t.Run("an archived close is listed and replayed by its recorded code", func(t *testing.T) {
		info := b.waitFinal(t, archived.TaskID)
		if info.State != asynq.TaskStateArchived {
			t.Fatalf("state %s, want archived", info.State)
		}
		listed, err := client.List(ctx, ops.ListOptions{State: "archived"})
		if err != nil || len(listed) != 1 || listed[0].Failure == nil || listed[0].Failure.Code != "NO_AUTH" ||
			listed[0].Failure.Class != tasks.ClassPermanent || listed[0].Failure.Outcome != tasks.OutcomePermanent {
			t.Fatalf("archived list = %+v, %v", listed, err)
		}
		var out bytes.Buffer
		sum, err := client.Replay(ctx, ops.ReplayOptions{Filter: ops.ReplayFilter{Code: "SYSTEM_ERROR"}, DryRun: true, Out: &out, Err: io.Discard})
		if err != nil || sum.Matched != 0 || sum.NoRecord != 0 {
			t.Fatalf("replay --code SYSTEM_ERROR = %+v, %v; want nothing selected", sum, err)
		}
		sum, err = client.Replay(ctx, ops.ReplayOptions{Filter: ops.ReplayFilter{Code: "no_auth"}, Out: &out, Err: io.Discard})
		if err != nil || sum.Matched != 1 || sum.Replayed != 1 || !strings.Contains(out.String(), "replayed "+archived.TaskID) {
			t.Fatalf("replay --code no_auth = %+v, %v\n%s", sum, err, out.String())
		}
		// The sandbox's script is used up: the replayed close succeeds.
		info = b.waitFinal(t, archived.TaskID)
		if info.State != asynq.TaskStateCompleted || closeResult(t, info).Outcome != tasks.OutcomeClosed {
			t.Fatalf("after replay: state %s result %s", info.State, info.Result)
		}
	})
}

// waitStatus polls `enqueue status` until ok holds; the deadline only
// bounds a broken run.
func waitStatus(t *testing.T, c *ops.Client, no string, ok func(ops.Status) bool) ops.Status {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, err := c.Status(context.Background(), tasks.OrderRef{OutTradeNo: no})
		if err == nil && ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("status of %s never reached the wanted state: %+v, %v", no, st, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
