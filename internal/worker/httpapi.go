package worker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/wxclose/wxclose/internal/config"
	"github.com/wxclose/wxclose/internal/httpapi"
	"github.com/wxclose/wxclose/internal/webhook"
	"github.com/wxclose/wxclose/retry"
	"github.com/wxclose/wxclose/tasks"
)

// webhookShutdownGrace is added to the webhook timeout to let an in-flight
// delivery finish at shutdown before asynq puts it back on the queue.
const webhookShutdownGrace = 5 * time.Second

// setupAPI builds the close API served at /v1/ (unless WXCLOSE_API=false),
// with the tokens of WXCLOSE_API_TOKENS_FILE, if any, and its metrics on
// the worker's registry. listenAddr is the address actually bound.
func (w *Worker) setupAPI(cfg config.Worker, listenAddr string) error {
	if !cfg.API {
		return nil
	}
	tokens, err := cfg.APITokens()
	if err != nil {
		return err
	}
	api, err := httpapi.New(httpapi.Options{
		Redis: cfg.Redis,
		// As the Go producer of a checkout service would be configured,
		// with the worker's merchant, margin and retry budget.
		Producer:   cfg.Producer(),
		Tokens:     tokens,
		ListenAddr: listenAddr,
		Registerer: w.metrics.Registry(),
		Logger:     w.log.With().Str("component", "api").Logger(),
	})
	if err != nil {
		// config.Load applies the same loopback rule, so this is a
		// configuration error that slipped past it.
		return &config.Error{Variable: "WXCLOSE_API_TOKENS_FILE/WXCLOSE_HTTP_ADDR", Reason: "cannot serve the close API: " + err.Error()}
	}
	w.api, w.tokens = api, tokens
	return nil
}

// ReloadTokens reads WXCLOSE_API_TOKENS_FILE again (cmd/worker calls it on
// SIGHUP) and logs the outcome. When the file cannot be used, the tokens in
// use stay in use and the error, which names the file and line but never a
// token, is logged and returned.
func (w *Worker) ReloadTokens() error {
	if w.tokens == nil {
		w.log.Info().Msg("SIGHUP: no API tokens to reload (WXCLOSE_API_TOKENS_FILE is unset or the API is off)")
		return nil
	}
	inUse := w.tokens.Len()
	if err := w.tokens.Reload(); err != nil {
		w.log.Error().Err(err).Int("tokens_in_use", inUse).Msg("API tokens not reloaded; the tokens in use stay in use")
		return err
	}
	w.log.Info().Str("file", w.tokens.Path()).Int("tokens", w.tokens.Len()).Msg("API tokens reloaded")
	return nil
}

// newWebhookServer builds the asynq server that delivers paid orders from
// the reconciliation queue to WXCLOSE_RECONCILE_WEBHOOK_URL. It is a server
// of its own, with its own concurrency, so that a receiver that hangs holds
// only the webhook's slots, never the closes'. Failed deliveries back off
// as closes do and are archived, with the HTTP status or error, after
// WXCLOSE_MAX_RETRY retries (or the task's own budget, if smaller).
func (w *Worker) newWebhookServer(cfg config.Worker, rdb redis.UniversalClient) (*asynq.Server, error) {
	secret, err := cfg.WebhookSecret()
	if err != nil {
		return nil, err
	}
	h, err := webhook.NewHandler(webhook.Options{
		URL: cfg.WebhookURL, Secret: secret, Timeout: cfg.WebhookTimeout,
		Logger: w.log.With().Str("component", "webhook").Logger(), Registerer: w.metrics.Registry(),
	})
	if err != nil {
		if errors.Is(err, webhook.ErrURL) {
			return nil, &config.Error{Variable: "WXCLOSE_RECONCILE_WEBHOOK_URL", Reason: "is unusable: " + err.Error()}
		}
		return nil, err
	}
	w.webhookDesc = h.Describe()
	policy := cfg.Retry
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency:              cfg.WebhookConcurrency,
		Queues:                   map[string]int{tasks.QueueReconcile: 1},
		RetryDelayFunc:           func(n int, err error, _ *asynq.Task) time.Duration { return policy.Delay(n, err) },
		IsFailure:                retry.IsFailure,
		DelayedTaskCheckInterval: cmp.Or(w.opts.DelayedTaskCheckInterval, delayedTaskCheckInterval),
		TaskCheckInterval:        cmp.Or(w.opts.TaskCheckInterval, taskCheckInterval),
		ShutdownTimeout:          cfg.WebhookTimeout + webhookShutdownGrace,
		Logger:                   asynqLogger{w.log.With().Str("queue", tasks.QueueReconcile).Logger()},
		LogLevel:                 asynq.WarnLevel,
	})
	w.webhookHandler = retryBudget{h: h, max: cfg.MaxRetry}
	return srv, nil
}

