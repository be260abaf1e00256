package ops

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/wxclose/wxclose/tasks"
)

func TestCancel(t *testing.T) {
	e := newEnv(t)
	w := e.startWorker(t)
	ctx := context.Background()
	now := time.Now()

	// scheduled: due in five minutes.
	if _, err := e.c.Enqueue(ctx, tasks.CloseOrder{OutTradeNo: "S-1", CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	// completed: old order, closed by the worker at once.
	_, doneID := order("DONE-1", now)
	w.set(doneID, behaviour{result: &tasks.CloseResult{Outcome: tasks.OutcomeClosed}})
	if _, err := e.c.Enqueue(ctx, tasks.CloseOrder{OutTradeNo: "DONE-1", CreatedAt: now.Add(-time.Hour)}); err != nil {
		t.Fatal(err)
	}
	e.waitState(t, doneID, asynq.TaskStateCompleted)
	// active: the worker holds it until the test ends.
	release := make(chan struct{})
	defer close(release)
	_, activeID := order("ACT-1", now)
	w.set(activeID, behaviour{block: release})
	if _, err := e.c.Enqueue(ctx, tasks.CloseOrder{OutTradeNo: "ACT-1", CreatedAt: now.Add(-time.Hour)}); err != nil {
		t.Fatal(err)
	}
	e.waitState(t, activeID, asynq.TaskStateActive)
	// archived: failed for good; cancelling removes it too.
	p, archID := order("ARCH-1", now.Add(-time.Hour))
	e.archived(t, w, archID, mustJSON(t, p), 0, errText, failAuth())

	tests := []struct {
		name    string
		ref     tasks.OrderRef
		wantID  string
		wantErr error
	}{
		{"scheduled", tasks.OrderRef{OutTradeNo: "S-1"}, "close:" + testMchID + ":out_trade_no:S-1", nil},
		{"archived", tasks.OrderRef{OutTradeNo: "ARCH-1"}, archID, nil},
		{"cancelled twice", tasks.OrderRef{OutTradeNo: "S-1"}, "", tasks.ErrNoClose},
		{"never enqueued", tasks.OrderRef{OutTradeNo: "NONE"}, "", tasks.ErrNoClose},
		{"other merchant", tasks.OrderRef{OutTradeNo: "DONE-1", MchID: "1230000109"}, "", tasks.ErrNoClose},
		{"completed", tasks.OrderRef{OutTradeNo: "DONE-1"}, "", tasks.ErrCloseFinished},
		{"in progress", tasks.OrderRef{OutTradeNo: "ACT-1"}, "", tasks.ErrCloseInProgress},
		{"invalid", tasks.OrderRef{OutTradeNo: "no spaces"}, "", tasks.ErrInvalidPayload},
		{"no number", tasks.OrderRef{}, "", tasks.ErrInvalidPayload},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := e.c.Cancel(ctx, tt.ref)
			if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if id != tt.wantID {
				t.Errorf("id = %q, want %q", id, tt.wantID)
			}
			if tt.wantErr == nil {
				if info := e.info(t, id); info != nil {
					t.Errorf("task still exists after cancel: %s", info.State)
				}
			}
		})
	}
	if e.info(t, doneID) == nil || e.info(t, activeID) == nil {
		t.Error("a refused cancel removed the task")
	}
}

