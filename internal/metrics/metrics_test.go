package metrics

import (
	"bufio"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wxclose/wxclose/internal/closehandler"
	"github.com/wxclose/wxclose/tasks"
)

// scrape GETs url and returns the body and its samples keyed by series
// ("name{label="value",...}"), as Prometheus would read them.
func scrape(t *testing.T, url string) (map[string]float64, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read scrape: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape status %d, want 200; body:\n%s", resp.StatusCode, body)
	}
	samples := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("unparsable sample line %q: %v", line, err)
		}
		samples[line[:i]] = v
	}
	return samples, string(body)
}

func serve(t *testing.T, m *Metrics) string {
	t.Helper()
	srv := httptest.NewServer(m.Handler())
	t.Cleanup(srv.Close)
	return srv.URL + "/metrics"
}

func TestObserveAttempt(t *testing.T) {
	const (
		closedNoCode = `wxclose_close_outcomes_total{outcome="closed",wechat_code=""}`
		latencyCount = `wxclose_wechat_request_duration_seconds_count{api="v3"}`
		latencySum   = `wxclose_wechat_request_duration_seconds_sum{api="v3"}`
		latenessN    = `wxclose_schedule_lateness_seconds_count`
		latenessSum  = `wxclose_schedule_lateness_seconds_sum`
		early        = `wxclose_schedule_early_starts_total`
		reconciled   = `wxclose_reconciliation_enqueued_total`
		retryRetry   = `wxclose_retries_total{reason="retry"}`
		retryRate    = `wxclose_retries_total{reason="rate_limited"}`
		retryPost    = `wxclose_retries_total{reason="postponed"}`
	)
	tests := []struct {
		name     string
		attempts []closehandler.Attempt
		want     map[string]float64
	}{
		{
			name: "closed with latency and lateness",
			attempts: []closehandler.Attempt{{Outcome: tasks.OutcomeClosed, WeChatLatency: 120 * time.Millisecond,
				Lateness: 300 * time.Millisecond, HasLateness: true}},
			want: map[string]float64{
				closedNoCode: 1, latencyCount: 1, latencySum: 0.12,
				latenessN: 1, latenessSum: 0.3,
				`wxclose_schedule_lateness_seconds_bucket{le="0.25"}`: 0,
				`wxclose_schedule_lateness_seconds_bucket{le="0.5"}`:  1,
				early: 0, reconciled: 0, retryRetry: 0, retryRate: 0, retryPost: 0,
			},
		},
		{
			name:     "paid and handed to reconciliation",
			attempts: []closehandler.Attempt{{Outcome: tasks.OutcomePaid, Code: "ORDERPAID", WeChatLatency: time.Second, Reconciled: true}},
			want: map[string]float64{
				`wxclose_close_outcomes_total{outcome="paid",wechat_code="ORDERPAID"}`: 1,
				reconciled: 1, closedNoCode: 0, latencyCount: 1,
			},
		},
		{
			name:     "paid again, reconciliation task already there",
			attempts: []closehandler.Attempt{{Outcome: tasks.OutcomePaid, Code: "ORDERPAID", WeChatLatency: time.Second}},
			want: map[string]float64{
				`wxclose_close_outcomes_total{outcome="paid",wechat_code="ORDERPAID"}`: 1, reconciled: 0,
			},
		},
		{
			name:     "early start counts and clamps to zero",
			attempts: []closehandler.Attempt{{Outcome: tasks.OutcomeClosed, Lateness: -800 * time.Millisecond, HasLateness: true, WeChatLatency: time.Millisecond}},
			want: map[string]float64{
				early: 1, latenessN: 1, latenessSum: 0,
				`wxclose_schedule_lateness_seconds_bucket{le="0.05"}`: 1,
			},
		},
		{
			name:     "lateness ignored unless HasLateness",
			attempts: []closehandler.Attempt{{Outcome: tasks.OutcomeClosed, Lateness: 3 * time.Second, WeChatLatency: time.Millisecond}},
			want:     map[string]float64{latenessN: 0, early: 0, closedNoCode: 1},
		},
		{
			name:     "unknown WeChat code becomes OTHER",
			attempts: []closehandler.Attempt{{Outcome: tasks.OutcomePermanent, Code: "BRAND_NEW_CODE", WeChatLatency: time.Millisecond}},
			want: map[string]float64{
				`wxclose_close_outcomes_total{outcome="permanent",wechat_code="OTHER"}`: 1,
				`wxclose_close_outcomes_total{outcome="permanent",wechat_code=""}`:      0,
			},
		},
		{
			name:     "unknown outcome becomes other",
			attempts: []closehandler.Attempt{{Outcome: "result(9)", Code: "ORDERCLOSED"}},
			want:     map[string]float64{`wxclose_close_outcomes_total{outcome="other",wechat_code="ORDERCLOSED"}`: 1},
		},
		{
			name: "retries by reason",
			attempts: []closehandler.Attempt{
				{Outcome: tasks.OutcomeRetry, Code: "SYSTEM_ERROR", WeChatLatency: 2 * time.Second},
				{Outcome: tasks.OutcomeRetry, Code: "SYSTEMERROR", WeChatLatency: 2 * time.Second},
				{Outcome: tasks.OutcomeRateLimited, Code: "FREQUENCY_LIMITED", WeChatLatency: 2 * time.Second},
				{Outcome: tasks.OutcomePostponed, HasLateness: false},
			},
			want: map[string]float64{
				retryRetry: 2, retryRate: 1, retryPost: 1, latencyCount: 3,
				`wxclose_close_outcomes_total{outcome="retry",wechat_code="SYSTEM_ERROR"}`:             1,
				`wxclose_close_outcomes_total{outcome="retry",wechat_code="SYSTEMERROR"}`:              1,
				`wxclose_close_outcomes_total{outcome="rate_limited",wechat_code="FREQUENCY_LIMITED"}`: 1,
				`wxclose_close_outcomes_total{outcome="postponed",wechat_code=""}`:                     1,
			},
		},
		{
			name: "archived outcomes",
			attempts: []closehandler.Attempt{
				{Outcome: tasks.OutcomeExhausted, Code: "SYSTEM_ERROR", Retried: 12, WeChatLatency: time.Second},
				{Outcome: tasks.OutcomeInvalidPayload},
			},
			want: map[string]float64{
				`wxclose_close_outcomes_total{outcome="exhausted",wechat_code="SYSTEM_ERROR"}`: 1,
				`wxclose_close_outcomes_total{outcome="invalid_payload",wechat_code=""}`:       1,
				latencyCount: 1, retryRetry: 0,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New(Options{API: "v3"})
			for _, a := range tt.attempts {
				m.ObserveAttempt(a)
			}
			got, body := scrape(t, serve(t, m))
			for series, want := range tt.want {
				v, ok := got[series]
				if !ok {
					t.Errorf("series %s missing from scrape:\n%s", series, grepLines(body, "wxclose_"))
					continue
				}
				if diff := v - want; diff > 1e-9 || diff < -1e-9 {
					t.Errorf("%s = %v, want %v", series, v, want)
				}
			}
		})
	}
}

