// Package config loads the worker's configuration from environment
// variables, validates it in one place, and reports every problem with the
// name of the variable and what is wrong. Secret values are never part of an
// error or of String.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/rs/zerolog"

	"github.com/wxclose/wxclose/internal/redisurl"
	"github.com/wxclose/wxclose/internal/webhook"
	"github.com/wxclose/wxclose/retry"
	"github.com/wxclose/wxclose/tasks"
	"github.com/wxclose/wxclose/wechat"
)

// Defaults for settings left unset that belong to the worker alone. The
// retry, margin and timeout defaults are those of the packages that use them
// (retry, tasks, wechat), so they are defined there once.
const (
	DefaultRedisURL    = "redis://127.0.0.1:6379/0"
	DefaultConcurrency = 20
	DefaultHTTPAddr    = "127.0.0.1:8080"
)

// ErrInvalid is wrapped by every configuration error: Load's, WeChat's and
// NewCloser's. cmd/worker exits with status 2 on it.
var ErrInvalid = errors.New("invalid configuration")

// Error is one configuration problem. Its text starts with the environment
// variable the operator set and never contains a secret.
type Error struct {
	// Variable is the environment variable (or variables, joined by "/"),
	// e.g. "WECHATPAY_BASE_URL".
	Variable string
	// Reason completes the sentence, e.g. "must use https".
	Reason string
}

func (e *Error) Error() string { return e.Variable + " " + e.Reason }

// Unwrap returns ErrInvalid.
func (e *Error) Unwrap() error { return ErrInvalid }

// Worker is the whole configuration of cmd/worker. Load fills every field;
// the comments give the variable and its default.
type Worker struct {
	RedisURL    string             // REDIS_URL, default redis://127.0.0.1:6379/0
	Redis       asynq.RedisConnOpt // parsed from RedisURL
	Layout                         // WXCLOSE_SHARDS, WXCLOSE_PREVIOUS_SHARDS, WXCLOSE_WAIT_*: see shards.go
	WeChatAPI   wechat.APIVersion  // WECHATPAY_API: v3 (default) or v2
	BaseURL     string             // WECHATPAY_BASE_URL, default wechat.DefaultBaseURL; never has user information
	PathStyle   wechat.PathStyle   // WECHATPAY_PATH_STYLE: global (default) or hk
	MchID       string             // WECHATPAY_MCHID, required
	AppID       string             // WECHATPAY_APPID, required for v2
	HTTPTimeout time.Duration      // WECHATPAY_TIMEOUT; if zero (unset), wechat's default (30 s)

	// Merchants: WECHATPAY_* configure one; a registry file any number
	// (internal/merchants). Setting both is an error. See merchant.go.
	MerchantsFile string  // WXCLOSE_MERCHANTS_FILE
	RateLimit     float64 // WXCLOSE_RATE_LIMIT, closes/s per merchant, default DefaultRateLimit; 0 ("off"): no limit

	// API v3.
	PrivateKeyFile   string   // WECHATPAY_MCH_PRIVATE_KEY_FILE
	CertSerial       string   // WECHATPAY_MCH_CERT_SERIAL
	PlatformCertFile []string // WECHATPAY_PLATFORM_CERT_FILE, comma-separated
	PublicKeyFile    string   // WECHATPAY_PUBLIC_KEY_FILE
	PublicKeyID      string   // WECHATPAY_PUBLIC_KEY_ID
	APIv3Key         string   // WECHATPAY_APIV3_KEY (secret)

	// API v2.
	APIKey   string          // WECHATPAY_API_KEY (secret)
	SignType wechat.SignType // WECHATPAY_SIGN_TYPE: HMAC-SHA256 (default) or MD5

	Concurrency int // WXCLOSE_CONCURRENCY, default 20
	// DequeueLoops is WXCLOSE_DEQUEUE_LOOPS: the asynq servers sharing
	// Concurrency (internal/consumer). Zero (unset) means
	// consumer.DefaultLoops(Concurrency); otherwise 1..Concurrency.
	DequeueLoops int
	Retry        retry.Policy  // WXCLOSE_RETRY_INITIAL (retry.DefaultInitial), WXCLOSE_RETRY_MAX (retry.DefaultMax)
	MaxRetry     int           // WXCLOSE_MAX_RETRY, default tasks.DefaultMaxRetry
	HTTPAddr     string        // WXCLOSE_HTTP_ADDR, default 127.0.0.1:8080
	CloseMargin  time.Duration // WXCLOSE_CLOSE_MARGIN, default tasks.DefaultCloseMargin, never negative
	LogLevel     zerolog.Level // WXCLOSE_LOG_LEVEL, default info
	LogFormat    string        // WXCLOSE_LOG_FORMAT: auto (default: console on a terminal, else json), json, console

	UI         bool   // WXCLOSE_UI, default true
	UIUser     string // WXCLOSE_UI_USER
	UIPassword string // WXCLOSE_UI_PASSWORD (secret)
	UIReadOnly bool   // WXCLOSE_UI_READONLY, default false

	// The close API and the paid-order webhook: see httpapi.go.
	APIOnly            bool          // set by LoadAPIOnly (worker -api-only): serve HTTP, consume no queue
	API                bool          // WXCLOSE_API, default true: serve the close API at /v1/
	APITokensFile      string        // WXCLOSE_API_TOKENS_FILE; required unless WXCLOSE_HTTP_ADDR is loopback
	WebhookURL         string        // WXCLOSE_RECONCILE_WEBHOOK_URL; may hold credentials: log WebhookURLShown
	WebhookSecretFile  string        // WXCLOSE_RECONCILE_WEBHOOK_SECRET_FILE, with WebhookURL
	WebhookTimeout     time.Duration // WXCLOSE_RECONCILE_WEBHOOK_TIMEOUT, default webhook.DefaultTimeout (10 s)
	WebhookConcurrency int           // WXCLOSE_RECONCILE_WEBHOOK_CONCURRENCY, default 4
}

