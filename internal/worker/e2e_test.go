package worker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/wxclose/wxclose/internal/config"
	"github.com/wxclose/wxclose/internal/redistest"
	"github.com/wxclose/wxclose/internal/worker"
	"github.com/wxclose/wxclose/retry"
	"github.com/wxclose/wxclose/tasks"
	"github.com/wxclose/wxclose/wechat"
	"github.com/wxclose/wxclose/wechat/sandbox"
)

// TestMain raises -parallel: these tests wait on timers (scheduled tasks,
// retry backoff), not on the CPU, and the default of GOMAXPROCS would run
// them almost one at a time on a 2-core machine.
func TestMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.parallel"); f != nil && f.Value.String() == strconv.Itoa(runtime.GOMAXPROCS(0)) {
		_ = flag.Set("test.parallel", "32")
	}
	redistest.Main(m)
}

// bundle is one running pipeline: a private Redis, a sandbox WeChat Pay and
// a worker, as river's setup(t) pattern.
type bundle struct {
	redis     *redistest.Server
	rdb       *redis.Client
	sandbox   *sandbox.Server
	creds     sandbox.Credentials
	producer  *tasks.Producer
	inspector *asynq.Inspector
	logs      *syncBuffer
	worker    *worker.Worker
	// stop shuts the worker down gracefully and waits for Run to return.
	stop func()
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type setupOptions struct {
	api      wechat.APIVersion
	maxRetry int
	// uiUser and uiPassword, when set, turn the dashboard on with them.
	uiUser, uiPassword string
	// asynqDefaults runs the worker with asynq's default check intervals
	// instead of wxclose's, as a baseline for scheduling precision.
	asynqDefaults bool
	// sandboxNow is WeChat Pay's clock; if nil, time.Now.
	sandboxNow func() time.Time
	// configure, if set, changes the worker's configuration last (the
	// close API, the webhook).
	configure func(*config.Worker)
}

func setup(t *testing.T, o setupOptions) *bundle {
	t.Helper()
	srv := redistest.Start(t)
	sb, err := sandbox.New(sandbox.Options{Now: o.sandboxNow})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(sb.Handler())
	t.Cleanup(hs.Close)
	creds := sb.Credentials()

	wc := wechat.Config{API: o.api, BaseURL: hs.URL, MchID: creds.MchID, Timeout: 2 * time.Second}
	switch o.api {
	case wechat.APIv2:
		wc.AppID, wc.APIKey = creds.AppID, creds.APIKey
	default:
		if wc.PrivateKey, err = wechat.LoadPrivateKey(creds.MerchantPrivateKeyPEM); err != nil {
			t.Fatal(err)
		}
		wc.CertSerial = creds.MerchantCertSerial
		if wc.PlatformCerts, err = wechat.LoadCertificates(creds.PlatformCertPEM); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := wechat.New(wc); err != nil {
		t.Fatal(err)
	}
	if o.maxRetry == 0 {
		o.maxRetry = 20
	}
	cfg := config.Worker{
		Redis: srv.ConnOpt(), MchID: creds.MchID, WeChatAPI: o.api,
		Concurrency: 8,
		// Multiplier 3 with little jitter keeps successive retry gaps
		// clearly apart even after asynq's whole-second rounding.
		Retry:       retry.Policy{Initial: time.Second, Max: time.Minute, Multiplier: 3, Jitter: 0.1},
		MaxRetry:    o.maxRetry,
		HTTPAddr:    "127.0.0.1:0",
		CloseMargin: time.Second,
		UI:          o.uiUser != "",
		UIUser:      o.uiUser,
		UIPassword:  o.uiPassword,
	}
	if o.configure != nil {
		o.configure(&cfg)
	}
	logs := &syncBuffer{}
	wo := worker.Options{Config: cfg, Logger: zerolog.New(logs), NewCloser: func(h wechat.Hooks) (wechat.Closer, error) {
		wc.Hooks = h
		return wechat.New(wc)
	}}
	if o.asynqDefaults {
		wo.DelayedTaskCheckInterval, wo.TaskCheckInterval = 5*time.Second, time.Second
	}
	w, err := worker.New(wo)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var stopOnce sync.Once
	stop := func() {
		stopOnce.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("worker.Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	rdb := srv.Client()
	b := &bundle{
		redis: srv, rdb: rdb, sandbox: sb, creds: creds, logs: logs, worker: w, stop: stop,
		producer:  tasks.NewProducerFromRedisClient(rdb, tasks.ProducerConfig{MchID: creds.MchID, MaxRetry: o.maxRetry}),
		inspector: asynq.NewInspectorFromRedisClient(rdb),
	}
	return b
}

// order registers an unpaid order at the sandbox, created so long ago that
// its close is due in about dueIn, and returns the producer's request.
func (b *bundle) order(t *testing.T, no string, dueIn time.Duration, state sandbox.State) tasks.CloseOrder {
	t.Helper()
	created := time.Now().Add(-tasks.MinCloseAge + dueIn)
	b.sandbox.AddOrder(sandbox.Order{OutTradeNo: no, CreatedAt: created, State: state})
	return tasks.CloseOrder{OutTradeNo: no, CreatedAt: created}
}

func (b *bundle) enqueue(t *testing.T, o tasks.CloseOrder) tasks.Scheduled {
	t.Helper()
	s, err := b.producer.EnqueueClose(context.Background(), o)
	if err != nil {
		t.Fatalf("EnqueueClose(%s): %v", o.OutTradeNo, err)
	}
	return s
}

// waitFinal waits until the task is completed or archived. The deadline only
// bounds a broken run; nothing asserts on how fast it was.
func (b *bundle) waitFinal(t *testing.T, taskID string) *asynq.TaskInfo {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		info, err := b.inspector.GetTaskInfo(tasks.QueueClose, taskID)
		if err == nil && (info.State == asynq.TaskStateCompleted || info.State == asynq.TaskStateArchived) {
			return info
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s did not finish: info=%+v err=%v\nlogs:\n%s", taskID, info, err, b.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// closeResult reads a close task's result as every reader does: a plain
// close stores none, and a completed task without one was closed.
func closeResult(t *testing.T, info *asynq.TaskInfo) tasks.CloseResult {
	t.Helper()
	r, _, err := tasks.ReadCloseRecord(info)
	if err != nil || r == nil {
		t.Fatalf("task %s (%s) result %q: %+v, %v", info.ID, info.State, info.Result, r, err)
	}
	return *r
}

func TestPipeline(t *testing.T) {
	for _, api := range []wechat.APIVersion{wechat.APIv3, wechat.APIv2} {
		t.Run(string(api), func(t *testing.T) {
			t.Parallel()
			testPipeline(t, api)
		})
	}
}

func testPipeline(t *testing.T, api wechat.APIVersion) {
	b := setup(t, setupOptions{api: api, maxRetry: 3})
	ctx := context.Background()

	t.Run("group", func(t *testing.T) {
		t.Run("closes after due time, never before creation + 5m", func(t *testing.T) {
			t.Parallel()
			o := b.order(t, "DUE-1", 2*time.Second, sandbox.StateUnpaid)
			s := b.enqueue(t, o)
			info := b.waitFinal(t, s.TaskID)
			if info.State != asynq.TaskStateCompleted || closeResult(t, info).Outcome != tasks.OutcomeClosed {
				t.Fatalf("state %s result %s, want completed/closed", info.State, info.Result)
			}
			calls := b.sandbox.CallsFor("DUE-1")
			if len(calls) != 1 {
				t.Fatalf("%d calls, want 1: %+v", len(calls), calls)
			}
			if calls[0].At.Before(s.DueAt) || calls[0].At.Before(tasks.EarliestClose(o.CreatedAt)) {
				t.Fatalf("called at %s, due %s, earliest %s", calls[0].At, s.DueAt, tasks.EarliestClose(o.CreatedAt))
			}
			if st, _ := b.sandbox.Order("DUE-1"); st.State != sandbox.StateClosed {
				t.Fatalf("sandbox order state %v, want closed", st.State)
			}
		})

		// A foreign producer that ignores the 5-minute rule puts tasks on the
		// queue at once. MaxRetry(0) matters: asynq archives any error of a
		// task with no retries left, so a short wait must happen in place.
		for _, tc := range []struct {
			name     string
			early    time.Duration
			maxRetry int
		}{
			{"task a moment early waits in place", 2 * time.Second, 0},
			{"task far too early is postponed without spending a retry", 8 * time.Second, 1},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				no := fmt.Sprintf("EARLY-%d", tc.maxRetry)
				o := b.order(t, no, tc.early, sandbox.StateUnpaid)
				data, _ := json.Marshal(tasks.ClosePayload{OutTradeNo: o.OutTradeNo, MchID: b.creds.MchID, CreatedAt: o.CreatedAt})
				id := tasks.CloseTaskID(tasks.OrderRef{OutTradeNo: o.OutTradeNo, MchID: b.creds.MchID})
				client := asynq.NewClientFromRedisClient(b.rdb)
				if _, err := client.Enqueue(asynq.NewTask(tasks.TypeClose, data), asynq.Queue(tasks.QueueClose), asynq.TaskID(id),
					asynq.MaxRetry(tc.maxRetry), asynq.Retention(time.Hour)); err != nil {
					t.Fatal(err)
				}
				info := b.waitFinal(t, id)
				if info.State != asynq.TaskStateCompleted || info.Retried != 0 {
					t.Fatalf("state %s retried %d last error %q, want completed with 0 retries", info.State, info.Retried, info.LastErr)
				}
				calls := b.sandbox.CallsFor(no)
				if len(calls) != 1 || calls[0].At.Before(tasks.EarliestClose(o.CreatedAt)) {
					t.Fatalf("calls %+v, want one after %s", calls, tasks.EarliestClose(o.CreatedAt))
				}
			})
		}

		t.Run("already closed and not found complete", func(t *testing.T) {
			t.Parallel()
			closed := b.enqueue(t, b.order(t, "CLOSED-1", 0, sandbox.StateClosed))
			missing := b.enqueue(t, tasks.CloseOrder{OutTradeNo: "MISSING-1", CreatedAt: time.Now().Add(-tasks.MinCloseAge)})
			for id, want := range map[string]string{closed.TaskID: tasks.OutcomeAlreadyClosed, missing.TaskID: tasks.OutcomeNotFound} {
				info := b.waitFinal(t, id)
				if got := closeResult(t, info).Outcome; info.State != asynq.TaskStateCompleted || got != want {
					t.Errorf("%s: state %s outcome %s, want completed/%s", id, info.State, got, want)
				}
			}
		})

		t.Run("paid order gets exactly one reconciliation task even when closed twice", func(t *testing.T) {
			t.Parallel()
			o := b.order(t, "PAID-1", 0, sandbox.StatePaid)
			s := b.enqueue(t, o)
			b.waitFinal(t, s.TaskID)
			// Run the close a second time, as after a crash between the
			// reconciliation hand-off and the task's completion.
			if err := b.inspector.DeleteTask(tasks.QueueClose, s.TaskID); err != nil {
				t.Fatal(err)
			}
			s2 := b.enqueue(t, o)
			if s2.Duplicate {
				t.Fatal("second enqueue after delete reported duplicate")
			}
			info := b.waitFinal(t, s2.TaskID)
			if got := closeResult(t, info).Outcome; got != tasks.OutcomePaid {
				t.Fatalf("outcome %s, want paid", got)
			}
			if n := len(b.sandbox.CallsFor("PAID-1")); n != 2 {
				t.Fatalf("%d close calls, want 2", n)
			}
			rid := tasks.ReconcileTaskID(tasks.OrderRef{OutTradeNo: "PAID-1", MchID: b.creds.MchID})
			pending, err := b.inspector.ListPendingTasks(tasks.QueueReconcile, asynq.PageSize(1000))
			if err != nil {
				t.Fatal(err)
			}
			var found int
			for _, ti := range pending {
				if ti.ID == rid {
					found++
					rp, err := tasks.DecodeReconcilePayload(ti.Payload)
					if err != nil || rp.Reason != tasks.ReasonOrderPaid || rp.OutTradeNo != "PAID-1" || rp.DetectedAt.IsZero() || !rp.CreatedAt.Equal(o.CreatedAt) {
						t.Fatalf("reconcile payload %s: %+v %v", ti.Payload, rp, err)
					}
				}
			}
			if found != 1 {
				t.Fatalf("%d reconciliation tasks for PAID-1, want 1", found)
			}
		})

		t.Run("SYSTEMERROR twice then success: three calls with growing gaps", func(t *testing.T) {
			t.Parallel()
			o := b.order(t, "FLAKY-1", 0, sandbox.StateUnpaid)
			b.sandbox.Script("FLAKY-1", sandbox.SystemError(), sandbox.SystemError())
			info := b.waitFinal(t, b.enqueue(t, o).TaskID)
			if info.State != asynq.TaskStateCompleted || closeResult(t, info).Outcome != tasks.OutcomeClosed {
				t.Fatalf("state %s result %s", info.State, info.Result)
			}
			calls := b.sandbox.CallsFor("FLAKY-1")
			if len(calls) != 3 {
				t.Fatalf("%d calls, want 3", len(calls))
			}
			gap1, gap2 := calls[1].At.Sub(calls[0].At), calls[2].At.Sub(calls[1].At)
			if !(gap2 > gap1) || gap1 < 900*time.Millisecond {
				t.Fatalf("gaps %s then %s, want growing and at least the initial backoff", gap1, gap2)
			}
			if info.Retried != 2 {
				t.Fatalf("retried %d, want 2", info.Retried)
			}
		})

		t.Run("rate limiting does not use up the retry budget", func(t *testing.T) {
			t.Parallel()
			// The budget is 3 retries; five 429s in a row would exhaust it
			// if they counted.
			o := b.order(t, "LIMITED-1", 0, sandbox.StateUnpaid)
			steps := make([]sandbox.Step, 5)
			for i := range steps {
				steps[i] = sandbox.RateLimited(time.Second)
			}
			b.sandbox.Script("LIMITED-1", steps...)
			info := b.waitFinal(t, b.enqueue(t, o).TaskID)
			if info.State != asynq.TaskStateCompleted || info.Retried != 0 {
				t.Fatalf("state %s retried %d last error %q, want completed with 0 retries spent", info.State, info.Retried, info.LastErr)
			}
			if n := len(b.sandbox.CallsFor("LIMITED-1")); n != 6 {
				t.Fatalf("%d calls, want 6", n)
			}
		})

		t.Run("permanent error is archived after one call with its reason", func(t *testing.T) {
			t.Parallel()
			o := b.order(t, "NOAUTH-1", 0, sandbox.StateUnpaid)
			b.sandbox.Script("NOAUTH-1", sandbox.Fail(403, "NO_AUTH", "merchant has no permission"))
			info := b.waitFinal(t, b.enqueue(t, o).TaskID)
			if info.State != asynq.TaskStateArchived {
				t.Fatalf("state %s, want archived", info.State)
			}
			wantCode := "NO_AUTH"
			if !strings.Contains(info.LastErr, wantCode) {
				t.Fatalf("archived reason %q does not name %s", info.LastErr, wantCode)
			}
			if n := len(b.sandbox.CallsFor("NOAUTH-1")); n != 1 {
				t.Fatalf("%d calls, want 1", n)
			}
		})

		t.Run("retries run out and the task is archived", func(t *testing.T) {
			t.Parallel()
			o := b.order(t, "DOWN-1", 0, sandbox.StateUnpaid)
			b.sandbox.Script("DOWN-1", sandbox.ServerError(502), sandbox.ServerError(502), sandbox.ServerError(502), sandbox.ServerError(502), sandbox.ServerError(502))
			info := b.waitFinal(t, b.enqueue(t, o).TaskID)
			if info.State != asynq.TaskStateArchived || !strings.Contains(info.LastErr, "502") {
				t.Fatalf("state %s last error %q, want archived naming 502", info.State, info.LastErr)
			}
			if n := len(b.sandbox.CallsFor("DOWN-1")); n != 4 {
				t.Fatalf("%d calls, want 4 (1 + 3 retries)", n)
			}
		})

		t.Run("duplicate enqueues give one close call", func(t *testing.T) {
			t.Parallel()
			o := b.order(t, "DUP-1", time.Second, sandbox.StateUnpaid)
			var wg sync.WaitGroup
			results := make([]tasks.Scheduled, 5)
			for i := range results {
				wg.Add(1)
				go func() {
					defer wg.Done()
					s, err := b.producer.EnqueueClose(ctx, o)
					if err != nil {
						t.Error(err)
					}
					results[i] = s
				}()
			}
			wg.Wait()
			var fresh int
			for _, s := range results {
				if !s.Duplicate {
					fresh++
				}
			}
			if fresh != 1 {
				t.Fatalf("%d enqueues were not duplicates, want 1: %+v", fresh, results)
			}
			b.waitFinal(t, results[0].TaskID)
			if s := b.enqueue(t, o); !s.Duplicate || s.State != "completed" {
				t.Fatalf("enqueue after completion = %+v, want duplicate of the completed task", s)
			}
			if n := len(b.sandbox.CallsFor("DUP-1")); n != 1 {
				t.Fatalf("%d calls, want 1", n)
			}
		})

		t.Run("corrupt payload is archived with a clear reason and the worker keeps running", func(t *testing.T) {
			t.Parallel()
			client := asynq.NewClientFromRedisClient(b.rdb)
			for i, payload := range []string{`{not json`, `{"out_trade_no":"bad number!","created_at":"2026-01-01T00:00:00Z"}`, `{"out_trade_no":"A"}`} {
				id := fmt.Sprintf("corrupt-%d", i)
				if _, err := client.Enqueue(asynq.NewTask(tasks.TypeClose, []byte(payload)), asynq.Queue(tasks.QueueClose), asynq.TaskID(id)); err != nil {
					t.Fatal(err)
				}
				info := b.waitFinal(t, id)
				if info.State != asynq.TaskStateArchived || !strings.Contains(info.LastErr, "invalid close order") {
					t.Fatalf("state %s reason %q, want archived as invalid close order", info.State, info.LastErr)
				}
			}
			info := b.waitFinal(t, b.enqueue(t, b.order(t, "AFTER-CORRUPT", 0, sandbox.StateUnpaid)).TaskID)
			if info.State != asynq.TaskStateCompleted {
				t.Fatalf("order after corrupt payloads: state %s", info.State)
			}
		})
	})

	if n := b.sandbox.EarlyCalls(); n != 0 {
		t.Errorf("sandbox saw %d close calls before creation + 5 minutes", n)
	}
	assertNoSecrets(t, b)
	assertMetrics(t, b, api)
}

// assertMetrics scrapes /metrics after the scenarios above and checks that
// each metric moved as they say.
func assertMetrics(t *testing.T, b *bundle, api wechat.APIVersion) {
	t.Helper()
	resp, err := http.Get("http://" + b.worker.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v", resp.StatusCode, err)
	}
	checks := []struct {
		series string
		min    float64
	}{
		{`wxclose_close_outcomes_total{outcome="closed",wechat_code=""}`, 5},
		{`wxclose_close_outcomes_total{outcome="already_closed",wechat_code="ORDERCLOSED"}`, 1},
		{`wxclose_close_outcomes_total{outcome="paid",wechat_code="ORDERPAID"}`, 2},
		{`wxclose_close_outcomes_total{outcome="permanent",wechat_code="NO_AUTH"}`, 1},
		{`wxclose_close_outcomes_total{outcome="invalid_payload",wechat_code=""}`, 3},
		{`wxclose_reconciliation_enqueued_total`, 1},
		{`wxclose_retries_total{reason="rate_limited"}`, 5},
		{`wxclose_retries_total{reason="retry"}`, 2},
		{`wxclose_schedule_lateness_seconds_count`, 5},
		{`wxclose_wechat_request_duration_seconds_count{api="` + string(api) + `"}`, 10},
		{`asynq_tasks_enqueued_total{queue="reconciliation",state="pending"}`, 1},
		{`asynq_tasks_enqueued_total{queue="close_order",state="archived"}`, 5},
	}
	for _, c := range checks {
		v, ok := metricValue(string(body), c.series)
		if !ok || v < c.min {
			t.Errorf("%s = %v (present %t), want at least %v", c.series, v, ok, c.min)
		}
	}
	if v, _ := metricValue(string(body), `wxclose_reconciliation_enqueued_total`); v != 1 {
		t.Errorf("wxclose_reconciliation_enqueued_total = %v, want exactly 1 (one paid order, closed twice)", v)
	}
}

func metricValue(exposition, series string) (float64, bool) {
	for _, line := range strings.Split(exposition, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v, err == nil
		}
	}
	return 0, false
}

// assertNoSecrets scans the logs and every Redis value for the sandbox's
// secrets.
func assertNoSecrets(t *testing.T, b *bundle) {
	t.Helper()
	secrets := map[string]string{
		"API v2 key":  b.creds.APIKey,
		"APIv3 key":   b.creds.APIv3Key,
		"private key": pemBody(b.creds.MerchantPrivateKeyPEM),
	}
	var redisDump strings.Builder
	ctx := context.Background()
	iter := b.rdb.Scan(ctx, 0, "*", 1000).Iterator()
	for iter.Next(ctx) {
		key := iter.Val()
		switch b.rdb.Type(ctx, key).Val() {
		case "string":
			redisDump.WriteString(b.rdb.Get(ctx, key).Val())
		case "hash":
			for k, v := range b.rdb.HGetAll(ctx, key).Val() {
				redisDump.WriteString(k + v)
			}
		case "list":
			redisDump.WriteString(strings.Join(b.rdb.LRange(ctx, key, 0, -1).Val(), ""))
		case "zset":
			redisDump.WriteString(strings.Join(b.rdb.ZRange(ctx, key, 0, -1).Val(), ""))
		case "set":
			redisDump.WriteString(strings.Join(b.rdb.SMembers(ctx, key).Val(), ""))
		}
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	logs := b.logs.String()
	if !strings.Contains(logs, "close attempt") {
		t.Fatal("no attempt log lines were captured")
	}
	for name, secret := range secrets {
		if secret == "" {
			t.Fatalf("test setup: %s is empty", name)
		}
		if strings.Contains(logs, secret) {
			t.Errorf("%s appears in the logs", name)
		}
		if strings.Contains(redisDump.String(), secret) {
			t.Errorf("%s appears in Redis", name)
		}
	}
}

// pemBody returns a distinctive line from the middle of a PEM block.
func pemBody(p []byte) string {
	lines := strings.Split(strings.TrimSpace(string(p)), "\n")
	if len(lines) < 3 {
		return string(p)
	}
	return lines[len(lines)/2]
}

var _ = errors.Is

func TestHTTPEndpoints(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{api: wechat.APIv3, uiUser: "ops", uiPassword: "correct horse"})
	base := "http://" + b.worker.HTTPAddr()
	tests := []struct {
		name       string
		path       string
		user, pass string
		want       int
		wantBody   string
	}{
		{"health", "/healthz", "", "", http.StatusOK, "ok"},
		{"ready", "/readyz", "", "", http.StatusOK, "ok"},
		{"metrics need no password", "/metrics", "", "", http.StatusOK, "wxclose_build_info"},
		{"dashboard without password", "/monitoring/", "", "", http.StatusUnauthorized, ""},
		{"dashboard with wrong password", "/monitoring/", "ops", "wrong", http.StatusUnauthorized, ""},
		{"dashboard", "/monitoring/", "ops", "correct horse", http.StatusOK, "<html"},
		{"dashboard api", "/monitoring/api/queues", "ops", "correct horse", http.StatusOK, "queues"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, base+tt.path, nil)
			if tt.user != "" {
				req.SetBasicAuth(tt.user, tt.pass)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.want || !strings.Contains(string(body), tt.wantBody) {
				t.Fatalf("GET %s = %d %.80q, want %d containing %q", tt.path, resp.StatusCode, body, tt.want, tt.wantBody)
			}
		})
	}
}
