package metrics

import (
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Descriptors of asynq's exporter (github.com/hibiken/asynq/x/metrics),
// names, help and labels unchanged, so its dashboards keep working.
var (
	tasksQueuedDesc = prometheus.NewDesc("asynq_tasks_enqueued_total",
		"Number of tasks enqueued; broken down by queue and state.", []string{"queue", "state"}, nil)
	queueSizeDesc = prometheus.NewDesc("asynq_queue_size",
		"Number of tasks in a queue", []string{"queue"}, nil)
	queueLatencyDesc = prometheus.NewDesc("asynq_queue_latency_seconds",
		"Number of seconds the oldest pending task is waiting in pending state to be processed.", []string{"queue"}, nil)
	queueMemUsgDesc = prometheus.NewDesc("asynq_queue_memory_usage_approx_bytes",
		"Number of memory used by a given queue (approximated number by sampling).", []string{"queue"}, nil)
	tasksProcessedTotalDesc = prometheus.NewDesc("asynq_tasks_processed_total",
		"Number of tasks processed (both succeeded and failed); broken down by queue", []string{"queue"}, nil)
	tasksFailedTotalDesc = prometheus.NewDesc("asynq_tasks_failed_total",
		"Number of tasks failed; broken down by queue", []string{"queue"}, nil)
	pausedQueuesDesc = prometheus.NewDesc("asynq_queue_paused_total",
		"Number of queues paused", []string{"queue"}, nil)
)

// errorLogInterval spaces log lines about failing queue statistics: a
// scrape every 15 s must not flood the log while Redis is down.
const errorLogInterval = time.Minute

// queueCollector exports asynq's queue statistics, one GetQueueInfo per
// queue, so a failing queue hides only itself, and never takes longer than
// timeout.
type queueCollector struct {
	insp    *asynq.Inspector
	timeout time.Duration
	log     zerolog.Logger

	// busy holds a token while a query runs. A query that outlives its
	// scrape keeps it, so the next scrape waits for it instead of starting
	// a second query against a struggling Redis.
	busy        chan struct{}
	errors      prometheus.Counter
	lastSuccess prometheus.Gauge

	logMu      sync.Mutex
	lastLog    time.Time
	suppressed int
	failing    bool
}

func newQueueCollector(insp *asynq.Inspector, timeout time.Duration, log zerolog.Logger) *queueCollector {
	return &queueCollector{
		insp:    insp,
		timeout: timeout,
		log:     log,
		busy:    make(chan struct{}, 1),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "queue_stats_errors_total",
			Help:      "Failed or timed-out reads of asynq queue statistics (each failing queue counts once per scrape).",
		}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace,
			Name:      "queue_stats_last_success_timestamp_seconds",
			Help:      "Unix time of the last scrape that read the statistics of every queue; 0 if none yet.",
		}),
	}
}

// Describe implements prometheus.Collector.
func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{tasksQueuedDesc, queueSizeDesc, queueLatencyDesc, queueMemUsgDesc,
		tasksProcessedTotalDesc, tasksFailedTotalDesc, pausedQueuesDesc} {
		ch <- d
	}
	ch <- c.errors.Desc()
	ch <- c.lastSuccess.Desc()
}

// Collect implements prometheus.Collector. It never reports an error to
// the registry: failures are counted and logged instead.
func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	infos, errs := c.query()
	for _, info := range infos {
		emitQueue(ch, info)
	}
	if len(errs) == 0 {
		c.lastSuccess.Set(float64(time.Now().UnixNano()) / 1e9)
	}
	c.errors.Add(float64(len(errs)))
	c.logResult(errs, len(infos))
	ch <- c.errors
	ch <- c.lastSuccess
}

// queueScan is one query's results, filled by the querying goroutine and
// read by Collect when the query ends or time runs out.
type queueScan struct {
	done chan struct{}

	mu        sync.Mutex
	infos     []*asynq.QueueInfo
	errs      []error
	abandoned bool
}

func (s *queueScan) add(info *asynq.QueueInfo, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if info != nil {
		s.infos = append(s.infos, info)
	}
	if err != nil {
		s.errs = append(s.errs, err)
	}
}