// Load reads the configuration through getenv (os.Getenv in production) and
// returns every problem found, joined, each naming its variable.
func Load(getenv func(string) string) (Worker, error) { return load(getenv, false) }

func load(getenv func(string) string, apiOnly bool) (Worker, error) {
	if apiOnly {
		getenv = apiOnlyEnv(getenv)
	}
	r := reader{getenv: getenv}
	w := Worker{
		APIOnly:     apiOnly,
		RedisURL:    r.str("REDIS_URL", DefaultRedisURL),
		WeChatAPI:   wechat.APIVersion(strings.ToLower(r.str("WECHATPAY_API", string(wechat.APIv3)))),
		BaseURL:     r.str("WECHATPAY_BASE_URL", wechat.DefaultBaseURL),
		PathStyle:   wechat.PathStyle(strings.ToLower(r.str("WECHATPAY_PATH_STYLE", string(wechat.PathGlobal)))),
		MchID:       r.str("WECHATPAY_MCHID", ""),
		AppID:       r.str("WECHATPAY_APPID", ""),
		HTTPTimeout: r.duration("WECHATPAY_TIMEOUT", 0),

		PrivateKeyFile: r.str("WECHATPAY_MCH_PRIVATE_KEY_FILE", ""),
		// `openssl x509 -noout -serial` prints "serial=...": accept it as is.
		CertSerial:    strings.ToUpper(strings.TrimPrefix(r.str("WECHATPAY_MCH_CERT_SERIAL", ""), "serial=")),
		PublicKeyFile: r.str("WECHATPAY_PUBLIC_KEY_FILE", ""),
		PublicKeyID:   r.str("WECHATPAY_PUBLIC_KEY_ID", ""),
		APIv3Key:      r.str("WECHATPAY_APIV3_KEY", ""),
		APIKey:        r.str("WECHATPAY_API_KEY", ""),
		SignType:      wechat.SignType(strings.ToUpper(r.str("WECHATPAY_SIGN_TYPE", string(wechat.SignHMACSHA256)))),

		Concurrency:  r.positiveInt("WXCLOSE_CONCURRENCY", DefaultConcurrency),
		DequeueLoops: r.nonNegativeInt("WXCLOSE_DEQUEUE_LOOPS", 0),
		Retry: retry.Policy{
			Initial: r.duration("WXCLOSE_RETRY_INITIAL", retry.DefaultInitial),
			Max:     r.duration("WXCLOSE_RETRY_MAX", retry.DefaultMax),
		},
		MaxRetry:    r.positiveInt("WXCLOSE_MAX_RETRY", tasks.DefaultMaxRetry),
		HTTPAddr:    r.str("WXCLOSE_HTTP_ADDR", DefaultHTTPAddr),
		CloseMargin: r.duration("WXCLOSE_CLOSE_MARGIN", tasks.DefaultCloseMargin),
		LogFormat:   strings.ToLower(r.str("WXCLOSE_LOG_FORMAT", "auto")),

		UI:         r.boolean("WXCLOSE_UI", true),
		UIUser:     r.str("WXCLOSE_UI_USER", ""),
		UIPassword: r.str("WXCLOSE_UI_PASSWORD", ""),
		UIReadOnly: r.boolean("WXCLOSE_UI_READONLY", false),

		API:                r.boolean("WXCLOSE_API", true),
		APITokensFile:      r.str("WXCLOSE_API_TOKENS_FILE", ""),
		WebhookURL:         r.str("WXCLOSE_RECONCILE_WEBHOOK_URL", ""),
		WebhookSecretFile:  r.str("WXCLOSE_RECONCILE_WEBHOOK_SECRET_FILE", ""),
		WebhookTimeout:     r.duration("WXCLOSE_RECONCILE_WEBHOOK_TIMEOUT", webhook.DefaultTimeout),
		WebhookConcurrency: r.positiveInt("WXCLOSE_RECONCILE_WEBHOOK_CONCURRENCY", DefaultWebhookConcurrency),
	}
	for _, f := range strings.Split(r.str("WECHATPAY_PLATFORM_CERT_FILE", ""), ",") {
		if f = strings.TrimSpace(f); f != "" {
			w.PlatformCertFile = append(w.PlatformCertFile, f)
		}
	}

	if opt, err := redisurl.Parse(w.RedisURL); err != nil {
		// Never quote the URL: it may hold the password.
		r.fail("REDIS_URL", "is %v", err)
	} else {
		w.Redis = opt
	}
	lvl, err := zerolog.ParseLevel(strings.ToLower(r.str("WXCLOSE_LOG_LEVEL", "info")))
	if err != nil || lvl == zerolog.NoLevel {
		r.fail("WXCLOSE_LOG_LEVEL", "must be one of trace, debug, info, warn, error")
		lvl = zerolog.InfoLevel
	}
	w.LogLevel = lvl
	switch w.LogFormat {
	case "auto", "json", "console":
	default:
		r.fail("WXCLOSE_LOG_FORMAT", "must be auto, json or console, not %q", w.LogFormat)
	}
	// Zero means wechat's default only when unset; written out, it is a
	// mistake.
	if _, err := time.ParseDuration(r.str("WECHATPAY_TIMEOUT", "")); err == nil && w.HTTPTimeout <= 0 {
		r.fail("WECHATPAY_TIMEOUT", "must be a positive duration such as 30s, not %s", w.HTTPTimeout)
	}
	if w.DequeueLoops > w.Concurrency {
		r.fail("WXCLOSE_DEQUEUE_LOOPS", "must be at most WXCLOSE_CONCURRENCY (%d): every loop needs a slot", w.Concurrency)
	}
	if w.CloseMargin < 0 {
		r.fail("WXCLOSE_CLOSE_MARGIN", "must not be negative (it is added after creation + 5 minutes)")
	}
	if err := w.Retry.Validate(); err != nil {
		r.fail("WXCLOSE_RETRY_INITIAL/WXCLOSE_RETRY_MAX", "%v", err)
	}
	w.checkHTTP(&r)
	w.checkAPI(&r)
	w.checkWebhook(&r)
	w.loadLayout(&r)
	w.loadMerchantSource(&r)
	return w, errors.Join(r.errs...)
}

