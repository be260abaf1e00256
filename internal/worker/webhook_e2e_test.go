package worker_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/wxclose/wxclose/internal/config"
	"github.com/wxclose/wxclose/internal/ops"
	"github.com/wxclose/wxclose/tasks"
	"github.com/wxclose/wxclose/wechat"
	"github.com/wxclose/wxclose/wechat/sandbox"
)

// Planned answers of the receiver besides HTTP statuses.
const hang = -1 // hold the request until the client gives up or the test releases it

// hookReceiver is a merchant's reconciler endpoint. It verifies every
// delivery with the independent Standard Webhooks library (a delivery that
// does not verify fails the test), then answers as planned for its
// webhook-id: the planned statuses one per attempt, then 204; 503 to every
// attempt while the id is in failing.
type hookReceiver struct {
	t       *testing.T
	wh      *standardwebhooks.Webhook
	srv     *httptest.Server
	secret  string
	release chan struct{}

	mu        sync.Mutex
	plan      map[string][]int
	failing   map[string]bool
	attempts  map[string][][]byte // bodies by webhook-id
	hanging   int
	delivered chan string
}

func newHookReceiver(t *testing.T) *hookReceiver {
	t.Helper()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	secret := "whsec_" + base64.StdEncoding.EncodeToString(key)
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	r := &hookReceiver{
		t: t, wh: wh, secret: secret, release: make(chan struct{}),
		plan: map[string][]int{}, failing: map[string]bool{}, attempts: map[string][][]byte{},
		delivered: make(chan string, 100),
	}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *hookReceiver) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return
	}
	if err := r.wh.Verify(body, req.Header); err != nil {
		r.t.Errorf("delivery does not verify with the Standard Webhooks library: %v", err)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	id := req.Header.Get("webhook-id")
	r.mu.Lock()
	r.attempts[id] = append(r.attempts[id], body)
	status := http.StatusNoContent
	switch p := r.plan[id]; {
	case r.failing[id]:
		status = http.StatusServiceUnavailable
	case len(p) > 0:
		status, r.plan[id] = p[0], p[1:]
	}
	if status == hang {
		r.hanging++
	}
	r.mu.Unlock()
	if status == hang {
		select {
		case <-req.Context().Done():
		case <-r.release:
			w.WriteHeader(http.StatusNoContent)
			r.delivered <- id
		}
		r.mu.Lock()
		r.hanging--
		r.mu.Unlock()
		return
	}
	w.WriteHeader(status)
	if status/100 == 2 {
		r.delivered <- id
	}
}

func (r *hookReceiver) set(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f()
}

func (r *hookReceiver) waitDelivered(t *testing.T, want string) {
	t.Helper()
	select {
	case id := <-r.delivered:
		if id != want {
			t.Fatalf("delivered %s, want %s", id, want)
		}
	case <-time.After(60 * time.Second): // only bounds a broken run
		t.Fatalf("%s was not delivered", want)
	}
}

