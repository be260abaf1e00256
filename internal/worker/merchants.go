package worker

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/wxclose/wxclose/internal/clockskew"
	"github.com/wxclose/wxclose/internal/closehandler"
	"github.com/wxclose/wxclose/internal/merchants"
	"github.com/wxclose/wxclose/internal/metrics"
	"github.com/wxclose/wxclose/internal/ratelimit"
	"github.com/wxclose/wxclose/wechat"
)

// merchantSet is the worker's merchants (the registry, reloaded on SIGHUP
// and when its files change) and the rate limiter they share with every
// other worker through Redis. It implements closehandler.Merchants.
type merchantSet struct {
	reg     *merchants.Registry
	limiter *ratelimit.Limiter
	log     zerolog.Logger
}

// newMerchantSet builds the registry: one merchant from Options.Closer or
// Options.NewCloser when given (tests and embedders), else the registry
// file (WXCLOSE_MERCHANTS_FILE) or the WECHATPAY_* merchant. Every key is
// loaded and checked now.
func newMerchantSet(opts Options, rdb redis.UniversalClient, m *metrics.Metrics, clock *clockskew.Tracker) (*merchantSet, error) {
	cfg := opts.Config
	log := opts.Logger.With().Str("component", "merchants").Logger()
	hooks := func(mchid, _ string) wechat.Hooks {
		return wechat.Hooks{
			ServerClock: clock.WeChatHook,
			CertificateRefreshFailed: func(err error) {
				m.CertificateRefreshFailed()
				// wechat's errors carry no secret; the client keeps the keys it
				// already trusts, so this is a warning, not an outage.
				opts.Logger.Warn().Str("component", "wechat").Str("mchid", mchid).Err(err).
					Msg("platform certificate refresh failed; keeping the certificates already trusted")
			},
		}
	}
	var reg *merchants.Registry
	var err error
	switch {
	case opts.Closer != nil || opts.NewCloser != nil:
		var c wechat.Closer
		if c, err = newCloser(opts, hooks(cfg.MchID, "")); err != nil {
			return nil, err
		}
		reg, err = merchants.NewStatic(merchants.Merchant{MchID: cfg.MchID, API: cfg.WeChatAPI, RateLimit: cfg.RateLimit, Closer: c})
	default:
		ro := merchants.Options{File: cfg.MerchantsFile, DefaultRateLimit: cfg.RateLimit, Hooks: hooks, Logger: opts.Logger}
		if cfg.MerchantsFile == "" {
			single := cfg.Merchant()
			ro.Single = &single
		}
		reg, err = merchants.New(context.Background(), ro)
	}
	if err != nil {
		return nil, err
	}
	lim, err := ratelimit.New(rdb, ratelimit.Options{})
	if err != nil {
		return nil, err
	}
	s := &merchantSet{reg: reg, limiter: lim, log: log}
	for _, mm := range reg.All() {
		ev := log.Info().Str("mchid", mm.MchID).Str("api", string(mm.API))
		if mm.Name != "" {
			ev = ev.Str("name", mm.Name)
		}
		if mm.RateLimit > 0 {
			ev = ev.Float64("rate_limit", mm.RateLimit)
		} else {
			ev = ev.Str("rate_limit", "off")
		}
		ev.Msg("merchant")
	}
	return s, nil
}

// Merchant implements closehandler.Merchants with one lock-free lookup.
func (s *merchantSet) Merchant(mchid string) (closehandler.Merchant, error) {
	m, err := s.reg.Lookup(mchid)
	switch {
	case errors.Is(err, merchants.ErrAmbiguous):
		return closehandler.Merchant{}, closehandler.ErrMerchantRequired
	case err != nil:
		return closehandler.Merchant{}, fmt.Errorf("%w: %s", closehandler.ErrUnknownMerchant, mchid)
	}
	return closehandler.Merchant{MchID: m.MchID, Closer: m.Closer, RateLimit: m.RateLimit, Name: m.Name}, nil
}

// rateLimits reports every limited merchant's configured and effective
// rate for the metrics (as this worker knows them; no Redis call). A nil
// set (-api-only) reports none.
func (s *merchantSet) rateLimits() []metrics.RateLimitSample {
	if s == nil {
		return nil
	}
	var out []metrics.RateLimitSample
	for _, m := range s.reg.All() {
		if m.RateLimit > 0 {
			out = append(out, metrics.RateLimitSample{Merchant: m.Name, Configured: m.RateLimit, Effective: s.limiter.Effective(m.MchID, m.RateLimit)})
		}
	}
	return out
}

// watchMerchants reloads the registry when its files change until ctx
// ends; the returned function stops it and waits.
func (w *Worker) watchMerchants(ctx context.Context) (stop func()) {
	if w.merchants == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); w.merchants.reg.Watch(ctx) }()
	return func() { cancel(); <-done }
}

// ReloadMerchants reloads the merchant registry (or the WECHATPAY_* key
// files) now, as on SIGHUP. A registry that does not load is logged and
// the merchants in use stay; closes in flight keep the client they started
// with either way.
func (w *Worker) ReloadMerchants() error {
	if w.merchants == nil {
		return nil
	}
	return w.merchants.reg.Reload(context.Background())
}
