package webhook

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/rs/zerolog"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/wxclose/wxclose/docs"
	"github.com/wxclose/wxclose/internal/redistest"
	"github.com/wxclose/wxclose/retry"
	"github.com/wxclose/wxclose/tasks"
)

// Planned answers of the receiver, besides HTTP statuses.
const (
	answerHang     = -1 // never answer: the delivery times out
	answerRedirect = 302
)

// receiver is the merchant's endpoint. It verifies every delivery with the
// independent Standard Webhooks library and checks the body against the
// webhook in docs/openapi.yaml, then answers as planned: the planned
// statuses first, one per attempt, then 204.
type receiver struct {
	t      testing.TB
	wh     *standardwebhooks.Webhook
	schema *openapi3.Schema // nil: bodies are not checked against the document (benchmarks)
	srv    *httptest.Server

	mu         sync.Mutex
	plan       map[string][]int // by webhook-id
	failAll    bool             // answer 503 to everything
	attempts   map[string][]attempt
	problems   []string
	redirected int // requests that followed a redirect
	delivered  chan string
}

type attempt struct {
	timestamp string
	body      []byte
	status    int
}

func newReceiver(t testing.TB, secret string, plan map[string][]int) *receiver {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := openapi3.NewLoader().LoadFromData(docs.OpenAPIYAML)
	if err != nil {
		t.Fatal(err)
	}
	r := &receiver{
		t: t, wh: wh, schema: doc.Components.Schemas["ReconcilePayload"].Value,
		plan: plan, attempts: map[string][]attempt{}, delivered: make(chan string, 100000),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /hook", r.serve)
	mux.HandleFunc("/elsewhere", func(http.ResponseWriter, *http.Request) {
		r.mu.Lock()
		r.redirected++
		r.mu.Unlock()
	})
	r.srv = httptest.NewServer(mux)
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) url() string { return r.srv.URL + "/hook" }

func (r *receiver) fail(format string, args ...any) {
	r.mu.Lock()
	r.problems = append(r.problems, fmt.Sprintf(format, args...))
	r.mu.Unlock()
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		r.fail("read body: %v", err)
		return
	}
	if err := r.wh.Verify(body, req.Header); err != nil {
		r.fail("signature does not verify: %v", err)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if r.schema != nil {
		var v any
		if err := json.Unmarshal(body, &v); err != nil || req.Header.Get("Content-Type") != "application/json" {
			r.fail("body is not JSON (%v, %s): %s", err, req.Header.Get("Content-Type"), body)
		} else if err := r.schema.VisitJSON(v, openapi3.EnableJSONSchema2020()); err != nil {
			r.fail("body does not match ReconcilePayload in openapi.yaml: %v", err)
		}
	}
	id := req.Header.Get(HeaderID)
	r.mu.Lock()
	status := http.StatusNoContent
	if r.failAll {
		status = http.StatusServiceUnavailable
	} else if p := r.plan[id]; len(p) > 0 {
		status, r.plan[id] = p[0], p[1:]
	}
	r.attempts[id] = append(r.attempts[id], attempt{timestamp: req.Header.Get(HeaderTimestamp), body: body, status: status})
	r.mu.Unlock()
	switch status {
	case answerHang:
		<-req.Context().Done() // the client gives up
		return
	case answerRedirect:
		w.Header().Set("Location", "/elsewhere")
	}
	w.WriteHeader(status)
	if status >= 200 && status < 300 {
		r.delivered <- id
	}
}

func (r *receiver) check(t testing.TB) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.problems {
		t.Error(p)
	}
	if r.redirected > 0 {
		t.Errorf("%d redirects were followed", r.redirected)
	}
}

// waitDelivered waits for n successful deliveries; the deadline only keeps a
// broken test from hanging.
func (r *receiver) waitDelivered(t testing.TB, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	deadline := time.After(60 * time.Second)
	for range n {
		select {
		case id := <-r.delivered:
			got[id]++
		case <-deadline:
			t.Fatalf("only %d of %d orders delivered", len(got), n)
		}
	}
	return got
}

// worker runs the handler on a real asynq server. Failed deliveries are
// retried at once (the worker's backoff is retry's business, tested there).
func startWorker(t testing.TB, redis *redistest.Server, h *Handler, concurrency int) *asynq.Server {
	t.Helper()
	srv := asynq.NewServer(redis.ConnOpt(), asynq.Config{
		Queues:                   map[string]int{tasks.QueueReconcile: 1},
		Concurrency:              concurrency,
		RetryDelayFunc:           func(int, error, *asynq.Task) time.Duration { return 0 },
		IsFailure:                retry.IsFailure,
		DelayedTaskCheckInterval: 50 * time.Millisecond,
		TaskCheckInterval:        50 * time.Millisecond,
		LogLevel:                 asynq.FatalLevel,
	})
	mux := asynq.NewServeMux()
	mux.Handle(tasks.TypeReconcile, h)
	if err := srv.Start(mux); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	return srv
}

