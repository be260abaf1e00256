package httpapi

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/wxclose/wxclose/internal/closehandler"
	"github.com/wxclose/wxclose/retry"
	"github.com/wxclose/wxclose/tasks"
	"github.com/wxclose/wxclose/wechat"
)

// fakeCloser plays WeChat Pay for the real close handler: each order number
// gets a scripted answer. (WeChat Pay itself is not the subject here; the
// API's reading of what the handler stored is.)
type fakeCloser struct {
	mu      sync.Mutex
	answers map[string]func(ctx context.Context) (wechat.Outcome, error)
}

func (f *fakeCloser) Close(ctx context.Context, r wechat.CloseRequest) (wechat.Outcome, error) {
	f.mu.Lock()
	answer := f.answers[r.OutTradeNo]
	f.mu.Unlock()
	if answer == nil {
		return wechat.Outcome{Result: wechat.ResultClosed, HTTPStatus: 204}, nil
	}
	return answer(ctx)
}

// startWorker runs the real close handler on a real asynq server over the
// env's Redis. Failed closes wait an hour before their retry, so they stay
// in the retry state for the test to look at.
func startWorker(t *testing.T, e *env, closer wechat.Closer) {
	t.Helper()
	producer := tasks.NewProducer(e.redis.ConnOpt(), tasks.ProducerConfig{MchID: "1900000109"})
	t.Cleanup(func() { _ = producer.Close() })
	h, err := closehandler.New(closehandler.Config{Closer: closer, Reconciler: producer, MchID: "1900000109"})
	if err != nil {
		t.Fatal(err)
	}
	srv := asynq.NewServer(e.redis.ConnOpt(), asynq.Config{
		Queues:                   map[string]int{tasks.QueueClose: 1},
		Concurrency:              4,
		RetryDelayFunc:           func(int, error, *asynq.Task) time.Duration { return time.Hour },
		IsFailure:                retry.IsFailure,
		DelayedTaskCheckInterval: 100 * time.Millisecond,
		LogLevel:                 asynq.FatalLevel,
	})
	mux := asynq.NewServeMux()
	mux.Handle(tasks.TypeClose, h)
	if err := srv.Start(mux); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
}

// waitState polls the task until it reaches state; the deadline only stops
// a broken test from hanging.
func waitState(t *testing.T, e *env, id string, state asynq.TaskState) *asynq.TaskInfo {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		info, err := e.api.inspector.GetTaskInfo(tasks.QueueClose, id)
		if err == nil && info.State == state {
			return info
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s did not reach state %s (last: %+v, %v)", id, state, info, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestGetAndCancel runs orders through the real close handler and checks
// what GET reports for each state and what DELETE answers: 204 for a close
// that waits (scheduled, retry, archived), 409 for one running or
// completed, 404 for none.
func TestGetAndCancel(t *testing.T) {
	e := newEnv(t)
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	closer := &fakeCloser{answers: map[string]func(context.Context) (wechat.Outcome, error){
		"DONE": func(context.Context) (wechat.Outcome, error) {
			return wechat.Outcome{Result: wechat.ResultClosed, HTTPStatus: 204, RequestID: "req-done"}, nil
		},
		"RETRY": func(context.Context) (wechat.Outcome, error) {
			return wechat.Outcome{}, &wechat.Error{Class: wechat.ClassRetryable, Code: "SYSTEMERROR", HTTPStatus: 500, Message: "system busy"}
		},
		"PERM": func(context.Context) (wechat.Outcome, error) {
			return wechat.Outcome{}, &wechat.Error{Class: wechat.ClassPermanent, Code: "NO_AUTH", HTTPStatus: 403, Message: "no permission"}
		},
		"BLOCK": func(ctx context.Context) (wechat.Outcome, error) {
			started <- struct{}{}
			select {
			case <-release:
			case <-ctx.Done():
			}
			return wechat.Outcome{Result: wechat.ResultClosed, HTTPStatus: 204}, nil
		},
	}}
	startWorker(t, e, closer)
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})

	due := time.Now().Add(-10 * time.Minute) // due at once
	ids := map[string]string{}
	for _, n := range []string{"DONE", "RETRY", "PERM", "BLOCK"} {
		a := e.do(req{method: "POST", path: "/v1/closes", body: jsonBody(t, order(n, due))})
		if a.status != 201 {
			t.Fatalf("POST %s: %d %s", n, a.status, a.body)
		}
		var s scheduled
		a.decode(t, &s)
		ids[n] = s.TaskID
	}
	later := e.do(req{method: "POST", path: "/v1/closes", body: jsonBody(t, order("LATER", time.Now()))})
	var s scheduled
	later.decode(t, &s)
	ids["LATER"] = s.TaskID

	waitState(t, e, ids["DONE"], asynq.TaskStateCompleted)
	waitState(t, e, ids["RETRY"], asynq.TaskStateRetry)
	waitState(t, e, ids["PERM"], asynq.TaskStateArchived)
	<-started
	waitState(t, e, ids["BLOCK"], asynq.TaskStateActive)

	get := func(n string) closeStatus {
		t.Helper()
		a := e.do(req{method: "GET", path: taskURL(ids[n])})
		if a.status != 200 {
			t.Fatalf("GET %s: %d %s", n, a.status, a.body)
		}
		var st closeStatus
		a.decode(t, &st)
		if st.TaskID != ids[n] || st.Order == nil || st.Order.OutTradeNo != n {
			t.Fatalf("GET %s = %s", n, a.body)
		}
		return st
	}

	st := get("DONE")
	// A plain close stores no record: its result is closed, finished when
	// the task completed (tasks.ReadCloseRecord).
	if st.State != "completed" || st.Result == nil || st.Result.Outcome != tasks.OutcomeClosed ||
		st.CompletedAt.IsZero() || !st.Result.FinishedAt.Equal(st.CompletedAt) || st.LastError != nil || st.DueAt.IsZero() {
		t.Errorf("completed close = %+v", st)
	}
	st = get("RETRY")
	if st.State != "retry" || st.Retried != 1 || st.MaxRetry != tasks.DefaultMaxRetry || st.NextRunAt.IsZero() {
		t.Errorf("retrying close = %+v", st)
	}
	if le := st.LastError; le == nil || le.Outcome != tasks.OutcomeRetry || le.Class != tasks.ClassRetryable || le.Code != "SYSTEMERROR" ||
		le.HTTPStatus != 500 || le.Attempt != 1 || le.FailedAt.IsZero() || !strings.Contains(le.Message, "SYSTEMERROR") {
		t.Errorf("retrying close: last error %+v", le)
	}
	st = get("PERM")
	if st.State != "archived" || !st.NextRunAt.IsZero() {
		t.Errorf("archived close = %+v", st)
	}
	if le := st.LastError; le == nil || le.Outcome != tasks.OutcomePermanent || le.Class != tasks.ClassPermanent || le.Code != "NO_AUTH" || le.HTTPStatus != 403 {
		t.Errorf("archived close: last error %+v", le)
	}
	st = get("BLOCK")
	if st.State != "active" || st.Result != nil || !st.NextRunAt.IsZero() {
		t.Errorf("running close = %+v", st)
	}
	st = get("LATER")
	if st.State != "scheduled" || st.NextRunAt.IsZero() || !st.NextRunAt.Equal(st.DueAt) {
		t.Errorf("scheduled close = %+v", st)
	}

	del := func(n string) answer {
		t.Helper()
		return e.do(req{method: "DELETE", path: taskURL(ids[n])})
	}
	wantProblem(t, del("DONE"), http.StatusConflict, CodeCloseCompleted, "")
	wantProblem(t, del("BLOCK"), http.StatusConflict, CodeCloseInProgress, "")
	for _, n := range []string{"LATER", "RETRY", "PERM"} {
		if a := del(n); a.status != http.StatusNoContent || len(a.body) != 0 {
			t.Fatalf("DELETE %s: %d %s", n, a.status, a.body)
		}
		wantProblem(t, e.do(req{method: "GET", path: taskURL(ids[n])}), http.StatusNotFound, CodeNoClose, "")
		wantProblem(t, del(n), http.StatusNotFound, CodeNoClose, "")
	}
	close(release)
	waitState(t, e, ids["BLOCK"], asynq.TaskStateCompleted)
	wantProblem(t, del("BLOCK"), http.StatusConflict, CodeCloseCompleted, "")
}