// checkHTTP checks the HTTP address and the dashboard's credentials with the
// rules dashboard.New enforces, so they are reported as configuration errors.
func (w *Worker) checkHTTP(r *reader) {
	host, _, err := net.SplitHostPort(w.HTTPAddr)
	if err != nil {
		r.fail("WXCLOSE_HTTP_ADDR", "must be host:port, e.g. 127.0.0.1:8080: %v", err)
		return
	}
	if !w.UI {
		return
	}
	switch auth := w.UIUser != "" || w.UIPassword != ""; {
	case auth && (w.UIUser == "" || w.UIPassword == ""):
		r.fail("WXCLOSE_UI_USER/WXCLOSE_UI_PASSWORD", "set both or neither")
	case strings.Contains(w.UIUser, ":"):
		// RFC 7617: a user-id cannot contain a colon; no browser could log in.
		r.fail("WXCLOSE_UI_USER", "must not contain ':'")
	case !auth && !IsLoopbackHost(host):
		r.fail("WXCLOSE_UI_USER/WXCLOSE_UI_PASSWORD",
			"are required when the dashboard is reachable from other machines (WXCLOSE_HTTP_ADDR %q): set both, bind WXCLOSE_HTTP_ADDR to loopback (e.g. 127.0.0.1:8080), or set WXCLOSE_UI=false",
			w.HTTPAddr)
	}
}

