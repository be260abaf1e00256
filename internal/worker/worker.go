// Package worker wires the close-order worker together: Redis, the WeChat
// Pay client, the asynq server with wxclose's retry policy, and the HTTP
// endpoints operators use. cmd/worker only reads the configuration and calls
// Run.
package worker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/wxclose/wxclose/internal/clockskew"
	"github.com/wxclose/wxclose/internal/closehandler"
	"github.com/wxclose/wxclose/internal/config"
	"github.com/wxclose/wxclose/internal/consumer"
	"github.com/wxclose/wxclose/internal/dashboard"
	"github.com/wxclose/wxclose/internal/httpapi"
	"github.com/wxclose/wxclose/internal/metrics"
	"github.com/wxclose/wxclose/retry"
	"github.com/wxclose/wxclose/tasks"
	"github.com/wxclose/wxclose/wechat"
)

// Scheduling precision. asynq moves due tasks to pending every
// DelayedTaskCheckInterval (default 5 s) and polls empty queues every
// TaskCheckInterval (default 1 s); with these values a close starts within a
// few hundred milliseconds of its due second, at the cost of a few cheap
// Redis calls per second.
const (
	delayedTaskCheckInterval = 200 * time.Millisecond
	taskCheckInterval        = 100 * time.Millisecond
	// shutdownTimeout lets an in-flight close finish its HTTP call (30 s by
	// default) before asynq puts it back on the queue; a longer
	// WECHATPAY_TIMEOUT extends it (see shutdownTimeoutFor).
	shutdownTimeout = 40 * time.Second
	// clockProbeInterval and clockProbeTimeout pace the Redis TIME probe
	// that measures this worker's clock against Redis's.
	clockProbeInterval = 30 * time.Second
	clockProbeTimeout  = 2 * time.Second
)

// Options configures a Worker.
type Options struct {
	// Config is the loaded configuration. Required.
	Config config.Worker
	// Logger receives the worker's logs. If zero, logging is off.
	Logger zerolog.Logger
	// Closer calls WeChat Pay. If nil, NewCloser builds it. A Closer given
	// here does not feed the worker's hooks (clock offset, certificate
	// refresh failures).
	Closer wechat.Closer
	// NewCloser builds the WeChat Pay client with the worker's hooks, which
	// measure WeChat Pay's clock and count certificate refresh failures. If
	// nil (and Closer is nil), Config.NewCloser: the client configured by
	// the environment, key files loaded.
	NewCloser func(wechat.Hooks) (wechat.Closer, error)
	// Observer also receives every close attempt, besides the worker's own
	// Prometheus metrics. If nil, only the metrics do.
	Observer closehandler.Observer
	// Version is reported in wxclose_build_info. If empty, the module
	// version from the build info.
	Version string
	// DelayedTaskCheckInterval and TaskCheckInterval tune how soon a due
	// close starts (see asynq.Config). If zero, 200 ms and 100 ms; the load
	// test sets asynq's defaults (5 s, 1 s) to measure against them.
	DelayedTaskCheckInterval time.Duration
	TaskCheckInterval        time.Duration
	// QueueDiscoveryInterval is how often the worker looks for close
	// queues of another shard count that still hold closes (see
	// internal/consumer). If zero, consumer.DefaultInterval (30 s).
	QueueDiscoveryInterval time.Duration
	// Routes are extra HTTP handlers served on Config.HTTPAddr, keyed by
	// mux pattern (the dashboard, /metrics).
	Routes map[string]http.Handler
}

// Worker runs close tasks until its context ends.
type Worker struct {
	opts     Options
	log      zerolog.Logger
	rdb      redis.UniversalClient
	server   *consumer.Consumer
	handler  *closehandler.Handler
	producer *tasks.Producer
	listener net.Listener
	http     *http.Server
	metrics  *metrics.Metrics
	clock    *clockskew.Tracker
	// dashboard is nil when WXCLOSE_UI=false.
	dashboard *dashboard.Dashboard
	// merchants is nil with -api-only (see merchants.go).
	merchants *merchantSet
	// api is nil when WXCLOSE_API=false, tokens when it has none, and
	// webhooks without WXCLOSE_RECONCILE_WEBHOOK_URL (see httpapi.go).
	api            *httpapi.API
	tokens         *httpapi.Tokens
	webhooks       *asynq.Server
	webhookHandler asynq.Handler
	webhookDesc    string
}