// TestGetAndCancelUnknown: ids that are not close task ids are 400 with
// the parameter named; valid ids with no task are 404.
func TestGetAndCancelUnknown(t *testing.T) {
	e := newEnv(t)
	for _, method := range []string{"GET", "DELETE"} {
		wantProblem(t, e.do(req{method: method, path: taskURL("close:1900000109:out_trade_no:NONE")}), 404, CodeNoClose, "")
		wantProblem(t, e.do(req{method: method, path: taskURL("close:_:transaction_id:4200000001")}), 404, CodeNoClose, "")
		for _, id := range []string{"ORDER-1", "reconcile:1900000109:out_trade_no:A", "close:1900000109:out_trade_no:BAD#", "close:19x:out_trade_no:A", "close::out_trade_no:A"} {
			wantProblem(t, e.do(req{method: method, path: taskURL(id)}), 400, CodeInvalidTaskID, "task_id")
		}
	}
}

func TestParseTaskID(t *testing.T) {
	tests := []struct {
		id   string
		want tasks.OrderRef
		ok   bool
	}{
		{"close:1900000109:out_trade_no:ORDER-1", tasks.OrderRef{MchID: "1900000109", OutTradeNo: "ORDER-1"}, true},
		{"close:_:out_trade_no:A|B*C@D", tasks.OrderRef{OutTradeNo: "A|B*C@D"}, true},
		{"close:1900000100.1900000200:transaction_id:4200000001", tasks.OrderRef{MchID: "1900000100", SubMchID: "1900000200", TransactionID: "4200000001"}, true},
		{"close:_.1900000200:out_trade_no:A", tasks.OrderRef{SubMchID: "1900000200", OutTradeNo: "A"}, true},
		{"close::out_trade_no:A", tasks.OrderRef{}, false},
		{"close:1:out_trade_no:", tasks.OrderRef{}, false},
		{"close:1:order:A", tasks.OrderRef{}, false},
		{"close:1:out_trade_no:A:B", tasks.OrderRef{}, false},
		{"close:1.:out_trade_no:A", tasks.OrderRef{}, false},
		{"close:1.2.3:out_trade_no:A", tasks.OrderRef{}, false},
		{"reconcile:1:out_trade_no:A", tasks.OrderRef{}, false},
		{"", tasks.OrderRef{}, false},
	}
	for _, tt := range tests {
		got, p := parseTaskID(tt.id)
		if (p == nil) != tt.ok || (tt.ok && got != tt.want) {
			t.Errorf("parseTaskID(%q) = %+v, %+v; want %+v ok=%v", tt.id, got, p, tt.want, tt.ok)
		}
		if tt.ok && tasks.CloseTaskID(got) != tt.id {
			t.Errorf("round trip of %q gives %q", tt.id, tasks.CloseTaskID(got))
		}
	}
}
