// Package metrics exports the worker's Prometheus metrics.
//
//	m := metrics.New(metrics.Options{Inspector: asynq.NewInspector(redisOpt), API: "v3"})
//	handler, _ := closehandler.New(closehandler.Config{Observer: m, ...})
//	mux.Handle("GET /metrics", m.Handler())
//
// Metrics live in a private registry (never prometheus.DefaultRegisterer),
// so tests and several workers in one process do not collide. Besides the Go
// runtime and process collectors it exports:
//
//   - wxclose_close_outcomes_total{outcome, wechat_code}: one per close
//     attempt. wechat_code is kept only when it is in a fixed allow-list of
//     WeChat Pay codes; any other non-empty code becomes "OTHER", and an
//     unknown outcome becomes "other", so a misbehaving peer cannot create
//     unbounded series.
//   - wxclose_retries_total{reason}: attempts that will run again (retry,
//     rate_limited, postponed, possibly_early).
//   - wxclose_wechat_request_duration_seconds{api}: Close Order call latency.
//   - wxclose_schedule_lateness_seconds: how long after its due time a task
//     started (first run only); early starts count as 0 here and in
//     wxclose_schedule_early_starts_total.
//   - wxclose_reconciliation_enqueued_total: paid orders handed to the
//     reconciliation queue.
//   - wxclose_close_confirmations_total{outcome}: attempts whose final-looking
//     Close Order answer was unsigned and whose outcome came from a signed
//     Query Order answer (closehandler.Attempt.Confirmed), by the outcome reached.
//   - wxclose_certificate_refresh_failures_total: failed platform
//     certificate refreshes (Metrics.CertificateRefreshFailed, fed by
//     wechat.Hooks.CertificateRefreshFailed).
//   - with Options.ClockOffsets, wxclose_clock_offset_seconds{peer}: the
//     worker's clock minus WeChat Pay's ("wechatpay") or Redis's ("redis"),
//     as internal/clockskew estimates it; absent until measured.
//   - wxclose_build_info{version, go_version, api}: always 1.
//   - with Options.Inspector, asynq's queue metrics under the names of
//     asynq's own exporter (github.com/hibiken/asynq/x/metrics), so its
//     dashboards work: asynq_tasks_enqueued_total{queue,state},
//     asynq_queue_size, asynq_queue_latency_seconds,
//     asynq_queue_memory_usage_approx_bytes, asynq_tasks_processed_total,
//     asynq_tasks_failed_total, asynq_queue_paused_total; plus
//     wxclose_queue_stats_errors_total and
//     wxclose_queue_stats_last_success_timestamp_seconds.
//
// # Queue statistics never break a scrape
//
// asynq's exporter asks Redis for every queue in one go and, if any queue
// fails (asynq v0.26.0's GetQueueInfo fails with "attempt to perform
// arithmetic on local 'bytes'" when tasks vanish mid-scan, hibiken/asynq
// #728), logs through the standard log package and exports no queue at all.
// This package queries each queue on its own, exports the queues that
// answered, counts every failure in wxclose_queue_stats_errors_total, and
// gives up after Options.QueueStatsTimeout, exporting what is ready. At most
// one query runs at a time, so a slow Redis cannot pile up goroutines. The
// worker's own metrics are always served.
//
// # No secrets, no order numbers
//
// Labels carry only bounded, non-sensitive values: outcomes, allow-listed
// WeChat Pay codes, retry reasons, queue names and task states, the API
// version and build information. Order numbers, task ids, merchant ids,
// keys and error messages never become labels or values.
package metrics