// New builds a Worker and binds its HTTP address, so configuration, key and
// address problems surface before anything runs. Configuration problems
// wrap config.ErrInvalid (or wechat.ErrInvalidConfig, for a Closer built
// outside config) and name the environment variable.
func New(opts Options) (*Worker, error) {
	cfg := opts.Config
	if cfg.Redis == nil {
		return nil, &config.Error{Variable: "REDIS_URL", Reason: "is required (the worker was given no Redis connection option)"}
	}
	rdb, ok := cfg.Redis.MakeRedisClient().(redis.UniversalClient)
	if !ok {
		return nil, fmt.Errorf("worker: unsupported Redis connection option %T", cfg.Redis)
	}
	clock := clockskew.New(clockskew.Options{})
	inspector := asynq.NewInspectorFromRedisClient(rdb)
	var mer *merchantSet // the merchants and their rate limits (merchants.go); nil with -api-only
	m := metrics.New(metrics.Options{
		Inspector: inspector, API: string(cfg.WeChatAPI), Version: opts.Version, Logger: opts.Logger,
		ClockOffsets: clock.Offsets, RateLimits: func() []metrics.RateLimitSample { return mer.rateLimits() },
	})
	producer := tasks.NewProducerFromRedisClient(rdb, cfg.Producer())
	var handler *closehandler.Handler
	if !cfg.APIOnly { // -api-only calls no WeChat Pay: no keys, no client, no close handler
		var err error
		if mer, err = newMerchantSet(opts, rdb, m, clock); err != nil {
			rdb.Close()
			return nil, err
		}
		handler, err = closehandler.New(closehandler.Config{
			Merchants: mer, Limiter: mer.limiter, Reconciler: producer,
			CloseMargin: cfg.CloseMargin, MaxRetry: cfg.MaxRetry,
			Logger: opts.Logger, Observer: observers{m, opts.Observer},
			ClockAhead: clock.WeChatAhead,
		})
		if err != nil {
			rdb.Close()
			return nil, err
		}
	}
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		rdb.Close()
		return nil, fmt.Errorf("WXCLOSE_HTTP_ADDR %s: %w", cfg.HTTPAddr, err)
	}
	w := &Worker{opts: opts, log: opts.Logger, rdb: rdb, handler: handler, producer: producer, listener: ln, metrics: m, clock: clock}
	w.merchants = mer
	if err := w.setupAPIAndWebhook(cfg, rdb, ln.Addr().String()); err != nil {
		ln.Close()
		rdb.Close()
		return nil, err
	}
	if cfg.UI {
		d, err := dashboard.New(dashboard.Options{
			RedisConnOpt: cfg.Redis, ListenAddr: ln.Addr().String(),
			User: cfg.UIUser, Password: cfg.UIPassword, ReadOnly: cfg.UIReadOnly,
		})
		if err != nil {
			ln.Close()
			rdb.Close()
			return nil, err
		}
		w.dashboard = d
	}
	policy := cfg.Retry
	// Only the close queues (close_order, or its WXCLOSE_SHARDS shards, and
	// those of another shard count still holding closes): the
	// reconciliation queue belongs to the merchant's reconciler, or to the
	// webhook's own server.
	w.server = consumer.New(consumer.Options{Redis: rdb, Shards: cfg.Shards, Loops: cfg.DequeueLoops, Interval: opts.QueueDiscoveryInterval, Logger: opts.Logger, Config: asynq.Config{
		Concurrency:              cfg.Concurrency,
		RetryDelayFunc:           func(n int, err error, _ *asynq.Task) time.Duration { return policy.Delay(n, err) },
		IsFailure:                retry.IsFailure,
		DelayedTaskCheckInterval: cmp.Or(opts.DelayedTaskCheckInterval, delayedTaskCheckInterval),
		TaskCheckInterval:        cmp.Or(opts.TaskCheckInterval, taskCheckInterval),
		ShutdownTimeout:          shutdownTimeoutFor(cfg.HTTPTimeout),
		Logger:                   asynqLogger{opts.Logger},
		LogLevel:                 asynq.WarnLevel,
		HealthCheckFunc: func(err error) {
			if err != nil {
				opts.Logger.Error().Err(err).Msg("redis health check failed")
			}
		},
	}})
	w.http = &http.Server{Handler: w.routes(), ReadHeaderTimeout: 10 * time.Second}
	return w, nil
}

