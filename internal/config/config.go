// Package config loads the worker's configuration from environment
// variables, validates it in one place, and reports every problem with the
// name of the variable and what is wrong. Secret values are never part of an
// error or of String.
package config

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/rs/zerolog"

	"github.com/wxclose/wxclose/retry"
	"github.com/wxclose/wxclose/wechat"
)

// Defaults for settings left unset.
const (
	DefaultRedisURL    = "redis://127.0.0.1:6379/0"
	DefaultConcurrency = 20
	DefaultHTTPAddr    = "127.0.0.1:8080"
)

// Worker is the whole configuration of cmd/worker. Load fills every field;
// the comments give the variable and its default.
type Worker struct {
	RedisURL    string             // REDIS_URL, default redis://127.0.0.1:6379/0
	Redis       asynq.RedisConnOpt // parsed from RedisURL
	WeChatAPI   wechat.APIVersion  // WECHATPAY_API: v3 (default) or v2
	BaseURL     string             // WECHATPAY_BASE_URL, default https://apihk.mch.weixin.qq.com
	PathStyle   wechat.PathStyle   // WECHATPAY_PATH_STYLE: global (default) or hk
	MchID       string             // WECHATPAY_MCHID, required
	AppID       string             // WECHATPAY_APPID, required for v2
	HTTPTimeout time.Duration      // WECHATPAY_TIMEOUT, default 30s

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

	Concurrency int           // WXCLOSE_CONCURRENCY, default 20
	Retry       retry.Policy  // WXCLOSE_RETRY_INITIAL (10s), WXCLOSE_RETRY_MAX (10m)
	MaxRetry    int           // WXCLOSE_MAX_RETRY, default 20
	HTTPAddr    string        // WXCLOSE_HTTP_ADDR, default 127.0.0.1:8080
	CloseMargin time.Duration // WXCLOSE_CLOSE_MARGIN, default 1s, never negative
	LogLevel    zerolog.Level // WXCLOSE_LOG_LEVEL, default info
	LogFormat   string        // WXCLOSE_LOG_FORMAT: auto (default: console on a terminal, else json), json, console

	UI         bool   // WXCLOSE_UI, default true
	UIUser     string // WXCLOSE_UI_USER
	UIPassword string // WXCLOSE_UI_PASSWORD (secret)
	UIReadOnly bool   // WXCLOSE_UI_READONLY, default false
}