// take returns the results so far and tells the goroutine to stop.
func (s *queueScan) take() ([]*asynq.QueueInfo, []error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.abandoned = true
	return slices.Clone(s.infos), slices.Clone(s.errs)
}

func (s *queueScan) stopped() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.abandoned
}

// query reads every queue's statistics within c.timeout.
func (c *queueCollector) query() ([]*asynq.QueueInfo, []error) {
	deadline := time.NewTimer(c.timeout)
	defer deadline.Stop()
	select {
	case c.busy <- struct{}{}:
	case <-deadline.C:
		return nil, []error{fmt.Errorf("the previous queue statistics query is still running after %v; is Redis overloaded or unreachable?", c.timeout)}
	}
	s := &queueScan{done: make(chan struct{})}
	go c.scan(s)
	select {
	case <-s.done:
		return s.take()
	case <-deadline.C:
		infos, errs := s.take()
		return infos, append(errs, fmt.Errorf("queue statistics took longer than %v; exported %d queue(s) this scrape; is Redis overloaded?", c.timeout, len(infos)))
	}
}

// scan runs in its own goroutine so that Collect can give up on it.
func (c *queueCollector) scan(s *queueScan) {
	defer func() { <-c.busy }()
	defer close(s.done)
	defer func() {
		// A panic in asynq or go-redis must not take the worker down with
		// a scrape.
		if r := recover(); r != nil {
			s.add(nil, fmt.Errorf("queue statistics panicked: %v", r))
		}
	}()
	names, err := c.insp.Queues()
	if err != nil {
		s.add(nil, fmt.Errorf("list asynq queues: %w", err))
		return
	}
	slices.Sort(names)
	for _, q := range names {
		if s.stopped() {
			return
		}
		info, err := c.insp.GetQueueInfo(q)
		if err != nil {
			err = fmt.Errorf("statistics of queue %q: %w", q, err)
		}
		s.add(info, err)
	}
}

func emitQueue(ch chan<- prometheus.Metric, info *asynq.QueueInfo) {
	q := info.Queue
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, s := range []struct {
		state string
		n     int
	}{
		{"active", info.Active}, {"pending", info.Pending}, {"scheduled", info.Scheduled},
		{"retry", info.Retry}, {"archived", info.Archived}, {"completed", info.Completed},
	} {
		gauge(tasksQueuedDesc, float64(s.n), q, s.state)
	}
	gauge(queueSizeDesc, float64(info.Size), q)
	gauge(queueLatencyDesc, info.Latency.Seconds(), q)
	gauge(queueMemUsgDesc, float64(info.MemoryUsage), q)
	ch <- prometheus.MustNewConstMetric(tasksProcessedTotalDesc, prometheus.CounterValue, float64(info.ProcessedTotal), q)
	ch <- prometheus.MustNewConstMetric(tasksFailedTotalDesc, prometheus.CounterValue, float64(info.FailedTotal), q)
	paused := 0.0
	if info.Paused {
		paused = 1
	}
	gauge(pausedQueuesDesc, paused, q)
}

// logResult logs failures at most once per errorLogInterval, and the
// recovery once.
func (c *queueCollector) logResult(errs []error, exported int) {
	c.logMu.Lock()
	defer c.logMu.Unlock()
	if len(errs) == 0 {
		if c.failing {
			c.log.Info().Str("component", "metrics").Msg("asynq queue statistics are readable again")
		}
		c.failing, c.suppressed = false, 0
		return
	}
	c.failing = true
	now := time.Now()
	if !c.lastLog.IsZero() && now.Sub(c.lastLog) < errorLogInterval {
		c.suppressed += len(errs)
		return
	}
	c.log.Warn().Str("component", "metrics").Errs("errors", errs).Int("queues_exported", exported).
		Int("suppressed_since_last_line", c.suppressed).
		Msg("could not read all asynq queue statistics; the scrape continues without them (see wxclose_queue_stats_errors_total)")
	c.lastLog, c.suppressed = now, 0
}
