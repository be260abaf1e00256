package dashboard

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/wxclose/wxclose/internal/closehandler"
	"github.com/wxclose/wxclose/internal/redistest"
	"github.com/wxclose/wxclose/tasks"
	"github.com/wxclose/wxclose/wechat"
)

const (
	testUser     = "ops"
	testPassword = "correct horse battery staple"
	testMchID    = "1900000109"
)

// newDashboard builds a dashboard on srv and closes it when the test ends.
func newDashboard(t *testing.T, srv *redistest.Server, opts Options) *Dashboard {
	t.Helper()
	opts.RedisConnOpt = srv.ConnOpt()
	d, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return d
}

// serve mounts d the way the worker does and serves it on a loopback port.
func serve(t *testing.T, d *Dashboard) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(d.Pattern(), d.Handler())
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	return ts
}

type response struct {
	status int
	header http.Header
	body   string
}

// do sends one request; user == "" sends no credentials.
func do(t *testing.T, method, url, user, password string, header http.Header) response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if h := header.Get("Host"); h != "" {
		req.Host = h // the client sends req.Host, not a Host header
	}
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	return response{status: res.StatusCode, header: res.Header, body: string(body)}
}

// queueCounts is the part of asynqmon's queue snapshot the tests check.
type queueCounts struct {
	Queue     string `json:"queue"`
	Size      int    `json:"size"`
	Pending   int    `json:"pending"`
	Active    int    `json:"active"`
	Scheduled int    `json:"scheduled"`
	Retry     int    `json:"retry"`
	Archived  int    `json:"archived"`
	Completed int    `json:"completed"`
	Paused    bool   `json:"paused"`
}

// listQueues calls the dashboard's queue API with the test credentials.
func listQueues(t *testing.T, baseURL string) map[string]queueCounts {
	t.Helper()
	r := do(t, http.MethodGet, baseURL+"/monitoring/api/queues", testUser, testPassword, nil)
	if r.status != http.StatusOK {
		t.Fatalf("GET /monitoring/api/queues = %d %s", r.status, r.body)
	}
	var out struct {
		Queues []queueCounts `json:"queues"`
	}
	if err := json.Unmarshal([]byte(r.body), &out); err != nil {
		t.Fatalf("queues API answered %q: %v", r.body, err)
	}
	m := make(map[string]queueCounts)
	for _, q := range out.Queues {
		m[q.Queue] = q
	}
	return m
}

// seedCloser answers WeChat Pay calls from a table keyed by out_trade_no,
// so the seeded tasks end the way real ones do.
type seedCloser map[string]struct {
	out wechat.Outcome
	err error
}

func (c seedCloser) Close(_ context.Context, req wechat.CloseRequest) (wechat.Outcome, error) {
	r, ok := c[req.OutTradeNo]
	if !ok {
		return wechat.Outcome{}, &wechat.Error{Class: wechat.ClassPermanent, Message: "unexpected order " + req.OutTradeNo}
	}
	return r.out, r.err
}

// seeded is what seed leaves in Redis.
var seeded = map[string]queueCounts{
	tasks.QueueClose:     {Queue: tasks.QueueClose, Scheduled: 4, Completed: 3, Archived: 1},
	tasks.QueueReconcile: {Queue: tasks.QueueReconcile, Pending: 2},
}

// seed puts a realistic mix on srv, through the same producer and close
// handler the worker uses: closes scheduled for orders created just now,
// older orders closed, already closed, paid (which hands the order to
// reconciliation) and refused with NO_AUTH (archived), and one more
// reconciliation task from EnqueueReconcile.
func seed(t *testing.T, srv *redistest.Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	producer := tasks.NewProducer(srv.ConnOpt(), tasks.ProducerConfig{MchID: testMchID})
	defer producer.Close()

	now := time.Now().UTC()
	for i, no := range []string{"WX20261122100501", "WX20261122100502", "WX20261122100517", "WX20261122100533"} {
		if _, err := producer.EnqueueClose(ctx, tasks.CloseOrder{OutTradeNo: no, CreatedAt: now.Add(time.Duration(-i*20) * time.Second)}); err != nil {
			t.Fatalf("EnqueueClose %s: %v", no, err)
		}
	}

	closer := seedCloser{
		"WX20261122094012": {out: wechat.Outcome{Result: wechat.ResultClosed, HTTPStatus: 204, RequestID: "08F4C1A2B60610A80E18C8F5DCB90120A1E6042898A703-0"}},
		"WX20261122094233": {out: wechat.Outcome{Result: wechat.ResultAlreadyClosed, Code: "ORDERCLOSED", Message: "订单已关闭", HTTPStatus: 400}},
		"WX20261122094450": {out: wechat.Outcome{Result: wechat.ResultPaid, Code: "ORDERPAID", Message: "订单已支付", HTTPStatus: 400}},
		"WX20261122094721": {err: &wechat.Error{Class: wechat.ClassPermanent, Code: "NO_AUTH", HTTPStatus: 403,
			RequestID: "08A9C2A2B60610F50918D1A5B0E00120E2F3012898A703-0", Message: "商户无权限"}},
	}
	created := now.Add(-10 * time.Minute)
	for no := range closer {
		if _, err := producer.EnqueueClose(ctx, tasks.CloseOrder{OutTradeNo: no, CreatedAt: created}); err != nil {
			t.Fatalf("EnqueueClose %s: %v", no, err)
		}
	}
	handler, err := closehandler.New(closehandler.Config{Closer: closer, Reconciler: producer, MchID: testMchID})
	if err != nil {
		t.Fatal(err)
	}
	server := asynq.NewServer(srv.ConnOpt(), asynq.Config{
		Queues:                   map[string]int{tasks.QueueClose: 1},
		TaskCheckInterval:        100 * time.Millisecond,
		DelayedTaskCheckInterval: 200 * time.Millisecond,
		LogLevel:                 asynq.FatalLevel,
	})
	mux := asynq.NewServeMux()
	mux.Handle(tasks.TypeClose, handler)
	if err := server.Start(mux); err != nil {
		t.Fatalf("start asynq server: %v", err)
	}
	inspector := asynq.NewInspector(srv.ConnOpt())
	defer inspector.Close()
	want := seeded[tasks.QueueClose]
	for {
		info, err := inspector.GetQueueInfo(tasks.QueueClose)
		if err == nil && info.Completed == want.Completed && info.Archived == want.Archived {
			break
		}
		select {
		case <-ctx.Done():
			server.Shutdown()
			t.Fatalf("seeded closes did not finish: %+v, %v", info, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	server.Shutdown()

	if dup, err := producer.EnqueueReconcile(ctx, tasks.ReconcilePayload{
		OutTradeNo: "WX20261122093958", MchID: testMchID, CreatedAt: now.Add(-20 * time.Minute),
		DetectedAt: now.Add(-14*time.Minute - 58*time.Second), Reason: tasks.ReasonOrderPaid,
	}); err != nil || dup {
		t.Fatalf("EnqueueReconcile = %t, %v", dup, err)
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
