package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/rs/zerolog"

	"github.com/wxclose/wxclose/internal/config"
	"github.com/wxclose/wxclose/internal/redistest"
	"github.com/wxclose/wxclose/internal/worker"
	"github.com/wxclose/wxclose/retry"
	"github.com/wxclose/wxclose/tasks"
	"github.com/wxclose/wxclose/wechat"
	"github.com/wxclose/wxclose/wechat/sandbox"
)

// apiCall sends one request to the close API and decodes a JSON answer
// into out (when not nil).
func apiCall(t *testing.T, method, url, body string, out any) int {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: %d %s: %v", method, url, resp.StatusCode, data, err)
		}
	}
	return resp.StatusCode
}

type scheduledAnswer struct {
	TaskID    string `json:"task_id"`
	State     string `json:"state"`
	Duplicate bool   `json:"duplicate"`
}

type statusAnswer struct {
	TaskID string `json:"task_id"`
	State  string `json:"state"`
	Result *struct {
		Outcome string `json:"outcome"`
	} `json:"result"`
	Code string `json:"code"` // problems
}

// TestCloseAPIOnTheWorker: the worker serves the close API at /v1/ on its
// HTTP address (loopback, no tokens). A close scheduled over HTTP is run by
// the same worker against the sandbox; POST is idempotent, GET follows the
// close to its result, DELETE of a completed close answers 409, and the
// requests are counted on the worker's /metrics.
func TestCloseAPIOnTheWorker(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{api: wechat.APIv3, configure: func(c *config.Worker) { c.API = true }})
	base := "http://" + b.worker.HTTPAddr() + "/v1/closes"
	o := b.order(t, "API-WORKER-1", 0, sandbox.StateUnpaid)
	body := `{"out_trade_no":"API-WORKER-1","created_at":"` + o.CreatedAt.UTC().Format(time.RFC3339Nano) + `"}`
	want := tasks.CloseTaskID(tasks.OrderRef{OutTradeNo: "API-WORKER-1", MchID: b.creds.MchID})

	var s scheduledAnswer
	if code := apiCall(t, http.MethodPost, base, body, &s); code != http.StatusCreated || s.TaskID != want || s.Duplicate {
		t.Fatalf("POST: %d %+v, want 201 for %s", code, s, want)
	}
	if code := apiCall(t, http.MethodPost, base, body, &s); code != http.StatusOK || !s.Duplicate {
		t.Fatalf("POST again: %d %+v, want 200 duplicate", code, s)
	}
	b.waitFinal(t, want)
	var st statusAnswer
	if code := apiCall(t, http.MethodGet, base+"/"+want, "", &st); code != http.StatusOK || st.State != "completed" || st.Result == nil || st.Result.Outcome != tasks.OutcomeClosed {
		t.Fatalf("GET: %d %+v, want completed/closed", code, st)
	}
	if code := apiCall(t, http.MethodDelete, base+"/"+want, "", &st); code != http.StatusConflict {
		t.Fatalf("DELETE of a completed close: %d, want 409", code)
	}
	if st, _ := b.sandbox.Order("API-WORKER-1"); st.State != sandbox.StateClosed {
		t.Errorf("sandbox order is %v, want closed", st.State)
	}
	exposition := scrapeMetrics(t, b)
	for series, want := range map[string]float64{
		`wxclose_api_requests_total{route="POST /v1/closes",status="201"}`:             1,
		`wxclose_api_requests_total{route="POST /v1/closes",status="200"}`:             1,
		`wxclose_api_requests_total{route="DELETE /v1/closes/{task_id}",status="409"}`: 1,
		`wxclose_api_request_duration_seconds_count{route="POST /v1/closes"}`:          2,
	} {
		if v, _ := metricValue(exposition, series); v != want {
			t.Errorf("%s = %v, want %v", series, v, want)
		}
	}
}