func TestLabelsAreBounded(t *testing.T) {
	for _, code := range []string{"ORDERPAID", "ORDERCLOSED", "ORDERNOTEXIST", "ORDER_NOT_EXIST", "SYSTEMERROR",
		"SYSTEM_ERROR", "SERVICE_UNAVAILABLE", "RATE_LIMITED", "FREQUENCY_LIMITED", "PARAM_ERROR", "INVALID_REQUEST",
		"SIGN_ERROR", "SIGNERROR", "NO_AUTH", "REQUIRE_POST_METHOD", "XML_FORMAT_ERROR", "FAIL", ""} {
		if got := codeLabel(code); got != code {
			t.Errorf("codeLabel(%q) = %q, want it kept", code, got)
		}
	}
	for _, code := range []string{"orderpaid", " ORDERPAID", "ORDER-1234567890", "sk_live_abc", strings.Repeat("A", 64)} {
		if got := codeLabel(code); got != otherCode {
			t.Errorf("codeLabel(%q) = %q, want %q", code, got, otherCode)
		}
	}
	for _, o := range knownOutcomes {
		if got := outcomeLabel(o); got != o {
			t.Errorf("outcomeLabel(%q) = %q", o, got)
		}
	}
	for _, o := range []string{"", "Closed", "result(7)"} {
		if got := outcomeLabel(o); got != otherOutcome {
			t.Errorf("outcomeLabel(%q) = %q, want %q", o, got, otherOutcome)
		}
	}
}

