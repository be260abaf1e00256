package metrics

import (
	"bytes"
	"context"
	"io"
	"log"
	"net"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	asynqmetrics "github.com/hibiken/asynq/x/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/wxclose/wxclose/internal/closehandler"
	"github.com/wxclose/wxclose/internal/redistest"
	"github.com/wxclose/wxclose/tasks"
)

// seed puts known tasks on a private Redis:
// close_order: 1 pending, 2 scheduled; reconciliation: 2 pending, 1
// archived, paused.
func seed(t *testing.T, srv *redistest.Server) *asynq.Inspector {
	t.Helper()
	client := asynq.NewClient(srv.ConnOpt())
	defer client.Close()
	enqueue := func(typ, queue, id string, opts ...asynq.Option) {
		t.Helper()
		opts = append(opts, asynq.Queue(queue), asynq.TaskID(id))
		if _, err := client.Enqueue(asynq.NewTask(typ, []byte(`{}`)), opts...); err != nil {
			t.Fatalf("enqueue %s: %v", id, err)
		}
	}
	enqueue(tasks.TypeClose, tasks.QueueClose, "c1")
	enqueue(tasks.TypeClose, tasks.QueueClose, "c2", asynq.ProcessIn(time.Hour))
	enqueue(tasks.TypeClose, tasks.QueueClose, "c3", asynq.ProcessIn(2*time.Hour))
	for _, id := range []string{"r1", "r2", "r3"} {
		enqueue(tasks.TypeReconcile, tasks.QueueReconcile, id)
	}
	insp := asynq.NewInspector(srv.ConnOpt())
	t.Cleanup(func() { insp.Close() })
	if err := insp.ArchiveTask(tasks.QueueReconcile, "r3"); err != nil {
		t.Fatalf("archive r3: %v", err)
	}
	if err := insp.PauseQueue(tasks.QueueReconcile); err != nil {
		t.Fatalf("pause: %v", err)
	}
	return insp
}

// seeded is what seed leaves in Redis, as asynq's exporter reports it.
var seeded = map[string]float64{
	`asynq_tasks_enqueued_total{queue="close_order",state="pending"}`:          1,
	`asynq_tasks_enqueued_total{queue="close_order",state="scheduled"}`:        2,
	`asynq_tasks_enqueued_total{queue="close_order",state="active"}`:           0,
	`asynq_tasks_enqueued_total{queue="close_order",state="retry"}`:            0,
	`asynq_tasks_enqueued_total{queue="close_order",state="archived"}`:         0,
	`asynq_tasks_enqueued_total{queue="close_order",state="completed"}`:        0,
	`asynq_tasks_enqueued_total{queue="reconciliation",state="pending"}`:       2,
	`asynq_tasks_enqueued_total{queue="reconciliation",state="archived"}`:      1,
	`asynq_tasks_enqueued_total{queue="reconciliation",state="scheduled"}`:     0,
	`asynq_queue_size{queue="close_order"}`:                                    3,
	`asynq_queue_size{queue="reconciliation"}`:                                 3,
	`asynq_tasks_processed_total{queue="close_order"}`:                         0,
	`asynq_tasks_failed_total{queue="reconciliation"}`:                         0,
	`asynq_queue_paused_total{queue="close_order"}`:                            0,
	`asynq_queue_paused_total{queue="reconciliation"}`:                         1,
	`wxclose_queue_stats_errors_total`:                                         0,
	`wxclose_close_outcomes_total{outcome="closed",wechat_code="ORDERCLOSED"}`: 1,
}

func TestQueueMetrics(t *testing.T) {
	srv := redistest.Start(t)
	m := New(Options{Inspector: seed(t, srv), API: "v3"})
	m.ObserveAttempt(closehandler.Attempt{Outcome: tasks.OutcomeClosed, Code: "ORDERCLOSED"})
	got, body := scrape(t, serve(t, m))
	for series, want := range seeded {
		if v, ok := got[series]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", series, v, ok, want)
		}
	}
	for _, series := range []string{
		`asynq_queue_latency_seconds{queue="close_order"}`,
		`asynq_queue_memory_usage_approx_bytes{queue="reconciliation"}`,
	} {
		if _, ok := got[series]; !ok {
			t.Errorf("scrape lacks %s", series)
		}
	}
	if ts := got["wxclose_queue_stats_last_success_timestamp_seconds"]; ts < float64(time.Now().Add(-time.Hour).Unix()) {
		t.Errorf("last success timestamp = %v, want about now", ts)
	}
	if t.Failed() {
		t.Logf("scrape:\n%s", grepLines(body, "queue"))
	}
}