// HTTPAddr is the address the HTTP endpoints listen on (useful when the
// configured port was 0).
func (w *Worker) HTTPAddr() string { return w.listener.Addr().String() }

// Producer returns the worker's producer (sharing its Redis connection).
func (w *Worker) Producer() *tasks.Producer { return w.producer }

// Run processes tasks until ctx is cancelled, then shuts down gracefully:
// in-flight closes get shutdownTimeout to finish and are otherwise put back
// on the queue by asynq. It returns an error if the worker cannot start.
func (w *Worker) Run(ctx context.Context) error {
	defer w.rdb.Close()
	if err := w.startServers(); err != nil {
		w.listener.Close()
		return err
	}
	httpErr := make(chan error, 1)
	go func() { httpErr <- w.http.Serve(w.listener) }()
	probeCtx, stopProbe := context.WithCancel(ctx)
	probeDone := make(chan struct{})
	go func() { defer close(probeDone); w.probeRedisClock(probeCtx) }()
	defer w.watchMerchants(ctx)()
	w.logStarted()
	if w.dashboard != nil {
		defer w.dashboard.Close()
		w.log.Info().Msg(w.dashboard.Describe())
	} else {
		w.log.Info().Msg("dashboard disabled (WXCLOSE_UI=false)")
	}

	var runErr error
	select {
	case <-ctx.Done():
		w.log.Info().Msg("shutting down: finishing in-flight closes")
	case err := <-httpErr:
		runErr = fmt.Errorf("http server on %s stopped: %w", w.HTTPAddr(), err)
	}
	stopProbe()
	<-probeDone
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = w.http.Shutdown(shutdownCtx)
	w.shutdownServers()
	w.log.Info().Msg("worker stopped")
	return runErr
}

// router sends order:close tasks to the close handler and archives every
// other type at once. asynq's ServeMux would answer an unknown type with
// "handler not found", an ordinary error that is retried until the budget
// is spent; and it matches types by prefix, so "order:close2" would reach
// the close handler.
func (w *Worker) router() asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		if t.Type() == tasks.TypeClose {
			return w.handler.ProcessTask(ctx, t)
		}
		return w.archiveUnknown(ctx, t)
	})
}

// maxTypeInReason bounds how much of a foreign task type is echoed into a
// log line and the archived task's error.
const maxTypeInReason = 64

// archiveUnknown archives a task of a type this worker does not handle,
// with a reason naming the type, and counts it as an invalid payload.
func (w *Worker) archiveUnknown(ctx context.Context, t *asynq.Task) error {
	id, _ := asynq.GetTaskID(ctx)
	queue, _ := asynq.GetQueueName(ctx)
	typ := t.Type()
	if len(typ) > maxTypeInReason {
		typ = typ[:maxTypeInReason] + "..."
	}
	observers{w.metrics, w.opts.Observer}.ObserveAttempt(closehandler.Attempt{TaskID: id, Outcome: tasks.OutcomeInvalidPayload})
	w.log.Warn().Str("task_id", id).Str("queue", queue).Str("task_type", typ).
		Msg("archived a task of a type this worker does not handle")
	return fmt.Errorf("archived without running: task type %q is not handled on queue %q (this worker handles only %q): %w",
		typ, queue, tasks.TypeClose, asynq.SkipRetry)
}

// probeRedisClock measures Redis's clock now and every clockProbeInterval
// until ctx ends. Failures only leave the estimate as it was: an unreachable
// Redis is reported by /readyz and asynq's health check.
func (w *Worker) probeRedisClock(ctx context.Context) {
	tick := time.NewTicker(clockProbeInterval)
	defer tick.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, clockProbeTimeout)
		if err := w.clock.ProbeRedis(pctx, w.rdb); err != nil && ctx.Err() == nil {
			w.log.Debug().Err(err).Msg("redis clock probe failed")
		}
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// ClockAhead returns how far this worker's clock is at most ahead of WeChat
// Pay's, as the 5-minute guard sees it (0 until measured).
func (w *Worker) ClockAhead() time.Duration { return w.clock.WeChatAhead() }