func paidOrder(i int) tasks.ReconcilePayload {
	return tasks.ReconcilePayload{
		OutTradeNo: fmt.Sprintf("PAID-%d", i), MchID: "1900000109",
		CreatedAt:  time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC),
		DetectedAt: time.Date(2026, 11, 22, 10, 5, 2, 0, time.UTC),
		Reason:     tasks.ReasonOrderPaid, TradeState: "SUCCESS",
	}
}

type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestDeliversEveryPaidOrder: paid orders put on the reconciliation queue
// by the producer reach the receiver through a real asynq server, signed so
// that the Standard Webhooks library verifies them. The receiver fails some
// on purpose (5xx, a redirect, no answer at all); those are retried until
// delivered, every attempt with the same webhook-id and body.
func TestDeliversEveryPaidOrder(t *testing.T) {
	redis := redistest.Start(t)
	secret := newSecretString(t, 32)
	const n = 24
	plans := [][]int{
		{500, 503},       // server errors
		{answerRedirect}, // a redirect is a failure and is not followed
		{answerHang},     // a timeout
		{},               // delivered at once
		{http.StatusOK},  // any 2xx will do, at the first attempt
		{http.StatusAccepted},
	}
	plan := map[string][]int{}
	for i := range n {
		plan[tasks.ReconcileTaskID(reconcileRef(paidOrder(i)))] = append([]int(nil), plans[i%len(plans)]...)
	}
	recv := newReceiver(t, secret, plan)

	s, err := ParseSecret(secret)
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	reg := prometheus.NewRegistry()
	h, err := NewHandler(Options{URL: recv.url(), Secret: s, Timeout: 300 * time.Millisecond,
		Logger: zerolog.New(logs).Level(zerolog.TraceLevel), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}

	producer := tasks.NewProducer(redis.ConnOpt(), tasks.ProducerConfig{})
	defer producer.Close()
	for i := range n {
		if dup, err := producer.EnqueueReconcile(t.Context(), paidOrder(i)); err != nil || dup {
			t.Fatalf("EnqueueReconcile: %v %v", dup, err)
		}
	}
	startWorker(t, redis, h, 8)
	got := recv.waitDelivered(t, n)

	insp := asynq.NewInspector(redis.ConnOpt())
	defer insp.Close()
	for i := range n {
		p := paidOrder(i)
		id := tasks.ReconcileTaskID(reconcileRef(p))
		if got[id] != 1 {
			t.Errorf("%s delivered %d times", id, got[id])
		}
		want, _ := json.Marshal(p)
		recv.mu.Lock()
		atts := recv.attempts[id]
		recv.mu.Unlock()
		wantN := 1
		for _, status := range plans[i%len(plans)] {
			if status < 200 || status > 299 {
				wantN++
			}
		}
		if len(atts) != wantN {
			t.Errorf("%s: %d attempts, want %d", id, len(atts), wantN)
		}
		for _, a := range atts {
			if !bytes.Equal(a.body, want) {
				t.Errorf("%s: body %s, want %s", id, a.body, want)
			}
			if _, err := strconv.ParseInt(a.timestamp, 10, 64); err != nil {
				t.Errorf("%s: webhook-timestamp %q", id, a.timestamp)
			}
		}
		info := waitTask(t, insp, id, asynq.TaskStateCompleted)
		if failed := len(atts) - 1; info.Retried != failed {
			t.Errorf("%s: retried %d, want %d", id, info.Retried, failed)
		}
	}
	recv.check(t)

	// What the failures looked like to an operator.
	out := logs.String()
	for _, want := range []string{"answered HTTP 500 Internal Server Error", "answered HTTP 302 Found (redirects are not followed", "no answer within 300ms", `"result":"delivered"`} {
		if !strings.Contains(out, want) {
			t.Errorf("logs lack %q", want)
		}
	}
	assertNoSecret(t, secret, map[string]string{"logs": out, "metrics": gatherText(t, reg)})
}

// TestArchivedThenReplayed: a receiver that keeps failing gets the task
// archived once its budget is spent, with the HTTP status as the reason;
// running it again (as a replay does) delivers it with the same
// webhook-id.
func TestArchivedThenReplayed(t *testing.T) {
	redis := redistest.Start(t)
	secret := newSecretString(t, 32)
	recv := newReceiver(t, secret, nil)
	recv.failAll = true
	s, _ := ParseSecret(secret)
	logs := &logBuffer{}
	h, err := NewHandler(Options{URL: recv.url(), Secret: s, Logger: zerolog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}

	// The producer's own options, with a budget of two retries so that the
	// test does not wait for twenty.
	p := paidOrder(1)
	id := tasks.ReconcileTaskID(reconcileRef(p))
	data, _ := json.Marshal(p)
	client := asynq.NewClient(redis.ConnOpt())
	defer client.Close()
	if _, err := client.Enqueue(asynq.NewTask(tasks.TypeReconcile, data), asynq.Queue(tasks.QueueReconcile), asynq.TaskID(id),
		asynq.MaxRetry(2), asynq.Retention(time.Hour)); err != nil {
		t.Fatal(err)
	}
	startWorker(t, redis, h, 2)
	insp := asynq.NewInspector(redis.ConnOpt())
	defer insp.Close()
	info := waitTask(t, insp, id, asynq.TaskStateArchived)
	if !strings.Contains(info.LastErr, "answered HTTP 503 Service Unavailable") || !strings.Contains(info.LastErr, recv.url()) {
		t.Fatalf("archived with %q, want the status and the URL", info.LastErr)
	}
	recv.mu.Lock()
	failed := len(recv.attempts[id])
	recv.failAll = false
	recv.mu.Unlock()
	if failed != 3 {
		t.Fatalf("%d attempts before archiving, want 3 (1 + 2 retries)", failed)
	}

	if err := insp.RunTask(tasks.QueueReconcile, id); err != nil {
		t.Fatal(err)
	}
	recv.waitDelivered(t, 1)
	waitTask(t, insp, id, asynq.TaskStateCompleted)
	recv.mu.Lock()
	ids := len(recv.attempts)
	recv.mu.Unlock()
	if ids != 1 {
		t.Fatalf("deliveries came with %d different webhook-ids, want 1", ids)
	}
	recv.check(t)
	assertNoSecret(t, secret, map[string]string{"logs": logs.String(), "last error": info.LastErr})
}

// TestInvalidTaskIsArchived: a reconciliation task that cannot be decoded
// is archived at once and nothing is sent.
func TestInvalidTaskIsArchived(t *testing.T) {
	redis := redistest.Start(t)
	secret := newSecretString(t, 32)
	recv := newReceiver(t, secret, nil)
	s, _ := ParseSecret(secret)
	h, err := NewHandler(Options{URL: recv.url(), Secret: s})
	if err != nil {
		t.Fatal(err)
	}
	client := asynq.NewClient(redis.ConnOpt())
	defer client.Close()
	for id, payload := range map[string]string{"reconcile:bad-1": `{"mchid":"1900000109"}`, "reconcile:bad-2": `not json`} {
		if _, err := client.Enqueue(asynq.NewTask(tasks.TypeReconcile, []byte(payload)), asynq.Queue(tasks.QueueReconcile), asynq.TaskID(id)); err != nil {
			t.Fatal(err)
		}
	}
	startWorker(t, redis, h, 2)
	insp := asynq.NewInspector(redis.ConnOpt())
	defer insp.Close()
	for _, id := range []string{"reconcile:bad-1", "reconcile:bad-2"} {
		info := waitTask(t, insp, id, asynq.TaskStateArchived)
		if info.Retried != 0 || !strings.Contains(info.LastErr, "not delivered") {
			t.Errorf("%s: retried %d, last error %q", id, info.Retried, info.LastErr)
		}
	}
	recv.mu.Lock()
	defer recv.mu.Unlock()
	if len(recv.attempts) != 0 {
		t.Fatalf("invalid tasks were delivered: %v", recv.attempts)
	}
}

// TestDeliverErrors checks the error of each kind of failure without asynq:
// it wraps ErrDelivery, names the cause, and never holds the URL's
// credentials or the key.
func TestDeliverErrors(t *testing.T) {
	secret := newSecretString(t, 32)
	s, _ := ParseSecret(secret)
	recv := newReceiver(t, secret, map[string][]int{"m-500": {500}, "m-302": {answerRedirect}, "m-hang": {answerHang}})
	withCreds := strings.Replace(recv.url(), "http://", "http://user:p4ssw0rd@", 1) + "?token=t0ken"
	h, err := NewHandler(Options{URL: withCreds, Secret: s, Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// Only the hang case needs the short timeout; the others get a generous
	// one so that a busy machine cannot turn a 500 into a timeout.
	patient, err := NewHandler(Options{URL: withCreds, Secret: s, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]string{
		"m-500":  "answered HTTP 500",
		"m-302":  "answered HTTP 302",
		"m-hang": "no answer within 200ms",
		"m-ok":   "",
	} {
		hd := patient
		if id == "m-hang" {
			hd = h
		}
		err := hd.Deliver(t.Context(), id, paidOrder(0))
		if want == "" {
			if err != nil {
				t.Errorf("%s: %v", id, err)
			}
			continue
		}
		if !errors.Is(err, ErrDelivery) || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "p4ssw0rd") || strings.Contains(err.Error(), "t0ken") {
			t.Errorf("%s: err = %v, want ErrDelivery saying %q without credentials", id, err, want)
		}
		assertNoSecret(t, secret, map[string]string{id: err.Error()})
	}
	recv.srv.Close()
	err = h.Deliver(t.Context(), "m-down", paidOrder(0))
	if !errors.Is(err, ErrDelivery) || !strings.Contains(err.Error(), "connection refused") || strings.Contains(err.Error(), "p4ssw0rd") {
		t.Errorf("receiver down: %v", err)
	}
	recv.check(t)
}

func waitTask(t testing.TB, insp *asynq.Inspector, id string, state asynq.TaskState) *asynq.TaskInfo {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		info, err := insp.GetTaskInfo(tasks.QueueReconcile, id)
		if err == nil && info.State == state {
			return info
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s did not reach %s: %+v %v", id, state, info, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func gatherText(t testing.TB, reg *prometheus.Registry) string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

// assertNoSecret fails if any text holds the secret, its base64 or a hex
// or base64 rendering of the key bytes.
func assertNoSecret(t testing.TB, secret string, texts map[string]string) {
	t.Helper()
	b64 := strings.TrimPrefix(secret, SecretPrefix)
	key, _ := base64.StdEncoding.DecodeString(b64)
	needles := []string{b64[:12], fmt.Sprintf("%x", key[:8]), base64.RawURLEncoding.EncodeToString(key)[:12]}
	for name, text := range texts {
		for _, n := range needles {
			if strings.Contains(text, n) {
				t.Errorf("%s contain the webhook secret", name)
			}
		}
	}
}

// BenchmarkDeliver measures signed deliveries to a local receiver that
// verifies each signature, from as many goroutines as GOMAXPROCS×4 (a
// worker's concurrency). Reported: deliveries/s.
func BenchmarkDeliver(b *testing.B) {
	secret := newSecretString(b, 32)
	recv := newReceiver(b, secret, nil)
	recv.delivered = make(chan string, b.N+1)
	recv.schema = nil // the document check costs far more than a delivery
	s, _ := ParseSecret(secret)
	h, err := NewHandler(Options{URL: recv.url(), Secret: s})
	if err != nil {
		b.Fatal(err)
	}
	p := paidOrder(1)
	b.SetParallelism(4)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := h.Deliver(context.Background(), "reconcile:1900000109:out_trade_no:PAID-1", p); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "deliveries/s")
	recv.check(b)
}

// BenchmarkDeliverThroughAsynq measures the real path: b.N paid orders on
// the reconciliation queue of a private redis-server, delivered by an
// asynq server (concurrency 20, the worker's default) to a local receiver
// that verifies every signature. Reported: deliveries/s, from the server's
// start to the last delivery.
//
//	go test ./internal/webhook -run '^$' -bench DeliverThroughAsynq -benchtime 10000x
func BenchmarkDeliverThroughAsynq(b *testing.B) {
	redis := redistest.Start(b)
	secret := newSecretString(b, 32)
	recv := newReceiver(b, secret, nil)
	recv.delivered = make(chan string, b.N+1)
	recv.schema = nil // the document check costs far more than a delivery
	s, _ := ParseSecret(secret)
	h, err := NewHandler(Options{URL: recv.url(), Secret: s})
	if err != nil {
		b.Fatal(err)
	}
	producer := tasks.NewProducer(redis.ConnOpt(), tasks.ProducerConfig{})
	defer producer.Close()
	for i := range b.N {
		if _, err := producer.EnqueueReconcile(context.Background(), paidOrder(i)); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	start := time.Now()
	startWorker(b, redis, h, 20)
	recv.waitDelivered(b, b.N)
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "deliveries/s")
	b.StopTimer()
	recv.check(b)
}
