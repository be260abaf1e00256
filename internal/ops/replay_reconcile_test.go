package ops

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/wxclose/wxclose/internal/webhook"
	"github.com/wxclose/wxclose/retry"
	"github.com/wxclose/wxclose/tasks"
)

// hookReceiver is the merchant's webhook endpoint: it verifies every
// delivery with the independent Standard Webhooks library and answers 503
// while failing is set, 204 otherwise.
type hookReceiver struct {
	t   *testing.T
	wh  *standardwebhooks.Webhook
	srv *httptest.Server

	mu        sync.Mutex
	failing   bool
	attempts  map[string][][]byte // bodies by webhook-id
	delivered chan string
}

func newHookReceiver(t *testing.T, secret string) *hookReceiver {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	r := &hookReceiver{t: t, wh: wh, failing: true, attempts: map[string][][]byte{}, delivered: make(chan string, 100)}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		if err := r.wh.Verify(body, req.Header); err != nil {
			t.Errorf("delivery does not verify with the Standard Webhooks library: %v", err)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		id := req.Header.Get(webhook.HeaderID)
		r.mu.Lock()
		r.attempts[id] = append(r.attempts[id], body)
		failing := r.failing
		r.mu.Unlock()
		if failing {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusNoContent)
		r.delivered <- id
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *hookReceiver) setFailing(v bool) {
	r.mu.Lock()
	r.failing = v
	r.mu.Unlock()
}

func (r *hookReceiver) waitDelivered(t *testing.T) string {
	t.Helper()
	select {
	case id := <-r.delivered:
		return id
	case <-time.After(30 * time.Second): // only bounds a broken run
		t.Fatal("no delivery")
		return ""
	}
}

func newWebhookSecret(t *testing.T) string {
	t.Helper()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	return webhook.SecretPrefix + base64.StdEncoding.EncodeToString(key)
}

func (e *env) reconcileInfo(t *testing.T, id string) *asynq.TaskInfo {
	t.Helper()
	info, err := e.ins.GetTaskInfo(tasks.QueueReconcile, id)
	if err != nil {
		t.Fatalf("GetTaskInfo(%s): %v", id, err)
	}
	return info
}

func (e *env) waitReconcile(t *testing.T, id string, state asynq.TaskState) *asynq.TaskInfo {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		info, err := e.ins.GetTaskInfo(tasks.QueueReconcile, id)
		if err == nil && info.State == state {
			return info
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s did not reach %s: %+v %v", id, state, info, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func paid(no string) (tasks.ReconcilePayload, string) {
	p := tasks.ReconcilePayload{
		OutTradeNo: no, MchID: testMchID,
		CreatedAt:  time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC),
		DetectedAt: time.Date(2026, 11, 22, 10, 5, 2, 0, time.UTC),
		Reason:     tasks.ReasonOrderPaid,
	}
	return p, tasks.ReconcileTaskID(tasks.OrderRef{OutTradeNo: no, MchID: testMchID})
}

// TestReplayReconciliation: paid orders whose webhook deliveries were
// archived after their retry budget (a receiver answering 503) are replayed
// from the reconciliation queue's archive with a fresh budget, under the
// same task id, and then delivered, signed with the same webhook-id, as the
// Standard Webhooks library verifies. A dry run changes nothing, --code
// (close failures only) is refused, and an archived task whose payload
// names another order is left where it is.
func TestReplayReconciliation(t *testing.T) {
	e := newEnv(t)
	secret := newWebhookSecret(t)
	recv := newHookReceiver(t, secret)
	s, err := webhook.ParseSecret(secret)
	if err != nil {
		t.Fatal(err)
	}
	h, err := webhook.NewHandler(webhook.Options{URL: recv.srv.URL + "/paid", Secret: s})
	if err != nil {
		t.Fatal(err)
	}
	srv := asynq.NewServerFromRedisClient(e.srv.Client(), asynq.Config{
		Concurrency:              2,
		Queues:                   map[string]int{tasks.QueueReconcile: 1},
		RetryDelayFunc:           func(int, error, *asynq.Task) time.Duration { return 0 },
		IsFailure:                retry.IsFailure,
		DelayedTaskCheckInterval: 50 * time.Millisecond,
		TaskCheckInterval:        20 * time.Millisecond,
		LogLevel:                 asynq.FatalLevel,
	})
	if err := srv.Start(h); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)

	// The producer's options (retention, queue, id) with a budget of one
	// retry, so that the archive fills at once.
	cl := asynq.NewClientFromRedisClient(e.srv.Client())
	enqueue := func(id string, payload []byte) {
		t.Helper()
		if _, err := cl.Enqueue(asynq.NewTask(tasks.TypeReconcile, payload), asynq.Queue(tasks.QueueReconcile),
			asynq.TaskID(id), asynq.MaxRetry(1), asynq.Retention(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	p1, id1 := paid("PAID-R1")
	p2, id2 := paid("PAID-R2")
	pOther, _ := paid("PAID-OTHER")
	const foreignID = "reconcile:1900000109:out_trade_no:PAID-FOREIGN"
	enqueue(id1, mustJSON(t, p1))
	enqueue(id2, mustJSON(t, p2))
	enqueue(foreignID, mustJSON(t, pOther)) // its payload belongs to another id
	for _, id := range []string{id1, id2, foreignID} {
		info := e.waitReconcile(t, id, asynq.TaskStateArchived)
		if info.Retried != 1 || !strings.Contains(info.LastErr, "answered HTTP 503") {
			t.Fatalf("%s archived after %d retries with %q, want 1 and the HTTP status", id, info.Retried, info.LastErr)
		}
	}
	recv.setFailing(false)

	ctx := context.Background()
	if _, err := e.c.Replay(ctx, ReplayOptions{Filter: ReplayFilter{Queue: tasks.QueueReconcile, Code: "SYSTEM_ERROR"}}); !errors.Is(err, ErrUsage) {
		t.Errorf("--code on the reconciliation queue: err = %v, want ErrUsage", err)
	}
	var out bytes.Buffer
	sum, err := e.c.Replay(ctx, ReplayOptions{Filter: ReplayFilter{Queue: tasks.QueueReconcile, All: true}, DryRun: true, Out: &out})
	if err != nil || sum.Matched != 3 || sum.Replayed != 0 {
		t.Fatalf("dry run: %+v %v, want 3 matched, none replayed", sum, err)
	}
	if !strings.Contains(out.String(), "would replay "+id1) || !strings.Contains(out.String(), "answered HTTP 503") {
		t.Errorf("dry run output lacks the task or its last error:\n%s", out.String())
	}
	if info := e.reconcileInfo(t, id1); info.State != asynq.TaskStateArchived {
		t.Fatalf("dry run moved %s to %s", id1, info.State)
	}

	// One order first, then the rest.
	var errs bytes.Buffer
	sum, err = e.c.Replay(ctx, ReplayOptions{Filter: ReplayFilter{Queue: tasks.QueueReconcile, OutTradeNo: "PAID-R1"}, Out: io.Discard, Err: &errs})
	if err != nil || sum.Replayed != 1 || !sum.OK() {
		t.Fatalf("replay PAID-R1: %+v %v\n%s", sum, err, errs.String())
	}
	if got := recv.waitDelivered(t); got != id1 {
		t.Fatalf("delivered %s, want %s", got, id1)
	}
	info := e.waitReconcile(t, id1, asynq.TaskStateCompleted)
	if info.Retried != 0 || info.MaxRetry != 1 || len(info.Headers) != 0 {
		t.Errorf("replayed task: retried %d of %d, headers %v; want a fresh budget of 1 and no header added", info.Retried, info.MaxRetry, info.Headers)
	}

	errs.Reset()
	sum, err = e.c.Replay(ctx, ReplayOptions{Filter: ReplayFilter{Queue: tasks.QueueReconcile, All: true}, Out: io.Discard, Err: &errs})
	if err != nil || sum.Replayed != 1 || sum.Skipped != 1 || !sum.OK() {
		t.Fatalf("replay --all: %+v %v\n%s", sum, err, errs.String())
	}
	if !strings.Contains(errs.String(), "skipped "+foreignID) {
		t.Errorf("the foreign task was not reported:\n%s", errs.String())
	}
	if got := recv.waitDelivered(t); got != id2 {
		t.Fatalf("delivered %s, want %s", got, id2)
	}
	e.waitReconcile(t, id2, asynq.TaskStateCompleted)
	if info := e.reconcileInfo(t, foreignID); info.State != asynq.TaskStateArchived {
		t.Errorf("foreign task is %s, want left in the archive", info.State)
	}

	// Every attempt of an order, failed or replayed, carried the same
	// webhook-id (the task id) and the same body.
	recv.mu.Lock()
	defer recv.mu.Unlock()
	for id, p := range map[string]tasks.ReconcilePayload{id1: p1, id2: p2} {
		want, _ := json.Marshal(p)
		bodies := recv.attempts[id]
		if len(bodies) != 3 {
			t.Errorf("%s: %d attempts, want 3 (two archived, one replayed)", id, len(bodies))
		}
		for _, b := range bodies {
			if !bytes.Equal(b, want) {
				t.Errorf("%s: body %s, want %s", id, b, want)
			}
		}
	}
}

// TestReplayQueueValidate: the queue is checked with the filters.
func TestReplayQueueValidate(t *testing.T) {
	tests := []struct {
		f       ReplayFilter
		wantErr string
	}{
		{ReplayFilter{Queue: "payments", All: true}, `not "payments"`},
		{ReplayFilter{Queue: tasks.QueueReconcile, Code: "SYSTEM_ERROR"}, "--code selects by WeChat Pay code"},
		{ReplayFilter{Queue: tasks.QueueReconcile, NewerThan: time.Hour}, ""},
		{ReplayFilter{Queue: tasks.QueueClose, Code: "SYSTEM_ERROR"}, ""},
		{ReplayFilter{Queue: tasks.QueueReconcile}, "give at least one filter"},
	}
	for _, tt := range tests {
		err := tt.f.Validate()
		if tt.wantErr == "" {
			if err != nil {
				t.Errorf("%+v: %v", tt.f, err)
			}
			continue
		}
		if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%+v: err = %v, want ErrUsage with %q", tt.f, err, tt.wantErr)
		}
	}
}
