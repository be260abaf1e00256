// Package webhook delivers paid orders from the reconciliation queue to the
// merchant's HTTPS endpoint, signed per the Standard Webhooks specification
// (https://www.standardwebhooks.com), so that a reconciler in any language
// verifies them with a library it already has.
//
// Each order:reconcile task becomes one POST whose body is the
// reconciliation payload (tasks.ReconcilePayload) as JSON, with
//
//	webhook-id:        the reconciliation task id (the same for every retry)
//	webhook-timestamp: Unix seconds of this attempt
//	webhook-signature: v1,<base64 HMAC-SHA256(key, id + "." + timestamp + "." + body)>
//	Idempotency-Key:   the webhook-id again
//
// A 2xx answer within the timeout completes the task. Anything else (an
// error status, a redirect, which is never followed, a timeout, a
// connection error) is returned as an error, so asynq retries the task with
// the worker's backoff and archives it, with the status or error as its
// reason, once its retry budget is spent. The key never appears in logs,
// errors or metrics.
//
// Wiring, in the worker (with WXCLOSE_RECONCILE_WEBHOOK_URL set; see
// internal/worker/httpapi.go):
//
//	secret, err := webhook.LoadSecret(cfg.WebhookSecretFile)
//	h, err := webhook.NewHandler(webhook.Options{URL: cfg.WebhookURL, Secret: secret, Logger: log, Registerer: reg})
//	srv := asynq.NewServer(redis, asynq.Config{Queues: map[string]int{tasks.QueueReconcile: 1}, ...})
//	srv.Start(h)
//
// The worker runs it on an asynq server of its own, so that a receiver that
// hangs holds only the webhook's slots, never the closes'.
package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/wxclose/wxclose/tasks"
)

// DefaultTimeout bounds one delivery, from connecting to the end of the
// answer's headers and body.
const DefaultTimeout = 10 * time.Second

// UserAgent is sent with every delivery.
const UserAgent = "wxclose-webhook/1"

// Headers of the Standard Webhooks specification.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// Errors; test with errors.Is.
var (
	// ErrURL is wrapped by NewHandler's errors about Options.URL.
	ErrURL = errors.New("unusable webhook URL")
	// ErrDelivery is wrapped by every failed delivery: the receiver did not
	// answer 2xx in time. The task is retried.
	ErrDelivery = errors.New("webhook delivery failed")
)

// maxDrain is how much of an answer's body is read (and discarded) so that
// the connection can be reused; a longer body closes it instead.
const maxDrain = 64 << 10

// Options configures a Handler.
type Options struct {
	// URL is the receiver (WXCLOSE_RECONCILE_WEBHOOK_URL). Required. It must
	// be https://, except for loopback hosts (localhost, 127.0.0.0/8, ::1),
	// which may use http://.
	URL string
	// Secret signs every delivery (WXCLOSE_RECONCILE_WEBHOOK_SECRET_FILE;
	// see LoadSecret). Required.
	Secret Secret
	// Timeout bounds one delivery. If zero, DefaultTimeout (10 s).
	Timeout time.Duration
	// HTTPClient sends the deliveries. If nil, a client with its own
	// connection pool. Either way, redirects are not followed (a 3xx is a
	// failed delivery) and the client's Timeout is at most Timeout: the
	// Handler uses a copy with those two fields set.
	HTTPClient *http.Client
	// Logger receives one line per delivery attempt. If zero, logging is
	// off.
	Logger zerolog.Logger
	// Now returns the current time, for webhook-timestamp. If nil, time.Now.
	Now func() time.Time
	// Registerer receives the delivery metrics
	// (wxclose_webhook_deliveries_total{result},
	// wxclose_webhook_delivery_duration_seconds). If nil, they are not
	// registered.
	Registerer prometheus.Registerer
}

// Handler delivers order:reconcile tasks; it implements asynq.Handler and
// is safe for concurrent use.
type Handler struct {
	url     string // as configured, for the requests
	shown   string // scheme, host and path only, for logs and errors
	secret  Secret
	timeout time.Duration
	client  *http.Client
	log     zerolog.Logger
	now     func() time.Time
	metrics *deliveryMetrics
}