// TestNoOrderDataInMetrics feeds attempts full of identifying data and
// checks none of it reaches the exposition.
func TestNoOrderDataInMetrics(t *testing.T) {
	m := New(Options{API: "v2"})
	secrets := []string{"ORD-20240101-0042", "4200001234202401010042", "1900000109", "1900000110", "task-7f3a9c"}
	a := closehandler.Attempt{
		TaskID:  secrets[4],
		Order:   tasks.OrderRef{OutTradeNo: secrets[0], TransactionID: secrets[1], MchID: secrets[2], SubMchID: secrets[3]},
		Outcome: tasks.OutcomePermanent, Code: secrets[0], WeChatLatency: time.Second,
	}
	m.ObserveAttempt(a)
	a.Outcome = secrets[1]
	m.ObserveAttempt(a)
	_, body := scrape(t, serve(t, m))
	for _, s := range secrets {
		if strings.Contains(body, s) {
			t.Errorf("scrape contains %q:\n%s", s, grepLines(body, s))
		}
	}
}

func TestBuildInfo(t *testing.T) {
	tests := []struct {
		opts        Options
		version     string
		api         string
		wantLatency string
	}{
		{opts: Options{}, version: buildVersion(), api: "unknown"},
		{opts: Options{Version: "v1.4.2", API: "v2"}, version: "v1.4.2", api: "v2"},
		{opts: Options{Version: "v1.5.0", API: " v3 "}, version: "v1.5.0", api: "v3"},
	}
	for _, tt := range tests {
		m := New(tt.opts)
		m.ObserveAttempt(closehandler.Attempt{Outcome: tasks.OutcomeClosed, WeChatLatency: time.Second})
		got, body := scrape(t, serve(t, m))
		series := `wxclose_build_info{api="` + tt.api + `",go_version="` + runtime.Version() + `",version="` + tt.version + `"}`
		if got[series] != 1 {
			t.Errorf("New(%+v): want %s 1; got:\n%s", tt.opts, series, grepLines(body, "build_info"))
		}
		if lat := `wxclose_wechat_request_duration_seconds_count{api="` + tt.api + `"}`; got[lat] != 1 {
			t.Errorf("New(%+v): want %s 1", tt.opts, lat)
		}
	}
	if v := buildVersion(); v == "" || v == "(devel)" {
		t.Errorf("buildVersion() = %q, want a version or devel", v)
	}
}

func TestWithoutInspector(t *testing.T) {
	m := New(Options{})
	got, body := scrape(t, serve(t, m))
	for series := range got {
		if strings.HasPrefix(series, "asynq_") || strings.HasPrefix(series, "wxclose_queue_stats") {
			t.Errorf("no Inspector, yet the scrape has %s", series)
		}
	}
	for _, want := range []string{"go_goroutines", "process_cpu_seconds_total"} {
		if _, ok := got[want]; !ok {
			t.Errorf("scrape lacks %s:\n%s", want, body)
		}
	}
}

func TestLint(t *testing.T) {
	m := New(Options{API: "v3"})
	problems, err := testutil.GatherAndLint(m.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

func TestNilMetricsIgnoresAttempts(t *testing.T) {
	var m *Metrics
	m.ObserveAttempt(closehandler.Attempt{Outcome: tasks.OutcomeClosed})
}

func BenchmarkObserveAttempt(b *testing.B) {
	m := New(Options{API: "v3"})
	a := closehandler.Attempt{Outcome: tasks.OutcomeRetry, Code: "SYSTEM_ERROR", WeChatLatency: 230 * time.Millisecond,
		Lateness: 140 * time.Millisecond, HasLateness: true}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.ObserveAttempt(a)
		}
	})
}

func grepLines(body, substr string) string {
	var b strings.Builder
	for line := range strings.Lines(body) {
		if strings.Contains(line, substr) {
			b.WriteString(line)
		}
	}
	return b.String()
}