// TestQueueMetricsMatchAsynqExporter checks that dashboards built on
// asynq's exporter read the same series, help and types from wxclose.
func TestQueueMetricsMatchAsynqExporter(t *testing.T) {
	srv := redistest.Start(t)
	insp := seed(t, srv)
	ours, ourBody := scrape(t, serve(t, New(Options{Inspector: insp})))

	reg := prometheus.NewRegistry()
	reg.MustRegister(asynqmetrics.NewQueueMetricsCollector(insp))
	upstream := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer upstream.Close()
	theirs, theirBody := scrape(t, upstream.URL)

	if len(theirs) == 0 {
		t.Fatal("asynq's exporter returned no series")
	}
	for series, v := range theirs {
		got, ok := ours[series]
		switch {
		case !ok:
			t.Errorf("asynq's exporter has %s, wxclose does not", series)
		case strings.HasPrefix(series, "asynq_queue_latency_seconds"):
			// Time-dependent: both scrapes see a slightly different now.
		case got != v:
			t.Errorf("%s = %v, asynq's exporter says %v", series, got, v)
		}
	}
	for series := range ours {
		if _, ok := theirs[series]; strings.HasPrefix(series, "asynq_") && !ok {
			t.Errorf("wxclose has %s, asynq's exporter does not", series)
		}
	}
	meta := func(body string) map[string]bool {
		set := map[string]bool{}
		for line := range strings.Lines(body) {
			if strings.HasPrefix(line, "# HELP asynq_") || strings.HasPrefix(line, "# TYPE asynq_") {
				set[line] = true
			}
		}
		return set
	}
	ourMeta, theirMeta := meta(ourBody), meta(theirBody)
	for line := range theirMeta {
		if !ourMeta[line] {
			t.Errorf("asynq's exporter has %q, wxclose does not", strings.TrimSpace(line))
		}
	}
}

// TestQueueStatsOneQueueFails makes one queue's statistics fail inside
// Redis (as asynq #728 does) and checks the other queues are still exported
// and the failure is counted, then that the next clean scrape recovers.
func TestQueueStatsOneQueueFails(t *testing.T) {
	srv := redistest.Start(t)
	m := New(Options{Inspector: seed(t, srv)})
	ctx := context.Background()
	rdb := srv.Client()
	// A string where asynq expects a list makes its statistics script fail
	// with WRONGTYPE.
	if err := rdb.SAdd(ctx, "asynq:queues", "broken").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Set(ctx, "asynq:{broken}:pending", "not a list", 0).Err(); err != nil {
		t.Fatal(err)
	}
	url := serve(t, m)

	got, body := scrape(t, url)
	if got["wxclose_queue_stats_errors_total"] != 1 {
		t.Errorf("errors_total = %v, want 1", got["wxclose_queue_stats_errors_total"])
	}
	if got["wxclose_queue_stats_last_success_timestamp_seconds"] != 0 {
		t.Errorf("last success = %v, want 0 (no complete read yet)", got["wxclose_queue_stats_last_success_timestamp_seconds"])
	}
	for _, series := range []string{`asynq_queue_size{queue="close_order"}`, `asynq_queue_size{queue="reconciliation"}`} {
		if got[series] != 3 {
			t.Errorf("%s = %v, want 3 despite the broken queue", series, got[series])
		}
	}
	if strings.Contains(body, `queue="broken"`) {
		t.Errorf("the broken queue was exported:\n%s", grepLines(body, "broken"))
	}

	if err := rdb.Del(ctx, "asynq:{broken}:pending").Err(); err != nil {
		t.Fatal(err)
	}
	got, _ = scrape(t, url)
	if got["wxclose_queue_stats_errors_total"] != 1 {
		t.Errorf("after repair errors_total = %v, want still 1", got["wxclose_queue_stats_errors_total"])
	}
	if got["wxclose_queue_stats_last_success_timestamp_seconds"] == 0 {
		t.Error("after repair the last success timestamp is still 0")
	}
	if got[`asynq_queue_size{queue="broken"}`] != 0 {
		t.Errorf("repaired empty queue has size %v", got[`asynq_queue_size{queue="broken"}`])
	}
}