// NewHandler checks opts and returns a Handler.
func NewHandler(opts Options) (*Handler, error) {
	shown, err := checkURL(opts.URL)
	if err != nil {
		return nil, err
	}
	if opts.Secret.IsZero() {
		return nil, fmt.Errorf("webhook: %w: Options.Secret is required (WXCLOSE_RECONCILE_WEBHOOK_SECRET_FILE)", ErrSecret)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	var client http.Client
	if opts.HTTPClient != nil {
		client = *opts.HTTPClient
	} else {
		t := http.DefaultTransport.(*http.Transport).Clone()
		// One receiver, many concurrent deliveries: keep their connections
		// (the default keeps 2 per host and reconnects for the rest).
		t.MaxIdleConnsPerHost = 64
		client.Transport = t
	}
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	if client.Timeout <= 0 || client.Timeout > opts.Timeout {
		client.Timeout = opts.Timeout
	}
	m, err := newDeliveryMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	return &Handler{
		url: opts.URL, shown: shown, secret: opts.Secret, timeout: opts.Timeout,
		client: &client, log: opts.Logger, now: opts.Now, metrics: m,
	}, nil
}

// Describe returns one line for the startup log, without credentials or
// query: "reconciliation webhook to https://example.com/hooks (timeout 10s)".
func (h *Handler) Describe() string {
	return fmt.Sprintf("reconciliation webhook to %s (timeout %s)", h.shown, h.timeout)
}

// checkURL enforces the URL rules and returns the URL as it may be shown:
// scheme, host and path, without user information or query, which can hold
// credentials.
func checkURL(raw string) (string, error) {
	if raw == "" {
		return "", fmt.Errorf("webhook: %w: Options.URL is required (WXCLOSE_RECONCILE_WEBHOOK_URL)", ErrURL)
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") || u.Opaque != "" {
		// url.Parse's error quotes the URL, which may hold a password.
		return "", fmt.Errorf("webhook: %w: WXCLOSE_RECONCILE_WEBHOOK_URL must be an absolute https:// URL such as https://example.com/wxclose/paid", ErrURL)
	}
	shown := (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
	if u.Scheme == "http" && !isLoopbackHost(u.Hostname()) {
		return "", fmt.Errorf("webhook: %w: WXCLOSE_RECONCILE_WEBHOOK_URL %s must use https; plain http is only allowed for loopback hosts", ErrURL, shown)
	}
	if u.Fragment != "" || strings.Contains(raw, "#") {
		return "", fmt.Errorf("webhook: %w: WXCLOSE_RECONCILE_WEBHOOK_URL %s must not have a fragment (#)", ErrURL, shown)
	}
	return shown, nil
}

func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// ProcessTask implements asynq.Handler for tasks.TypeReconcile. A task that
// is not a valid reconciliation task is archived at once (retrying cannot
// fix it); a failed delivery returns an error wrapping ErrDelivery, for
// asynq to retry.
func (h *Handler) ProcessTask(ctx context.Context, t *asynq.Task) error {
	if t.Type() != tasks.TypeReconcile {
		return fmt.Errorf("webhook: task type %q is not %s: %w", t.Type(), tasks.TypeReconcile, asynq.SkipRetry)
	}
	p, err := tasks.DecodeReconcilePayload(t.Payload())
	if err != nil {
		h.metrics.invalid.Inc()
		h.log.Error().Err(err).Msg("reconciliation task archived: invalid payload")
		return fmt.Errorf("webhook: not delivered: %w: %w", err, asynq.SkipRetry)
	}
	id, ok := asynq.GetTaskID(ctx)
	if !ok {
		id = tasks.ReconcileTaskID(reconcileRef(p))
	}
	attempt, _ := asynq.GetRetryCount(ctx)
	return h.deliver(ctx, id, p, attempt+1)
}

// Deliver sends one paid order with the given webhook-id now, once. It is
// what ProcessTask does for a task with id msgID; use it to deliver outside
// asynq (tests, benchmarks, a manual resend).
func (h *Handler) Deliver(ctx context.Context, msgID string, p tasks.ReconcilePayload) error {
	return h.deliver(ctx, msgID, p, 1)
}

func reconcileRef(p tasks.ReconcilePayload) tasks.OrderRef {
	return tasks.OrderRef{OutTradeNo: p.OutTradeNo, TransactionID: p.TransactionID, MchID: p.MchID, SubMchID: p.SubMchID}
}

func (h *Handler) deliver(ctx context.Context, id string, p tasks.ReconcilePayload, attempt int) error {
	body, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("webhook: encode reconciliation payload: %w", err)
	}
	ts := h.now().Unix()
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%w: %s: cannot build the request", ErrDelivery, h.shown)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", UserAgent)
	// Set directly: the specification spells them in lower case, and some
	// receivers' frameworks compare header names case-sensitively.
	req.Header[HeaderID] = []string{id}
	req.Header[HeaderTimestamp] = []string{strconv.FormatInt(ts, 10)}
	req.Header[HeaderSignature] = []string{h.secret.Sign(id, ts, body)}
	// Deliveries are idempotent (receivers deduplicate on webhook-id); the
	// header lets net/http resend a request that met a keep-alive
	// connection the receiver had just closed, instead of failing it.
	req.Header.Set("Idempotency-Key", id)

	start := time.Now()
	resp, err := h.client.Do(req)
	elapsed := time.Since(start)
	if err != nil {
		err = fmt.Errorf("%w: POST %s: %s", ErrDelivery, h.shown, transportProblem(err, h.timeout))
		h.done(id, p, attempt, 0, elapsed, err)
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
	_ = resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		h.done(id, p, attempt, resp.StatusCode, elapsed, nil)
		return nil
	}
	reason := fmt.Sprintf("%s answered HTTP %d %s", h.shown, resp.StatusCode, http.StatusText(resp.StatusCode))
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		reason += " (redirects are not followed: configure the final URL)"
	}
	err = fmt.Errorf("%w: %s", ErrDelivery, reason)
	h.done(id, p, attempt, resp.StatusCode, elapsed, err)
	return err
}

