package metrics

import (
	"fmt"
	"net/http"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/wxclose/wxclose/internal/closehandler"
	"github.com/wxclose/wxclose/tasks"
)

const namespace = "wxclose"

// DefaultQueueStatsTimeout bounds one queue-statistics query: Prometheus'
// default scrape timeout is 10 s, and a scrape must answer before it.
const DefaultQueueStatsTimeout = 5 * time.Second

// Options configures Metrics. The zero value is usable: worker metrics
// only, no queue statistics.
type Options struct {
	// Inspector reads asynq's queue statistics on each scrape. If nil, no
	// queue metrics are exported. Metrics does not close it.
	Inspector *asynq.Inspector
	// API is the WeChat Pay API version the worker speaks ("v3" or "v2"),
	// used as the api label of the latency histogram and build info. If
	// empty, "unknown".
	API string
	// Version is the worker's version for wxclose_build_info. If empty, the
	// main module's version from the build information, or "devel".
	Version string
	// QueueStatsTimeout bounds each queue-statistics query; queues not read
	// by then are left out of that scrape. If zero,
	// DefaultQueueStatsTimeout.
	QueueStatsTimeout time.Duration
	// Logger receives queue-statistics failures, at most one line a minute
	// while they last. If zero, logging is off.
	Logger zerolog.Logger
	// ClockOffsets returns the measured clock offset (this worker minus the
	// peer) of each peer measured so far, keyed by peer name
	// (clockskew.Tracker.Offsets); it is called on every scrape and must be
	// cheap. If nil, wxclose_clock_offset_seconds is not exported.
	ClockOffsets func() map[string]time.Duration
	// RateLimits returns every rate-limited merchant's configured and
	// effective rate; it is called on every scrape and must be cheap. If
	// nil, wxclose_rate_limit_effective and _configured are not exported.
	RateLimits func() []RateLimitSample
}

// WeChat Pay codes kept as wechat_code label values; the union of the
// v3 and v2 Close Order codes wxclose acts on. Anything else is "OTHER".
var knownCodes = map[string]bool{
	"ORDERPAID": true, "ORDERCLOSED": true, "ORDERNOTEXIST": true, "ORDER_NOT_EXIST": true,
	"SYSTEMERROR": true, "SYSTEM_ERROR": true, "SERVICE_UNAVAILABLE": true,
	"RATE_LIMITED": true, "FREQUENCY_LIMITED": true,
	"PARAM_ERROR": true, "INVALID_REQUEST": true, "SIGN_ERROR": true, "SIGNERROR": true,
	"NO_AUTH": true, "REQUIRE_POST_METHOD": true, "XML_FORMAT_ERROR": true, "FAIL": true,
	// wxclose's own codes for closes archived because of their merchant.
	closehandler.CodeUnknownMerchant: true, closehandler.CodeMerchantRequired: true,
}

// otherCode replaces WeChat codes outside knownCodes.
const otherCode = "OTHER"

var knownOutcomes = []string{
	tasks.OutcomeClosed, tasks.OutcomeAlreadyClosed, tasks.OutcomeNotFound, tasks.OutcomePaid,
	tasks.OutcomeRetry, tasks.OutcomeRateLimited, tasks.OutcomePermanent, tasks.OutcomeExhausted,
	tasks.OutcomePostponed, tasks.OutcomeInvalidPayload, tasks.OutcomePossiblyEarly,
}

// retryReasons are the outcomes after which a task runs again; they are the
// reason label of wxclose_retries_total.
var retryReasons = []string{tasks.OutcomeRetry, tasks.OutcomeRateLimited, tasks.OutcomePostponed, tasks.OutcomePossiblyEarly}

// confirmedOutcomes are the outcomes a Query Order confirmation can lead to,
// whose series exist from the start.
var confirmedOutcomes = []string{
	tasks.OutcomeClosed, tasks.OutcomeAlreadyClosed, tasks.OutcomeNotFound, tasks.OutcomePaid, tasks.OutcomeRetry,
}

// otherOutcome replaces outcomes that are not tasks.Outcome* constants.
const otherOutcome = "other"

// Metrics holds the worker's metrics. It implements closehandler.Observer and is
// safe for concurrent use. A nil *Metrics ignores attempts.
type Metrics struct {
	reg         *prometheus.Registry
	handler     http.Handler
	outcomes    *prometheus.CounterVec
	retries     map[string]prometheus.Counter
	latency     prometheus.Observer
	lateness    prometheus.Histogram
	earlyStarts prometheus.Counter
	reconciled  prometheus.Counter
	confirmed   *prometheus.CounterVec
	certFails   prometheus.Counter
	merchants   *merchantMetrics
	queues      *queueCollector // nil without an Inspector
}

var _ closehandler.Observer = (*Metrics)(nil)