// configure points the worker's webhook at the receiver.
func (r *hookReceiver) configure(t *testing.T, timeout time.Duration, concurrency int) func(*config.Worker) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "webhook.secret")
	if err := os.WriteFile(file, []byte(r.secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return func(c *config.Worker) {
		c.WebhookURL, c.WebhookSecretFile = r.srv.URL+"/wxclose/paid", file
		c.WebhookTimeout, c.WebhookConcurrency = timeout, concurrency
	}
}

func (b *bundle) waitReconcile(t *testing.T, id string, state asynq.TaskState) *asynq.TaskInfo {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		info, err := b.inspector.GetTaskInfo(tasks.QueueReconcile, id)
		if err == nil && info.State == state {
			return info
		}
		if time.Now().After(deadline) {
			t.Fatalf("reconciliation task %s did not reach %s: %+v %v\nlogs:\n%s", id, state, info, err, b.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestPaidOrdersReachTheWebhook is issue 11's end-to-end path: orders that
// turn out paid when the worker closes them in the sandbox go to the
// reconciliation queue, and the worker delivers each one to the merchant's
// receiver, signed so that the Standard Webhooks library verifies it. The
// receiver fails on purpose: one order gets a 503 and then no answer within
// the timeout and is delivered on its third attempt, with the worker's
// backoff; another fails every attempt and is archived after
// WXCLOSE_MAX_RETRY retries with the HTTP status as the reason, then
// replayed with `enqueue replay --queue reconciliation` (ops.Replay) and
// delivered. Every attempt of an order carries the same webhook-id (its
// reconciliation task id) and body; an order that closes sends nothing; the
// delivery metrics count it all; the secret appears nowhere.
func TestPaidOrdersReachTheWebhook(t *testing.T) {
	t.Parallel()
	recv := newHookReceiver(t)
	b := setup(t, setupOptions{api: wechat.APIv3, maxRetry: 2, configure: recv.configure(t, 500*time.Millisecond, 2)})
	mch := b.creds.MchID
	flaky := tasks.ReconcileTaskID(tasks.OrderRef{OutTradeNo: "WH-PAID-1", MchID: mch})
	down := tasks.ReconcileTaskID(tasks.OrderRef{OutTradeNo: "WH-PAID-2", MchID: mch})
	recv.set(func() {
		recv.plan[flaky] = []int{http.StatusServiceUnavailable, hang}
		recv.failing[down] = true
	})

	closes := map[string]string{}
	for no, state := range map[string]sandbox.State{"WH-PAID-1": sandbox.StatePaid, "WH-PAID-2": sandbox.StatePaid, "WH-OPEN-3": sandbox.StateUnpaid} {
		closes[no] = b.enqueue(t, b.order(t, no, 0, state)).TaskID
	}
	for no, id := range closes {
		info := b.waitFinal(t, id)
		want := tasks.OutcomePaid
		if no == "WH-OPEN-3" {
			want = tasks.OutcomeClosed
		}
		if info.State != asynq.TaskStateCompleted || closeResult(t, info).Outcome != want {
			t.Fatalf("close of %s: %s %s, want completed/%s", no, info.State, info.Result, want)
		}
	}

	recv.waitDelivered(t, flaky)
	if info := b.waitReconcile(t, flaky, asynq.TaskStateCompleted); info.Retried != 2 {
		t.Errorf("%s delivered after %d retries, want 2", flaky, info.Retried)
	}
	info := b.waitReconcile(t, down, asynq.TaskStateArchived)
	if info.Retried != 2 || !strings.Contains(info.LastErr, "answered HTTP 503 Service Unavailable") ||
		!strings.Contains(info.LastErr, "gave up after 2 retries") {
		t.Fatalf("%s archived after %d retries with %q, want WXCLOSE_MAX_RETRY (2) and the HTTP status", down, info.Retried, info.LastErr)
	}

	// The receiver is fixed; the operator replays.
	recv.set(func() { recv.failing[down] = false })
	sum, err := ops.New(b.rdb, tasks.ProducerConfig{MchID: mch}).Replay(context.Background(), ops.ReplayOptions{
		Filter: ops.ReplayFilter{Queue: tasks.QueueReconcile, OutTradeNo: "WH-PAID-2"}, Out: io.Discard, Err: io.Discard,
	})
	if err != nil || sum.Replayed != 1 {
		t.Fatalf("replay: %+v %v", sum, err)
	}
	recv.waitDelivered(t, down)
	if info := b.waitReconcile(t, down, asynq.TaskStateCompleted); info.Retried != 0 {
		t.Errorf("replayed %s used %d retries, want 0", down, info.Retried)
	}

	recv.mu.Lock()
	attempts := map[string][][]byte{}
	for id, bodies := range recv.attempts {
		attempts[id] = bodies
	}
	recv.mu.Unlock()
	if len(attempts) != 2 {
		t.Errorf("deliveries for %d webhook-ids, want 2 (the closed order sends nothing)", len(attempts))
	}
	for id, n := range map[string]int{flaky: 3, down: 4} {
		bodies := attempts[id]
		if len(bodies) != n {
			t.Errorf("%s: %d attempts, want %d", id, len(bodies), n)
			continue
		}
		var p tasks.ReconcilePayload
		if err := json.Unmarshal(bodies[0], &p); err != nil || p.Reason != tasks.ReasonOrderPaid || p.DetectedAt.IsZero() ||
			tasks.ReconcileTaskID(tasks.OrderRef{OutTradeNo: p.OutTradeNo, MchID: p.MchID}) != id {
			t.Errorf("%s: body %s does not describe the paid order (%v)", id, bodies[0], err)
		}
		for _, body := range bodies[1:] {
			if !bytes.Equal(body, bodies[0]) {
				t.Errorf("%s: bodies differ between attempts:\n%s\n%s", id, bodies[0], body)
			}
		}
	}

	exposition := scrapeMetrics(t, b)
	for series, want := range map[string]float64{
		`wxclose_webhook_deliveries_total{result="delivered"}`: 2,
		`wxclose_webhook_deliveries_total{result="failed"}`:    5,
		`wxclose_webhook_delivery_duration_seconds_count`:      7,
	} {
		if v, _ := metricValue(exposition, series); v != want {
			t.Errorf("%s = %v, want %v", series, v, want)
		}
	}
	key := strings.TrimPrefix(recv.secret, "whsec_")
	if logs := b.logs.String(); strings.Contains(logs, key[:16]) || !strings.Contains(logs, `"result":"delivered"`) {
		t.Errorf("logs hold the webhook secret, or no delivery line:\n%s", logs)
	}
}

// TestHangingWebhookDoesNotHoldCloses: the webhook has its own asynq
// server, so a receiver that does not answer holds only the webhook's
// slots. With one close slot and one webhook slot, closes keep completing
// while a delivery hangs.
func TestHangingWebhookDoesNotHoldCloses(t *testing.T) {
	t.Parallel()
	recv := newHookReceiver(t)
	configure := recv.configure(t, time.Minute, 1)
	b := setup(t, setupOptions{api: wechat.APIv3, configure: func(c *config.Worker) {
		configure(c)
		c.Concurrency = 1
	}})
	t.Cleanup(func() { close(recv.release) }) // before the worker stops (cleanups run last first)
	stuck := tasks.ReconcileTaskID(tasks.OrderRef{OutTradeNo: "HANG-PAID-1", MchID: b.creds.MchID})
	recv.set(func() { recv.plan[stuck] = []int{hang} })

	paid := b.enqueue(t, b.order(t, "HANG-PAID-1", 0, sandbox.StatePaid))
	b.waitFinal(t, paid.TaskID)
	b.waitReconcile(t, stuck, asynq.TaskStateActive)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		recv.mu.Lock()
		n := recv.hanging
		recv.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the delivery never reached the receiver")
		}
	}
	for _, no := range []string{"HANG-OPEN-2", "HANG-OPEN-3", "HANG-OPEN-4"} {
		s := b.enqueue(t, b.order(t, no, 0, sandbox.StateUnpaid))
		if info := b.waitFinal(t, s.TaskID); info.State != asynq.TaskStateCompleted {
			t.Fatalf("%s: %s %s", no, info.State, info.LastErr)
		}
	}
	recv.mu.Lock()
	defer recv.mu.Unlock()
	if recv.hanging != 1 {
		t.Fatalf("the delivery stopped hanging (%d) before the closes were done; the test proves nothing", recv.hanging)
	}
}