// transportProblem describes a failed request without the URL (which the
// http package puts in its errors, and which may hold credentials).
func transportProblem(err error, timeout time.Duration) string {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return fmt.Sprintf("no answer within %s", timeout)
	}
	if errors.Is(err, context.Canceled) {
		return "cancelled (the worker is shutting down)"
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}

func (h *Handler) done(id string, p tasks.ReconcilePayload, attempt, status int, elapsed time.Duration, err error) {
	result := "delivered"
	if err != nil {
		result = "failed"
	}
	h.metrics.observe(result, elapsed)
	level := zerolog.InfoLevel
	if err != nil {
		level = zerolog.WarnLevel
	}
	ev := h.log.WithLevel(level)
	if ev == nil {
		return
	}
	ev = ev.Str("task_id", id).
		Str("out_trade_no", p.OutTradeNo).
		Str("transaction_id", p.TransactionID).
		Str("mchid", p.MchID).
		Int("attempt", attempt).
		Str("result", result).
		Dur("latency_ms", elapsed)
	if status != 0 {
		ev = ev.Int("http_status", status)
	}
	if err != nil {
		ev = ev.Err(err)
	}
	ev.Msg("reconciliation webhook")
}

type deliveryMetrics struct {
	delivered, failed, invalid prometheus.Counter
	duration                   prometheus.Histogram
}

func newDeliveryMetrics(reg prometheus.Registerer) (*deliveryMetrics, error) {
	results := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "wxclose",
		Subsystem: "webhook",
		Name:      "deliveries_total",
		Help:      "Reconciliation webhook attempts: delivered (2xx), failed (will be retried or archived), invalid (task archived without a delivery).",
	}, []string{"result"})
	duration := prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "wxclose",
		Subsystem: "webhook",
		Name:      "delivery_duration_seconds",
		Help:      "Duration of reconciliation webhook requests, failed ones included.",
		Buckets:   []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
	})
	m := &deliveryMetrics{
		delivered: results.WithLabelValues("delivered"),
		failed:    results.WithLabelValues("failed"),
		invalid:   results.WithLabelValues("invalid"),
		duration:  duration,
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{results, duration} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("webhook: registering metrics: %w", err)
		}
	}
	return m, nil
}

func (m *deliveryMetrics) observe(result string, elapsed time.Duration) {
	if result == "delivered" {
		m.delivered.Inc()
	} else {
		m.failed.Inc()
	}
	m.duration.Observe(elapsed.Seconds())
}