func TestStatus(t *testing.T) {
	e := newEnv(t)
	w := e.startWorker(t)
	ctx := context.Background()
	now := time.Now()
	finished := time.Date(2026, 11, 22, 2, 0, 0, 0, time.UTC)

	s, err := e.c.Enqueue(ctx, tasks.CloseOrder{OutTradeNo: "ST-SCHED", CreatedAt: now})
	if err != nil {
		t.Fatal(err)
	}
	_, doneID := order("ST-DONE", now)
	w.set(doneID, behaviour{result: &tasks.CloseResult{Outcome: tasks.OutcomeAlreadyClosed, Code: "ORDERCLOSED", HTTPStatus: 200, RequestID: "req-1", FinishedAt: finished}})
	if _, err := e.c.Enqueue(ctx, tasks.CloseOrder{OutTradeNo: "ST-DONE", CreatedAt: now.Add(-time.Hour)}); err != nil {
		t.Fatal(err)
	}
	e.waitState(t, doneID, asynq.TaskStateCompleted)
	archP, archID := order("ST-ARCH", now.Add(-time.Hour))
	e.archived(t, w, archID, mustJSON(t, archP), 2, errText, failSystem())
	_, badID := order("ST-BAD", now)
	e.archived(t, w, badID, []byte(`{"out_trade_no":"ST-BAD"}`), 0, "archived without calling WeChat Pay",
		&tasks.CloseFailure{Outcome: tasks.OutcomeInvalidPayload, Class: tasks.ClassPermanent, Message: "invalid close order: created_at is required"})
	// Archived by a wxclose version that stored no failure record.
	legacyP, legacyID := order("ST-LEGACY", now.Add(-time.Hour))
	e.archived(t, w, legacyID, mustJSON(t, legacyP), 0, "wechat: permanent: code=NO_AUTH status=403 request_id=r7: no permission", nil)

	tests := []struct {
		name     string
		no       string
		check    func(t *testing.T, s Status)
		wantText []string
	}{
		{"scheduled", "ST-SCHED", func(t *testing.T, st Status) {
			if st.State != "scheduled" || st.Retried != 0 || st.MaxRetry != tasks.DefaultMaxRetry ||
				!st.NextRunAt.Equal(s.DueAt) || !st.DueAt.Equal(s.DueAt) || st.Payload == nil || st.Result != nil {
				t.Errorf("status = %+v", st)
			}
		}, []string{"state:", "scheduled", "0 retried of 20 allowed", "next run:", "out_trade_no=ST-SCHED mchid=" + testMchID}},
		{"completed", "ST-DONE", func(t *testing.T, st Status) {
			if st.State != "completed" || st.Result == nil || st.Result.Outcome != tasks.OutcomeAlreadyClosed ||
				st.Result.Code != "ORDERCLOSED" || !st.Result.FinishedAt.Equal(finished) || st.CompletedAt.IsZero() {
				t.Errorf("status = %+v, result %+v", st, st.Result)
			}
		}, []string{"completed:", "outcome:", "already_closed code=ORDERCLOSED status=200 request_id=req-1 finished "}},
		{"archived", "ST-ARCH", func(t *testing.T, st Status) {
			if st.State != "archived" || st.Retried != 2 || st.MaxRetry != 2 || st.LastFailedAt.IsZero() ||
				st.LastError != errText || st.Payload == nil || *st.Payload != archP || st.Result != nil {
				t.Errorf("status = %+v", st)
			}
			if f := st.Failure; f == nil || f.Code != "SYSTEM_ERROR" || f.Class != tasks.ClassRetryable || f.Outcome != tasks.OutcomeExhausted ||
				f.HTTPStatus != 500 || f.RequestID != "r1" || f.Attempt != 3 {
				t.Errorf("failure = %+v", st.Failure)
			}
		}, []string{"2 retried of 2 allowed", "last failure:", `exhausted code=SYSTEM_ERROR class=retryable status=500 request_id=r1 attempt 3 at `, `message="system busy"`}},
		{"archived before failure records", "ST-LEGACY", func(t *testing.T, st Status) {
			if st.State != "archived" || st.Failure != nil || st.Result != nil || st.ResultError != "" || !strings.Contains(st.LastError, "code=NO_AUTH") {
				t.Errorf("status = %+v", st)
			}
		}, []string{"last failed:", "last error:", "wechat: permanent: code=NO_AUTH status=403 request_id=r7: no permission"}},
		{"corrupt payload", "ST-BAD", func(t *testing.T, st Status) {
			if st.Payload != nil || !strings.Contains(st.PayloadError, "created_at is required") ||
				st.Failure == nil || st.Failure.Outcome != tasks.OutcomeInvalidPayload {
				t.Errorf("status = %+v", st)
			}
		}, []string{"order:", "payload is invalid: created_at is required", "last failure:", "invalid_payload class=permanent"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := e.c.Status(ctx, tasks.OrderRef{OutTradeNo: tt.no})
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, st)
			var text bytes.Buffer
			if err := WriteStatus(&text, st, false); err != nil {
				t.Fatal(err)
			}
			for _, want := range tt.wantText {
				if !strings.Contains(text.String(), want) {
					t.Errorf("text lacks %q:\n%s", want, text.String())
				}
			}
			var js bytes.Buffer
			if err := WriteStatus(&js, st, true); err != nil {
				t.Fatal(err)
			}
			var back Status
			if err := json.Unmarshal(js.Bytes(), &back); err != nil {
				t.Fatalf("JSON output does not decode: %v\n%s", err, js.String())
			}
			if back.TaskID != st.TaskID || back.State != st.State || (back.Result == nil) != (st.Result == nil) ||
				(back.Failure == nil) != (st.Failure == nil) || (back.Failure != nil && *back.Failure != *st.Failure) {
				t.Errorf("JSON round trip: %+v, want %+v", back, st)
			}
		})
	}

	for _, ref := range []tasks.OrderRef{{OutTradeNo: "NONE"}, {OutTradeNo: "ST-SCHED", SubMchID: "1"}} {
		if _, err := e.c.Status(ctx, ref); !errors.Is(err, tasks.ErrNoClose) {
			t.Errorf("Status(%+v) err = %v, want ErrNoClose", ref, err)
		}
	}
	if _, err := e.c.Status(ctx, tasks.OrderRef{}); !errors.Is(err, tasks.ErrInvalidPayload) {
		t.Errorf("Status without number: err = %v, want ErrInvalidPayload", err)
	}
	// A Redis that never held a close task has no queue yet.
	if _, err := newEnv(t).c.Status(ctx, tasks.OrderRef{OutTradeNo: "A"}); !errors.Is(err, tasks.ErrNoClose) {
		t.Errorf("empty Redis: err = %v, want ErrNoClose", err)
	}
}