// New creates the metrics and registers them, with the Go and process
// collectors and (if opts.Inspector is set) asynq's queue statistics, in a
// private registry.
func New(opts Options) *Metrics {
	api := strings.TrimSpace(opts.API)
	if api == "" {
		api = "unknown"
	}
	version := opts.Version
	if version == "" {
		version = buildVersion()
	}
	timeout := opts.QueueStatsTimeout
	if timeout <= 0 {
		timeout = DefaultQueueStatsTimeout
	}

	m := &Metrics{
		reg: prometheus.NewRegistry(),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "close_outcomes_total",
			Help:      "Close attempts by outcome and WeChat Pay code (codes outside a fixed allow-list are OTHER).",
		}, []string{"outcome", "wechat_code"}),
		retries: map[string]prometheus.Counter{},
		lateness: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace,
			Name:      "schedule_lateness_seconds",
			Help:      "Seconds between a close task's due time and the start of its first run (early starts count as 0).",
			Buckets:   []float64{0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300},
		}),
		earlyStarts: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "schedule_early_starts_total",
			Help:      "Close tasks whose first run started before their due time.",
		}),
		reconciled: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "reconciliation_enqueued_total",
			Help:      "Paid orders put on the reconciliation queue.",
		}),
		confirmed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "close_confirmations_total",
			Help: "Close attempts whose final-looking Close Order answer was unsigned and whose outcome was taken " +
				"from a signed Query Order answer instead, by outcome.",
		}, []string{"outcome"}),
		certFails: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "certificate_refresh_failures_total",
			Help: "WeChat Pay platform certificate downloads that failed, did not decrypt with the APIv3 key or " +
				"were not signed by an already trusted key; the certificates trusted before are kept.",
		}),
	}
	latency := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace,
		Name:      "wechat_request_duration_seconds",
		Help:      "Duration of WeChat Pay Close Order calls as seen by the close handler.",
		Buckets:   []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30},
	}, []string{"api"})
	m.latency = latency.WithLabelValues(api)
	retries := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace,
		Name:      "retries_total",
		Help:      "Close attempts that will run again, by reason (retry, rate_limited, postponed, possibly_early).",
	}, []string{"reason"})
	for _, reason := range retryReasons {
		m.retries[reason] = retries.WithLabelValues(reason)
	}
	// Series that exist from the start let rate() and increase() see the
	// first event; codes appear as WeChat sends them.
	for _, o := range knownOutcomes {
		m.outcomes.WithLabelValues(o, "")
	}
	for _, o := range confirmedOutcomes {
		m.confirmed.WithLabelValues(o)
	}
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace:   namespace,
		Name:        "build_info",
		Help:        "Always 1; labels describe the running worker.",
		ConstLabels: prometheus.Labels{"version": version, "go_version": runtime.Version(), "api": api},
	})
	buildInfo.Set(1)

	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.outcomes, retries, latency, m.lateness, m.earlyStarts, m.reconciled, m.confirmed, m.certFails, buildInfo,
	)
	if opts.ClockOffsets != nil {
		m.reg.MustRegister(clockCollector(opts.ClockOffsets))
	}
	m.merchants = newMerchantMetrics()
	m.reg.MustRegister(m.merchants.collectors()...)
	if opts.RateLimits != nil {
		m.reg.MustRegister(rateCollector(opts.RateLimits))
	}
	if opts.Inspector != nil {
		m.queues = newQueueCollector(opts.Inspector, timeout, opts.Logger)
		m.reg.MustRegister(m.queues)
	}
	m.handler = promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorHandling: promhttp.ContinueOnError,
		ErrorLog:      promLogger{opts.Logger},
	})
	return m
}

// ObserveAttempt records one close attempt. It implements closehandler.Observer:
// it only updates in-memory counters and never blocks.
func (m *Metrics) ObserveAttempt(a closehandler.Attempt) {
	if m == nil {
		return
	}
	m.outcomes.WithLabelValues(outcomeLabel(a.Outcome), codeLabel(a.Code)).Inc()
	if c, ok := m.retries[a.Outcome]; ok {
		c.Inc()
	}
	if a.WeChatLatency > 0 {
		m.latency.Observe(a.WeChatLatency.Seconds())
	}
	if a.HasLateness {
		if a.Lateness < 0 {
			m.earlyStarts.Inc()
		}
		m.lateness.Observe(max(a.Lateness, 0).Seconds())
	}
	if a.Reconciled {
		m.reconciled.Inc()
	}
	m.merchants.observe(a)
	if a.Confirmed {
		m.confirmed.WithLabelValues(outcomeLabel(a.Outcome)).Inc()
	}
}

// CertificateRefreshFailed counts one failed platform certificate refresh
// (wechat.Hooks.CertificateRefreshFailed). A nil *Metrics ignores it.
func (m *Metrics) CertificateRefreshFailed() {
	if m != nil {
		m.certFails.Inc()
	}
}

// clockDesc describes wxclose_clock_offset_seconds.
var clockDesc = prometheus.NewDesc(namespace+"_clock_offset_seconds",
	"Measured offset of this worker's clock from a peer's (worker minus peer; positive: the worker is ahead), "+
		"by peer (wechatpay, redis). Exported once the peer has been measured.",
	[]string{"peer"}, nil)

// clockCollector exports the offsets its function reports. Peers come from
// code (clockskew's constants), so the label stays bounded.
type clockCollector func() map[string]time.Duration

func (c clockCollector) Describe(ch chan<- *prometheus.Desc) { ch <- clockDesc }

func (c clockCollector) Collect(ch chan<- prometheus.Metric) {
	for peer, off := range c() {
		ch <- prometheus.MustNewConstMetric(clockDesc, prometheus.GaugeValue, off.Seconds(), peer)
	}
}

// Handler serves the metrics in the Prometheus exposition formats, for
// GET /metrics. A failing collector never fails the whole response.
func (m *Metrics) Handler() http.Handler { return m.handler }

// Registry returns the private registry, for registering further
// collectors or gathering in tests.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

func outcomeLabel(o string) string {
	for _, k := range knownOutcomes {
		if o == k {
			return k
		}
	}
	return otherOutcome
}

func codeLabel(code string) string {
	if code == "" || knownCodes[code] {
		return code
	}
	return otherCode
}

// buildVersion is the main module's version as stamped by the go command
// (a tag, or a pseudo-version from VCS information), or "devel".
func buildVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

// promLogger sends promhttp's error log to zerolog.
type promLogger struct{ l zerolog.Logger }

func (p promLogger) Println(v ...any) {
	p.l.Error().Str("component", "metrics").Msg(strings.TrimSuffix(fmt.Sprintln(v...), "\n"))
}