func (w *Worker) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(rw, "ok")
	})
	mux.HandleFunc("GET /readyz", func(rw http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := w.rdb.Ping(ctx).Err(); err != nil {
			rw.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(rw, "redis unreachable: %v\n", err)
			return
		}
		fmt.Fprintln(rw, "ok")
	})
	mux.Handle("GET /metrics", w.metrics.Handler())
	if w.dashboard != nil {
		mux.Handle(w.dashboard.Pattern(), w.dashboard.Handler())
	}
	if w.api != nil {
		mux.Handle(w.api.Pattern(), w.api.Handler())
	}
	for pattern, h := range w.opts.Routes {
		mux.Handle(pattern, h)
	}
	return mux
}

// observers fans one attempt out to several observers, skipping nil ones.
type observers []closehandler.Observer

func (o observers) ObserveAttempt(a closehandler.Attempt) {
	for _, ob := range o {
		if ob != nil {
			ob.ObserveAttempt(a)
		}
	}
}

// asynqLogger sends asynq's own log lines to zerolog.
type asynqLogger struct{ l zerolog.Logger }

func (a asynqLogger) Debug(args ...any) {
	a.l.Debug().Str("component", "asynq").Msg(fmt.Sprint(args...))
}
func (a asynqLogger) Info(args ...any) { a.l.Info().Str("component", "asynq").Msg(fmt.Sprint(args...)) }
func (a asynqLogger) Warn(args ...any) { a.l.Warn().Str("component", "asynq").Msg(fmt.Sprint(args...)) }
func (a asynqLogger) Error(args ...any) {
	a.l.Error().Str("component", "asynq").Msg(fmt.Sprint(args...))
}
func (a asynqLogger) Fatal(args ...any) {
	a.l.Fatal().Str("component", "asynq").Msg(fmt.Sprint(args...))
}

// newCloser builds the WeChat Pay client: Options.Closer as given, else
// Options.NewCloser or Config.NewCloser with the hooks, then downloads the
// platform certificates once.
func newCloser(opts Options, hooks wechat.Hooks) (wechat.Closer, error) {
	if opts.Closer != nil {
		return opts.Closer, nil
	}
	build := opts.NewCloser
	if build == nil {
		build = opts.Config.NewCloser
	}
	closer, err := build(hooks)
	if err != nil {
		return nil, config.WeChatError(err)
	}
	if err := prefetchCertificates(closer, opts.Logger); err != nil {
		return nil, err
	}
	return closer, nil
}

// prefetchCertificates downloads platform certificates at start when the
// APIv3 key is configured. Certificates that do not decrypt mean a wrong
// WECHATPAY_APIV3_KEY, and a permanent refusal means wrong merchant
// credentials: both are configuration errors and stop the worker. Any other
// failure (network, a download not signed by a trusted key) does not: the
// client keeps what it trusts and tries again later, and the hook has
// counted and logged it.
func prefetchCertificates(c wechat.Closer, log zerolog.Logger) error {
	v3, ok := c.(*wechat.V3Client)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := v3.RefreshCertificates(ctx)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, wechat.ErrCertificateDecrypt):
		return &config.Error{Variable: "WECHATPAY_APIV3_KEY",
			Reason: "does not decrypt the platform certificates WeChat Pay sent: check the key (merchant platform, API security)"}
	case wechat.ClassOf(err) == wechat.ClassPermanent:
		return &config.Error{Variable: "WECHATPAY_MCHID/WECHATPAY_MCH_CERT_SERIAL/WECHATPAY_MCH_PRIVATE_KEY_FILE",
			Reason: fmt.Sprintf("were refused by WeChat Pay when downloading platform certificates: %v", err)}
	default:
		log.Warn().Err(err).Msg("could not download WeChat Pay platform certificates yet; will retry on first use")
		return nil
	}
}

// shutdownTimeoutFor gives an in-flight close its whole WeChat Pay call
// plus 10 s to finish, and never less than shutdownTimeout.
func shutdownTimeoutFor(httpTimeout time.Duration) time.Duration {
	return max(shutdownTimeout, httpTimeout+10*time.Second)
}