// retryBudget archives a task whose attempt failed after max retries,
// whatever budget the task itself carries, as the close handler does with
// WXCLOSE_MAX_RETRY: the worker's setting is the one operators tune.
type retryBudget struct {
	h   asynq.Handler
	max int
}

func (b retryBudget) ProcessTask(ctx context.Context, t *asynq.Task) error {
	err := b.h.ProcessTask(ctx, t)
	if err == nil || errors.Is(err, asynq.SkipRetry) {
		return err
	}
	if n, _ := asynq.GetRetryCount(ctx); n >= b.max {
		return fmt.Errorf("gave up after %d retries: %w: %w", n, err, asynq.SkipRetry)
	}
	return err
}

// setupAPIAndWebhook builds what issue 11 adds to the worker: the close
// API and, with WXCLOSE_RECONCILE_WEBHOOK_URL, the webhook's server. On
// error it releases what it built.
func (w *Worker) setupAPIAndWebhook(cfg config.Worker, rdb redis.UniversalClient, listenAddr string) error {
	if err := w.setupAPI(cfg, listenAddr); err != nil {
		return err
	}
	if !cfg.Webhook() {
		return nil
	}
	srv, err := w.newWebhookServer(cfg, rdb)
	if err != nil {
		if w.api != nil {
			_ = w.api.Close()
		}
		return err
	}
	w.webhooks = srv
	return nil
}

// startServers starts the close server (not in -api-only mode) and the
// webhook's server (when configured).
func (w *Worker) startServers() error {
	if !w.opts.Config.APIOnly {
		if err := w.server.Start(w.router()); err != nil {
			return fmt.Errorf("start asynq server (is Redis at REDIS_URL reachable?): %w", err)
		}
	}
	if w.webhooks != nil {
		if err := w.webhooks.Start(w.webhookHandler); err != nil {
			w.server.Shutdown()
			return fmt.Errorf("start the webhook's asynq server (is Redis at REDIS_URL reachable?): %w", err)
		}
	}
	return nil
}

// logStarted says what this process serves and consumes.
func (w *Worker) logStarted() {
	cfg := w.opts.Config
	if cfg.APIOnly {
		w.log.Info().Str("http_addr", w.HTTPAddr()).Msg("API-only mode started: serving HTTP, consuming no queue")
	} else {
		w.log.Info().Str("http_addr", w.HTTPAddr()).Str("queue", tasks.QueueClose).
			Int("concurrency", cfg.Concurrency).Msg("worker started")
	}
	if w.api != nil {
		w.log.Info().Msg(w.api.Describe())
	} else {
		w.log.Info().Msg("close API disabled (WXCLOSE_API=false)")
	}
	switch {
	case w.webhooks != nil:
		w.log.Info().Str("queue", tasks.QueueReconcile).Int("concurrency", cfg.WebhookConcurrency).
			Msg(w.webhookDesc + ": this worker delivers paid orders from the reconciliation queue")
	case !cfg.APIOnly:
		w.log.Info().Msg("no reconciliation webhook (WXCLOSE_RECONCILE_WEBHOOK_URL unset): the reconciliation queue is left to the merchant's consumer")
	}
}

// shutdownServers stops the close server and the webhook's at once, each
// letting its in-flight tasks finish within its shutdown timeout, then
// releases the API's connections.
func (w *Worker) shutdownServers() {
	done := make(chan struct{})
	go func() {
		defer close(done)
		if w.webhooks != nil {
			w.webhooks.Shutdown()
		}
	}()
	w.server.Shutdown()
	<-done
	if w.api != nil {
		_ = w.api.Close()
	}
}