func TestList(t *testing.T) {
	e := newEnv(t)
	w := e.startWorker(t)
	ctx := context.Background()
	now := time.Now()

	if ts, err := e.c.List(ctx, ListOptions{}); err != nil || len(ts) != 0 {
		t.Fatalf("empty Redis: %v, %v", ts, err)
	}
	for i := range 7 {
		if _, err := e.c.Enqueue(ctx, tasks.CloseOrder{OutTradeNo: fmt.Sprintf("L-%d", i), CreatedAt: now}); err != nil {
			t.Fatal(err)
		}
	}
	longFail := failSystem()
	longFail.Message = strings.Repeat("very long message ", 20)
	archP, archID := order("L-ARCH", now.Add(-time.Hour))
	e.archived(t, w, archID, mustJSON(t, archP), 1, errText, longFail)
	e.archived(t, w, "close:_:out_trade_no:L-JUNK", []byte("not json"), 0, "bad", nil)
	if dup, err := e.c.producer.EnqueueReconcile(ctx, tasks.ReconcilePayload{OutTradeNo: "L-PAID", MchID: testMchID, CreatedAt: now, DetectedAt: now, Reason: tasks.ReasonOrderPaid}); err != nil || dup {
		t.Fatal(dup, err)
	}

	tests := []struct {
		name    string
		opt     ListOptions
		pageSz  int
		wantIDs int
		wantErr error
	}{
		{"all states", ListOptions{}, 0, 9, nil},
		{"scheduled", ListOptions{State: "scheduled"}, 0, 7, nil},
		{"scheduled paged", ListOptions{State: "scheduled"}, 2, 7, nil},
		{"limit across pages", ListOptions{State: "scheduled", Limit: 5}, 2, 5, nil},
		{"limit across states", ListOptions{Limit: 8}, 3, 8, nil},
		{"archived", ListOptions{State: "archived"}, 0, 2, nil},
		{"completed none", ListOptions{State: "completed"}, 0, 0, nil},
		{"reconciliation", ListOptions{Queue: tasks.QueueReconcile}, 0, 1, nil},
		{"bad queue", ListOptions{Queue: "default"}, 0, 0, ErrUsage},
		{"bad state", ListOptions{State: "done"}, 0, 0, ErrUsage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.pageSz > 0 {
				defer func(old int) { listPageSize = old }(listPageSize)
				listPageSize = tt.pageSz
			}
			ts, err := e.c.List(ctx, tt.opt)
			if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if len(ts) != tt.wantIDs {
				t.Errorf("%d tasks, want %d", len(ts), tt.wantIDs)
			}
			seen := map[string]bool{}
			for _, x := range ts {
				if seen[x.ID] {
					t.Errorf("task %s listed twice", x.ID)
				}
				seen[x.ID] = true
			}
		})
	}

	ts, err := e.c.List(ctx, ListOptions{State: "archived"})
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]ListedTask{}
	for _, x := range ts {
		byID[x.ID] = x
	}
	if a := byID[archID]; a.OrderNo != "L-ARCH" || a.MchID != testMchID || a.Retried != 1 || a.MaxRetry != 1 ||
		a.LastError != errText || a.LastFailedAt.IsZero() || !a.CreatedAt.Equal(archP.CreatedAt) ||
		a.Failure == nil || a.Failure.Code != "SYSTEM_ERROR" || a.Failure.Class != tasks.ClassRetryable {
		t.Errorf("archived task = %+v, failure %+v", a, a.Failure)
	}
	if j := byID["close:_:out_trade_no:L-JUNK"]; j.PayloadError == "" || j.OrderNo != "" {
		t.Errorf("junk task = %+v", j)
	}

	var table bytes.Buffer
	if err := WriteTable(&table, ts); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(table.String(), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("table has %d lines, want header + 2:\n%s", len(lines), table.String())
	}
	col := strings.Index(lines[0], "STATE")
	for _, l := range lines[1:] {
		if !strings.HasPrefix(l[col:], "archived ") {
			t.Errorf("STATE column not aligned in %q", l)
		}
		if strings.Contains(l, archID) {
			for _, want := range []string{"L-ARCH", testMchID, "failed ", "1/1", "exhausted SYSTEM_ERROR: very long message", "..."} {
				if !strings.Contains(l, want) {
					t.Errorf("row lacks %q: %q", want, l)
				}
			}
			if strings.Contains(l, longFail.Message) {
				t.Errorf("long error not truncated: %q", l)
			}
		}
		if strings.Contains(l, "L-JUNK") && (!strings.Contains(l, "(invalid payload)") || !strings.HasSuffix(l, " bad")) {
			t.Errorf("junk row: %q", l)
		}
	}

	var js bytes.Buffer
	if err := WriteJSON(&js, ts); err != nil {
		t.Fatal(err)
	}
	var back []ListedTask
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || len(back) != 2 || back[0].ID != ts[0].ID {
		t.Errorf("JSON round trip: %v, %+v", err, back)
	}
	js.Reset()
	if err := WriteJSON(&js, nil); err != nil || strings.TrimSpace(js.String()) != "[]" {
		t.Errorf("empty JSON list = %q, want []", js.String())
	}
}

// The merchant's deadline is part of where a close stands.
func TestDescribePayloadShowsCloseAt(t *testing.T) {
	created := time.Date(2026, 11, 22, 2, 0, 0, 0, time.UTC)
	p := tasks.ClosePayload{OutTradeNo: "A1", CreatedAt: created}
	if got := describePayload(p); strings.Contains(got, "close_at") {
		t.Errorf("without close_at: %q", got)
	}
	p.CloseAt = created.Add(15 * time.Minute)
	if got := describePayload(p); !strings.Contains(got, "close_at="+formatTime(p.CloseAt)) {
		t.Errorf("with close_at: %q", got)
	}
}