// Load reads the configuration through getenv (os.Getenv in production) and
// returns every problem found, joined, each naming its variable.
func Load(getenv func(string) string) (Worker, error) {
	r := reader{getenv: getenv}
	w := Worker{
		RedisURL:    r.str("REDIS_URL", DefaultRedisURL),
		WeChatAPI:   wechat.APIVersion(strings.ToLower(r.str("WECHATPAY_API", string(wechat.APIv3)))),
		BaseURL:     r.str("WECHATPAY_BASE_URL", wechat.DefaultBaseURL),
		PathStyle:   wechat.PathStyle(strings.ToLower(r.str("WECHATPAY_PATH_STYLE", string(wechat.PathGlobal)))),
		MchID:       r.str("WECHATPAY_MCHID", ""),
		AppID:       r.str("WECHATPAY_APPID", ""),
		HTTPTimeout: r.duration("WECHATPAY_TIMEOUT", 30*time.Second),

		PrivateKeyFile: r.str("WECHATPAY_MCH_PRIVATE_KEY_FILE", ""),
		CertSerial:     strings.ToUpper(r.str("WECHATPAY_MCH_CERT_SERIAL", "")),
		PublicKeyFile:  r.str("WECHATPAY_PUBLIC_KEY_FILE", ""),
		PublicKeyID:    r.str("WECHATPAY_PUBLIC_KEY_ID", ""),
		APIv3Key:       r.str("WECHATPAY_APIV3_KEY", ""),
		APIKey:         r.str("WECHATPAY_API_KEY", ""),
		SignType:       wechat.SignType(strings.ToUpper(r.str("WECHATPAY_SIGN_TYPE", string(wechat.SignHMACSHA256)))),

		Concurrency: r.positiveInt("WXCLOSE_CONCURRENCY", DefaultConcurrency),
		Retry: retry.Policy{
			Initial: r.duration("WXCLOSE_RETRY_INITIAL", 10*time.Second),
			Max:     r.duration("WXCLOSE_RETRY_MAX", 10*time.Minute),
		},
		MaxRetry:    r.positiveInt("WXCLOSE_MAX_RETRY", 20),
		HTTPAddr:    r.str("WXCLOSE_HTTP_ADDR", DefaultHTTPAddr),
		CloseMargin: r.duration("WXCLOSE_CLOSE_MARGIN", time.Second),
		LogFormat:   strings.ToLower(r.str("WXCLOSE_LOG_FORMAT", "auto")),

		UI:         r.boolean("WXCLOSE_UI", true),
		UIUser:     r.str("WXCLOSE_UI_USER", ""),
		UIPassword: r.str("WXCLOSE_UI_PASSWORD", ""),
		UIReadOnly: r.boolean("WXCLOSE_UI_READONLY", false),
	}
	for _, f := range strings.Split(r.str("WECHATPAY_PLATFORM_CERT_FILE", ""), ",") {
		if f = strings.TrimSpace(f); f != "" {
			w.PlatformCertFile = append(w.PlatformCertFile, f)
		}
	}

	if opt, err := asynq.ParseRedisURI(w.RedisURL); err != nil {
		r.fail("REDIS_URL", "is not a Redis URL (redis://, rediss://, redis-socket:// or redis-sentinel://): %v", err)
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
	if w.CloseMargin < 0 {
		r.fail("WXCLOSE_CLOSE_MARGIN", "must not be negative (it is added after creation + 5 minutes)")
	}
	if err := w.Retry.Validate(); err != nil {
		r.fail("WXCLOSE_RETRY_INITIAL/WXCLOSE_RETRY_MAX", "%v", err)
	}
	if _, _, err := net.SplitHostPort(w.HTTPAddr); err != nil {
		r.fail("WXCLOSE_HTTP_ADDR", "must be host:port, e.g. 127.0.0.1:8080: %v", err)
	}
	if (w.UIUser == "") != (w.UIPassword == "") {
		r.fail("WXCLOSE_UI_USER/WXCLOSE_UI_PASSWORD", "set both or neither")
	}
	if w.MchID == "" {
		r.fail("WECHATPAY_MCHID", "is required (the merchant id, or the institution's in institutional mode)")
	} else if !allDigits(w.MchID) {
		r.fail("WECHATPAY_MCHID", "must be digits")
	}

	switch w.WeChatAPI {
	case wechat.APIv3:
		w.checkV3(&r)
	case wechat.APIv2:
		w.checkV2(&r)
	default:
		r.fail("WECHATPAY_API", "must be v3 or v2, not %q", w.WeChatAPI)
	}
	return w, errors.Join(r.errs...)
}

func (w *Worker) checkV3(r *reader) {
	switch w.PathStyle {
	case wechat.PathGlobal, wechat.PathHK:
	default:
		r.fail("WECHATPAY_PATH_STYLE", "must be global or hk, not %q", w.PathStyle)
	}
	if w.PrivateKeyFile == "" {
		r.fail("WECHATPAY_MCH_PRIVATE_KEY_FILE", "is required for API v3 (the merchant's apiclient_key.pem)")
	}
	if w.CertSerial == "" {
		r.fail("WECHATPAY_MCH_CERT_SERIAL", "is required for API v3 (openssl x509 -noout -serial -in apiclient_cert.pem)")
	}
	if len(w.PlatformCertFile) == 0 && w.PublicKeyFile == "" && w.APIv3Key == "" {
		r.fail("WECHATPAY_PLATFORM_CERT_FILE", "or WECHATPAY_PUBLIC_KEY_FILE with WECHATPAY_PUBLIC_KEY_ID, or WECHATPAY_APIV3_KEY is required to verify WeChat Pay's responses")
	}
	if (w.PublicKeyFile == "") != (w.PublicKeyID == "") {
		r.fail("WECHATPAY_PUBLIC_KEY_ID", "and WECHATPAY_PUBLIC_KEY_FILE must be set together")
	}
	if w.PublicKeyID != "" && !strings.HasPrefix(w.PublicKeyID, "PUB_KEY_ID_") {
		r.fail("WECHATPAY_PUBLIC_KEY_ID", "must start with PUB_KEY_ID_")
	}
	if w.APIv3Key != "" && len(w.APIv3Key) != 32 {
		r.fail("WECHATPAY_APIV3_KEY", "must be 32 characters (it has %d)", len(w.APIv3Key))
	}
}

func (w *Worker) checkV2(r *reader) {
	if w.AppID == "" {
		r.fail("WECHATPAY_APPID", "is required for API v2")
	}
	if w.APIKey == "" {
		r.fail("WECHATPAY_API_KEY", "is required for API v2 (the 32-character key from the merchant platform)")
	}
	switch w.SignType {
	case wechat.SignHMACSHA256, wechat.SignMD5:
	default:
		r.fail("WECHATPAY_SIGN_TYPE", "must be HMAC-SHA256 or MD5, not %q", w.SignType)
	}
}

// WeChat loads the key files and returns the client configuration. Errors
// name the variable whose file could not be used.
func (w Worker) WeChat() (wechat.Config, error) {
	cfg := wechat.Config{
		API: w.WeChatAPI, BaseURL: w.BaseURL, MchID: w.MchID, Timeout: w.HTTPTimeout,
		PathStyle: w.PathStyle, CertSerial: w.CertSerial, PublicKeyID: w.PublicKeyID, APIv3Key: w.APIv3Key,
		AppID: w.AppID, APIKey: w.APIKey, SignType: w.SignType,
		UserAgent: "wxclose-worker",
	}
	if w.WeChatAPI != wechat.APIv3 {
		return cfg, nil
	}
	var err error
	if cfg.PrivateKey, err = wechat.LoadPrivateKeyFile(w.PrivateKeyFile); err != nil {
		return cfg, fmt.Errorf("WECHATPAY_MCH_PRIVATE_KEY_FILE: %w", err)
	}
	for _, f := range w.PlatformCertFile {
		certs, err := wechat.LoadCertificatesFile(f)
		if err != nil {
			return cfg, fmt.Errorf("WECHATPAY_PLATFORM_CERT_FILE: %w", err)
		}
		cfg.PlatformCerts = append(cfg.PlatformCerts, certs...)
	}
	if w.PublicKeyFile != "" {
		if cfg.PublicKey, err = wechat.LoadPublicKeyFile(w.PublicKeyFile); err != nil {
			return cfg, fmt.Errorf("WECHATPAY_PUBLIC_KEY_FILE: %w", err)
		}
	}
	return cfg, nil
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
	return fmt.Sprintf("api=%s base_url=%s mchid=%s concurrency=%d max_retry=%d retry=%s..%s close_margin=%s http_addr=%s"+
		" platform_certs=%d public_key_id=%q apiv3_key=%s api_key=%s ui=%t ui_auth=%s",
		w.WeChatAPI, w.BaseURL, w.MchID, w.Concurrency, w.MaxRetry, w.Retry.Initial, w.Retry.Max, w.CloseMargin, w.HTTPAddr,
		len(w.PlatformCertFile), w.PublicKeyID, set(w.APIv3Key), set(w.APIKey), w.UI, set(w.UIPassword))
}

type reader struct {
	getenv func(string) string
	errs   []error
}

func (r *reader) fail(name, format string, args ...any) {
	r.errs = append(r.errs, fmt.Errorf("%s %s", name, fmt.Sprintf(format, args...)))
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

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