func TestConfirmationsAndCertificateFailures(t *testing.T) {
	m := New(Options{API: "v3"})
	m.ObserveAttempt(closehandler.Attempt{Outcome: tasks.OutcomeAlreadyClosed, Code: "ORDERCLOSED", Confirmed: true})
	m.ObserveAttempt(closehandler.Attempt{Outcome: tasks.OutcomePaid, Confirmed: true, Reconciled: true})
	m.ObserveAttempt(closehandler.Attempt{Outcome: tasks.OutcomeClosed}) // signed answer: not a confirmation
	m.ObserveAttempt(closehandler.Attempt{Outcome: tasks.OutcomePossiblyEarly, Code: "INVALID_REQUEST"})
	m.CertificateRefreshFailed()
	m.CertificateRefreshFailed()
	var nilMetrics *Metrics
	nilMetrics.CertificateRefreshFailed()

	got, body := scrape(t, serve(t, m))
	want := map[string]float64{
		`wxclose_close_confirmations_total{outcome="already_closed"}`:                          1,
		`wxclose_close_confirmations_total{outcome="paid"}`:                                    1,
		`wxclose_close_confirmations_total{outcome="closed"}`:                                  0,
		`wxclose_close_confirmations_total{outcome="not_found"}`:                               0,
		`wxclose_certificate_refresh_failures_total`:                                           2,
		`wxclose_retries_total{reason="possibly_early"}`:                                       1,
		`wxclose_close_outcomes_total{outcome="possibly_early",wechat_code="INVALID_REQUEST"}`: 1,
	}
	for series, w := range want {
		if v, ok := got[series]; !ok || v != w {
			t.Errorf("%s = %v (present %t), want %v\n%s", series, v, ok, w, grepLines(body, "wxclose_"))
		}
	}
}

func TestClockOffsets(t *testing.T) {
	offsets := map[string]time.Duration{}
	m := New(Options{ClockOffsets: func() map[string]time.Duration { return offsets }})
	got, _ := scrape(t, serve(t, m))
	for series := range got {
		if strings.HasPrefix(series, "wxclose_clock_offset_seconds") {
			t.Errorf("nothing measured yet, but the scrape has %s", series)
		}
	}
	offsets["wechatpay"] = 1250 * time.Millisecond
	offsets["redis"] = -3 * time.Millisecond
	got, body := scrape(t, serve(t, m))
	for series, w := range map[string]float64{
		`wxclose_clock_offset_seconds{peer="wechatpay"}`: 1.25,
		`wxclose_clock_offset_seconds{peer="redis"}`:     -0.003,
	} {
		if v, ok := got[series]; !ok || v != w {
			t.Errorf("%s = %v (present %t), want %v\n%s", series, v, ok, w, grepLines(body, "clock"))
		}
	}
	if _, ok := got[`wxclose_clock_offset_seconds{peer="wechatpay"}`]; !ok {
		return
	}
	problems, err := testutil.GatherAndLint(m.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

// TestAlertRulesUseExportedMetrics checks that every wxclose_ metric the
// sample alert rules query is one the worker exports: from this package, or
// from the close API and the webhook on its registry (promtool is not
// available to check the rules themselves).
func TestAlertRulesUseExportedMetrics(t *testing.T) {
	rules, err := os.ReadFile(filepath.Join("..", "..", "docs", "prometheus-alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	m := New(Options{ClockOffsets: func() map[string]time.Duration { return map[string]time.Duration{"redis": 0} },
		RateLimits: func() []RateLimitSample { return []RateLimitSample{{Configured: 100, Effective: 100}} }})
	m.ObserveAttempt(closehandler.Attempt{Outcome: tasks.OutcomeClosed, WeChatLatency: time.Second, HasLateness: true, RateDecreased: true})
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	exported := map[string]bool{
		// Exported with an Inspector only (see queue_test.go).
		"wxclose_queue_stats_errors_total":                   true,
		"wxclose_queue_stats_last_success_timestamp_seconds": true,
	}
	for _, mf := range mfs {
		exported[mf.GetName()] = true
	}
	for _, name := range exportedElsewhere(t) {
		exported[name] = true
	}
	used := regexp.MustCompile(`\bwxclose_[a-z_]+`).FindAllString(string(rules), -1)
	if len(used) == 0 {
		t.Fatal("no wxclose_ metric in the rules")
	}
	for _, name := range used {
		base := name
		for _, suffix := range []string{"_bucket", "_count", "_sum"} {
			if trimmed, ok := strings.CutSuffix(name, suffix); ok && exported[trimmed] {
				base = trimmed
			}
		}
		if !exported[base] {
			t.Errorf("docs/prometheus-alerts.yml uses %s, which the worker does not export", name)
		}
	}
	for _, want := range []string{"wxclose_clock_offset_seconds", "wxclose_certificate_refresh_failures_total",
		"wxclose_webhook_deliveries_total", "wxclose_api_requests_total"} {
		if !strings.Contains(string(rules), want) {
			t.Errorf("docs/prometheus-alerts.yml has no rule on %s", want)
		}
	}
}