// TestAPIOnlyConsumesNothing runs the worker in -api-only mode with no
// WeChat Pay configuration at all: it serves the API, /healthz, /readyz,
// /metrics and the dashboard, never builds a WeChat Pay client, and
// registers no asynq server, so closes it schedules (and paid orders,
// even with a webhook configured) wait for a worker.
func TestAPIOnlyConsumesNothing(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	cfg := config.Worker{
		Redis: srv.ConnOpt(), MchID: "1900000109", APIOnly: true, API: true, UI: true,
		Concurrency: 4, Retry: retry.Policy{}, MaxRetry: 20, CloseMargin: time.Second,
		HTTPAddr: "127.0.0.1:0",
		// Ignored in this mode (LoadAPIOnly would not even read them).
		WebhookURL: "http://127.0.0.1:1/paid", WebhookSecretFile: "/nonexistent", WebhookConcurrency: 1, WebhookTimeout: time.Second,
	}
	logs := &syncBuffer{}
	w, err := worker.New(worker.Options{Config: cfg, Logger: zerolog.New(logs), NewCloser: func(wechat.Hooks) (wechat.Closer, error) {
		return nil, errors.New("-api-only built a WeChat Pay client")
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	host := "http://" + w.HTTPAddr()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if resp, err := http.Get(host + "/healthz"); err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("HTTP never served")
		}
	}

	created := time.Now().Add(-10 * time.Minute).UTC().Format(time.RFC3339)
	var s scheduledAnswer
	for _, no := range []string{"API-ONLY-1", "API-ONLY-2"} {
		if code := apiCall(t, http.MethodPost, host+"/v1/closes", `{"out_trade_no":"`+no+`","created_at":"`+created+`"}`, &s); code != http.StatusCreated || s.State != "pending" {
			t.Fatalf("POST %s: %d %+v, want 201 pending (due already)", no, code, s)
		}
	}
	id1 := tasks.CloseTaskID(tasks.OrderRef{OutTradeNo: "API-ONLY-1", MchID: cfg.MchID})
	id2 := tasks.CloseTaskID(tasks.OrderRef{OutTradeNo: "API-ONLY-2", MchID: cfg.MchID})
	var st statusAnswer
	if code := apiCall(t, http.MethodGet, host+"/v1/closes/"+id1, "", &st); code != http.StatusOK || st.State != "pending" {
		t.Fatalf("GET: %d %+v", code, st)
	}
	if code := apiCall(t, http.MethodDelete, host+"/v1/closes/"+id1, "", nil); code != http.StatusNoContent {
		t.Fatalf("DELETE: %d, want 204", code)
	}
	if code := apiCall(t, http.MethodGet, host+"/v1/closes/"+id1, "", &st); code != http.StatusNotFound || st.Code == "" {
		t.Fatalf("GET after DELETE: %d %+v, want a 404 problem", code, st)
	}
	rdb := srv.Client()
	producer := tasks.NewProducerFromRedisClient(rdb, tasks.ProducerConfig{})
	if _, err := producer.EnqueueReconcile(ctx, tasks.ReconcilePayload{OutTradeNo: "API-ONLY-PAID", MchID: cfg.MchID,
		CreatedAt: time.Now(), DetectedAt: time.Now(), Reason: tasks.ReasonOrderPaid}); err != nil {
		t.Fatal(err)
	}

	for path, want := range map[string]string{"/healthz": "ok", "/readyz": "ok", "/metrics": "wxclose_api_requests_total", "/monitoring/": "<"} {
		resp, err := http.Get(host + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
			t.Errorf("GET %s: %d, body lacks %q", path, resp.StatusCode, want)
		}
	}

	// Nothing consumes: no asynq server announced itself, and the tasks
	// wait where the API and the producer put them.
	insp := asynq.NewInspectorFromRedisClient(rdb)
	if servers, err := insp.Servers(); err != nil || len(servers) != 0 {
		t.Fatalf("asynq servers: %+v %v, want none", servers, err)
	}
	if info, err := insp.GetTaskInfo(tasks.QueueClose, id2); err != nil || info.State != asynq.TaskStatePending {
		t.Errorf("close %s: %+v %v, want still pending", id2, info, err)
	}
	if infos, err := insp.ListPendingTasks(tasks.QueueReconcile); err != nil || len(infos) != 1 {
		t.Errorf("reconciliation queue: %d pending, %v; want the paid order, untouched", len(infos), err)
	}
	if out := logs.String(); !strings.Contains(out, "API-only mode started") || !strings.Contains(out, "close API at http://127.0.0.1:") {
		t.Errorf("startup logs do not say what runs:\n%s", out)
	}
}