// TestQueueStatsRedisDown points the Inspector at a port nobody listens on:
// scrapes still succeed with the worker's own metrics, count the failure,
// log through the given logger at most once a minute and never through
// the standard log package.
func TestQueueStatsRedisDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	var stdlog bytes.Buffer
	prev := log.Writer()
	log.SetOutput(&stdlog)
	defer log.SetOutput(prev)
	defer func() {
		if stdlog.Len() > 0 {
			t.Errorf("standard log received:\n%s", stdlog.String())
		}
	}()
	var logs syncBuffer
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer rdb.Close()
	insp := asynq.NewInspectorFromRedisClient(rdb)
	m := New(Options{Inspector: insp, API: "v2", Logger: zerolog.New(&logs)})
	m.ObserveAttempt(closehandler.Attempt{Outcome: tasks.OutcomePaid, Code: "ORDERPAID", Reconciled: true})
	url := serve(t, m)

	for want := 1.0; want <= 2; want++ {
		got, body := scrape(t, url)
		if v := got["wxclose_queue_stats_errors_total"]; v != want {
			t.Errorf("scrape %v: errors_total = %v, want %v", want, v, want)
		}
		for _, series := range []string{
			"wxclose_reconciliation_enqueued_total",
			`wxclose_close_outcomes_total{outcome="paid",wechat_code="ORDERPAID"}`,
			"go_goroutines",
		} {
			if _, ok := got[series]; !ok {
				t.Errorf("scrape %v lacks %s", want, series)
			}
		}
		if strings.Contains(body, "\nasynq_") {
			t.Errorf("scrape %v has queue series with Redis down:\n%s", want, grepLines(body, "asynq_"))
		}
	}
	if got := logs.String(); strings.Count(got, "\n") != 1 || !strings.Contains(got, "wxclose_queue_stats_errors_total") ||
		!strings.Contains(got, "list asynq queues") {
		t.Errorf("want one log line about the failure, got:\n%s", got)
	}
}

// TestQueueStatsTimeout uses a server that accepts connections and never
// answers: scrapes give up on it, count an error and do not start a
// second query while the first one hangs.
func TestQueueStatsTimeout(t *testing.T) {
	addr, release := hangingServer(t)
	// No read timeout and no retries: the query hangs until release.
	rdb := redis.NewClient(&redis.Options{Addr: addr, ReadTimeout: -1, WriteTimeout: -1, MaxRetries: -1})
	defer rdb.Close()
	insp := asynq.NewInspectorFromRedisClient(rdb)
	m := New(Options{Inspector: insp, QueueStatsTimeout: 50 * time.Millisecond})
	defer func() {
		release()
		// Wait for the abandoned query to end so it cannot outlive the test.
		m.queues.busy <- struct{}{}
	}()
	url := serve(t, m)

	for want := 1.0; want <= 2; want++ {
		got, _ := scrape(t, url)
		if v := got["wxclose_queue_stats_errors_total"]; v != want {
			t.Errorf("scrape %v: errors_total = %v, want %v", want, v, want)
		}
		if _, ok := got["wxclose_build_info"+`{api="unknown",go_version="`+runtime.Version()+`",version="`+buildVersion()+`"}`]; !ok {
			t.Errorf("scrape %v lacks build info", want)
		}
	}
	if n, err := testutil.GatherAndCount(m.Registry(), "asynq_queue_size"); err != nil || n != 0 {
		t.Errorf("asynq_queue_size series = %d, %v; want none", n, err)
	}
}

// hangingServer accepts TCP connections, reads and discards everything,
// and never answers until release is called.
func hangingServer(t *testing.T) (addr string, release func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go func() { _, _ = io.Copy(io.Discard, c) }()
		}
	}()
	var once sync.Once
	release = func() {
		once.Do(func() {
			ln.Close()
			mu.Lock()
			defer mu.Unlock()
			for _, c := range conns {
				c.Close()
			}
		})
	}
	t.Cleanup(release)
	return ln.Addr().String(), release
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