// IsLoopbackHost reports whether host (a host name or IP address without
// port or brackets) only accepts connections from this machine. An empty
// host (":8080") listens on every interface and is not loopback.
func IsLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// WeChat loads the key files and returns the client configuration. Errors
// are *Error naming the variable whose file could not be used.
func (w Worker) WeChat() (wechat.Config, error) { return w.Merchant().WeChat(EnvNames) }

// NewCloser loads the key files and builds the WeChat Pay client with hooks.
// Its errors wrap ErrInvalid and name environment variables, not
// wechat.Config fields (see WeChatError).
func (w Worker) NewCloser(hooks wechat.Hooks) (wechat.Closer, error) {
	return w.Merchant().NewCloser(EnvNames, hooks)
}

// variables maps wechat.Config fields to the environment variables that
// set them.
var variables = map[string]string{
	"API":           "WECHATPAY_API",
	"BaseURL":       "WECHATPAY_BASE_URL",
	"PathStyle":     "WECHATPAY_PATH_STYLE",
	"MchID":         "WECHATPAY_MCHID",
	"AppID":         "WECHATPAY_APPID",
	"Timeout":       "WECHATPAY_TIMEOUT",
	"PrivateKey":    "WECHATPAY_MCH_PRIVATE_KEY_FILE",
	"CertSerial":    "WECHATPAY_MCH_CERT_SERIAL",
	"PlatformCerts": "WECHATPAY_PLATFORM_CERT_FILE",
	"PublicKey":     "WECHATPAY_PUBLIC_KEY_FILE",
	"PublicKeyID":   "WECHATPAY_PUBLIC_KEY_ID",
	"APIv3Key":      "WECHATPAY_APIV3_KEY",
	"APIKey":        "WECHATPAY_API_KEY",
	"SignType":      "WECHATPAY_SIGN_TYPE",
}

// WeChatError turns an error of wechat.New into a configuration error that
// names the environment variable behind the wechat.Config field. Any error
// wrapping wechat.ErrInvalidConfig becomes one (wrapping ErrInvalid); other
// errors are returned unchanged.
func WeChatError(err error) error { return WeChatErrorNamed(err, EnvNames) }

func fileError(name string, err error) error {
	return &Error{Variable: name, Reason: "cannot be used: " + err.Error()}
}

// String describes the configuration for the startup log, with every secret
// replaced by whether it is set.
func (w Worker) String() string {
	set := func(s string) string {
		if s == "" {
			return "unset"
		}
		return "set"
	}
	timeout := "default"
	if w.HTTPTimeout > 0 {
		timeout = w.HTTPTimeout.String()
	}
	// URLs go through Redact even though Load rejects user information in
	// the base URL: String must be safe on any Worker.
	return fmt.Sprintf("redis=%s api=%s base_url=%s mchid=%s timeout=%s concurrency=%d max_retry=%d retry=%s..%s close_margin=%s http_addr=%s"+
		" platform_certs=%d public_key_id=%q apiv3_key=%s api_key=%s ui=%t ui_auth=%s",
		redisurl.Redact(w.RedisURL), w.WeChatAPI, redisurl.Redact(w.BaseURL), w.MchID, timeout, w.Concurrency, w.MaxRetry,
		w.Retry.Initial, w.Retry.Max, w.CloseMargin, w.HTTPAddr,
		len(w.PlatformCertFile), w.PublicKeyID, set(w.APIv3Key), set(w.APIKey), w.UI, set(w.UIPassword)) + w.apiString() + w.merchantString() + w.Layout.String()
}

type reader struct {
	getenv func(string) string
	errs   []error
}

func (r *reader) fail(name, format string, args ...any) {
	r.errs = append(r.errs, &Error{Variable: name, Reason: fmt.Sprintf(format, args...)})
}

func (r *reader) str(name, def string) string {
	if v := strings.TrimSpace(r.getenv(name)); v != "" {
		return v
	}
	return def
}

func (r *reader) duration(name string, def time.Duration) time.Duration {
	v := r.str(name, "")
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		r.fail(name, "must be a duration such as 10s or 5m, not %q", v)
		return def
	}
	return d
}

func (r *reader) positiveInt(name string, def int) int {
	v := r.str(name, "")
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		r.fail(name, "must be a positive whole number, not %q", v)
		return def
	}
	return n
}

func (r *reader) boolean(name string, def bool) bool {
	v := r.str(name, "")
	if v == "" {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		r.fail(name, "must be true or false, not %q", v)
		return def
	}
	return b
}
