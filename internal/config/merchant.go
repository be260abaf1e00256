package config

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/wxclose/wxclose/internal/ids"
	"github.com/wxclose/wxclose/internal/redisurl"
	"github.com/wxclose/wxclose/wechat"
)

// Merchant is the WeChat Pay configuration of one merchant, whether it comes
// from the WECHATPAY_* variables (Worker.Merchant) or from one entry of the
// merchant registry (internal/merchants). Both go through Check, WeChat and
// NewCloser, so that the same value is refused with the same words wherever
// it was set; only the names differ.
//
// Names maps the keys of Merchant's rules, which are the wechat.Config field
// names ("BaseURL", "PrivateKey", "APIKey", ...), to what the operator set:
// an environment variable (EnvNames) or a registry field. A key missing
// from Names is reported under the key itself.
type Merchant struct {
	API       wechat.APIVersion
	BaseURL   string
	PathStyle wechat.PathStyle
	MchID     string
	AppID     string
	// Timeout is the whole-request timeout; zero means wechat's default.
	// TimeoutSet says it was written out, so that 0 is refused.
	Timeout    time.Duration
	TimeoutSet bool

	PrivateKeyFile   string
	CertSerial       string
	PlatformCertFile []string
	PublicKeyFile    string
	PublicKeyID      string
	APIv3Key         string // secret

	APIKey   string // secret
	SignType wechat.SignType

	// MaxIdleConnsPerHost is wechat.Config.MaxIdleConnsPerHost: the
	// worker's concurrency (WXCLOSE_CONCURRENCY), so that every close in
	// flight keeps its connection. If zero, wechat's default.
	MaxIdleConnsPerHost int
}

// Names maps rule keys (wechat.Config field names) to what the operator
// set; see Merchant.
type Names map[string]string

// EnvNames are the environment variables of the single-merchant setup.
var EnvNames = Names(variables)

func (n Names) of(key string) string {
	if v, ok := n[key]; ok {
		return v
	}
	return key
}

// Check applies wechat's rules to every field that can be judged without
// reading a file, calling fail once per problem with the operator's name
// of the field and the rest of the sentence. The reasons never contain a
// secret. A base URL with user information, query or fragment is replaced
// by its redacted form, so that it cannot reach a later message or log.
func (m *Merchant) Check(names Names, fail func(name, reason string)) {
	failf := func(key, format string, args ...any) { fail(names.of(key), fmt.Sprintf(format, args...)) }
	m.checkBaseURL(names, failf)
	if m.MchID == "" {
		failf("MchID", "is required (the merchant id, or the institution's in institutional mode)")
	} else if !ids.ValidMchID(m.MchID) {
		failf("MchID", "%s", ids.MchIDRule)
	}
	if m.TimeoutSet && m.Timeout <= 0 {
		failf("Timeout", "must be a positive duration such as 30s, not %s", m.Timeout)
	}
	switch m.API {
	case wechat.APIv3:
		m.checkV3(names, failf)
	case wechat.APIv2:
		m.checkV2(names, failf)
	default:
		failf("API", "must be v3 or v2, not %q", m.API)
	}
}

// checkBaseURL applies wechat's rules for Config.BaseURL here, so that a bad
// value is reported with the others, before anything is logged, and without
// quoting user information (which may be a password).
func (m *Merchant) checkBaseURL(_ Names, failf func(key, format string, args ...any)) {
	u, err := url.Parse(m.BaseURL)
	switch {
	case err != nil:
		failf("BaseURL", "is not a URL (expected e.g. %s)", wechat.DefaultBaseURL)
	case u.User != nil:
		failf("BaseURL", "must not contain user information (user:password@); WeChat Pay authenticates by signature")
		// Keep the rejected value out of every later message and log.
		m.BaseURL = redisurl.Redact(m.BaseURL)
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(m.BaseURL, "#"):
		failf("BaseURL", "must be scheme, host and optional path only, without query or fragment")
		m.BaseURL = redisurl.Redact(m.BaseURL)
	case u.Host == "" || (u.Scheme != "https" && u.Scheme != "http"):
		failf("BaseURL", "%q must be an absolute https:// URL such as %s", redisurl.Redact(m.BaseURL), wechat.DefaultBaseURL)
	case u.Scheme == "http" && !IsLoopbackHost(u.Hostname()):
		failf("BaseURL", "%q must use https; plain http is only allowed for loopback hosts (the sandbox)", redisurl.Redact(m.BaseURL))
	}
}

func (m *Merchant) checkV3(names Names, failf func(key, format string, args ...any)) {
	switch m.PathStyle {
	case wechat.PathGlobal, wechat.PathHK:
	default:
		failf("PathStyle", "must be global or hk, not %q", m.PathStyle)
	}
	if m.PrivateKeyFile == "" {
		failf("PrivateKey", "is required for API v3 (the merchant's apiclient_key.pem)")
	}
	if m.CertSerial == "" {
		failf("CertSerial", "is required for API v3 (openssl x509 -noout -serial -in apiclient_cert.pem)")
	} else if !ids.ValidCertSerial(m.CertSerial) {
		failf("CertSerial", "%s (openssl x509 -noout -serial -in apiclient_cert.pem)", ids.CertSerialRule)
	}
	if len(m.PlatformCertFile) == 0 && m.PublicKeyFile == "" && m.APIv3Key == "" {
		failf("PlatformCerts", "or %s with %s, or %s is required to verify WeChat Pay's responses",
			names.of("PublicKey"), names.of("PublicKeyID"), names.of("APIv3Key"))
	}
	if (m.PublicKeyFile == "") != (m.PublicKeyID == "") {
		failf("PublicKeyID", "and %s must be set together", names.of("PublicKey"))
	}
	if m.PublicKeyID != "" && !ids.ValidPublicKeyID(m.PublicKeyID) {
		failf("PublicKeyID", "%s", ids.PublicKeyIDRule)
	}
	if m.APIv3Key != "" && len(m.APIv3Key) != 32 {
		failf("APIv3Key", "must be 32 characters (it has %d)", len(m.APIv3Key))
	}
}

func (m *Merchant) checkV2(_ Names, failf func(key, format string, args ...any)) {
	if m.AppID == "" {
		failf("AppID", "is required for API v2")
	} else if !ids.ValidAppID(m.AppID) {
		failf("AppID", "%s", ids.AppIDRule)
	}
	if m.APIKey == "" {
		failf("APIKey", "is required for API v2 (the 32-character key from the merchant platform)")
	} else if len(m.APIKey) != 32 {
		failf("APIKey", "must be 32 characters (it has %d); check for pasted whitespace or quotes", len(m.APIKey))
	}
	switch m.SignType {
	case wechat.SignHMACSHA256, wechat.SignMD5:
	default:
		failf("SignType", "must be HMAC-SHA256 or MD5, not %q", m.SignType)
	}
}

// WeChat loads the key files and returns the client configuration. Errors
// are *Error naming the field (by names) whose file could not be used.
func (m Merchant) WeChat(names Names) (wechat.Config, error) {
	cfg := wechat.Config{
		API: m.API, BaseURL: m.BaseURL, MchID: m.MchID, Timeout: m.Timeout,
		PathStyle: m.PathStyle, CertSerial: m.CertSerial, PublicKeyID: m.PublicKeyID, APIv3Key: m.APIv3Key,
		AppID: m.AppID, APIKey: m.APIKey, SignType: m.SignType,
		UserAgent: "wxclose-worker", MaxIdleConnsPerHost: m.MaxIdleConnsPerHost,
	}
	if m.API != wechat.APIv3 {
		return cfg, nil
	}
	var err error
	if cfg.PrivateKey, err = wechat.LoadPrivateKeyFile(m.PrivateKeyFile); err != nil {
		return cfg, fileError(names.of("PrivateKey"), err)
	}
	for _, f := range m.PlatformCertFile {
		certs, err := wechat.LoadCertificatesFile(f)
		if err != nil {
			return cfg, fileError(names.of("PlatformCerts"), err)
		}
		cfg.PlatformCerts = append(cfg.PlatformCerts, certs...)
	}
	if m.PublicKeyFile != "" {
		if cfg.PublicKey, err = wechat.LoadPublicKeyFile(m.PublicKeyFile); err != nil {
			return cfg, fileError(names.of("PublicKey"), err)
		}
	}
	return cfg, nil
}

// NewCloser loads the key files and builds the WeChat Pay client with
// hooks. Its errors wrap ErrInvalid and name fields by names.
func (m Merchant) NewCloser(names Names, hooks wechat.Hooks) (wechat.Closer, error) {
	cfg, err := m.WeChat(names)
	if err != nil {
		return nil, err
	}
	cfg.Hooks = hooks
	c, err := wechat.New(cfg)
	if err != nil {
		return nil, WeChatErrorNamed(err, names)
	}
	return c, nil
}

// WeChatErrorNamed is WeChatError with the operator's names for the
// wechat.Config fields.
func WeChatErrorNamed(err error, names Names) error {
	var ce *wechat.ConfigError
	if errors.As(err, &ce) {
		if v, ok := names[ce.Field]; ok {
			return &Error{Variable: v, Reason: ce.Reason}
		}
		// A field no setting names (UserAgent, HTTPClient, ...) is the
		// worker's own doing; say which.
		return &Error{Variable: "wechat.Config." + ce.Field, Reason: ce.Reason + " (set by the worker, not by a variable: please report it)"}
	}
	if errors.Is(err, wechat.ErrInvalidConfig) {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return err
}

// Merchant returns the merchant configured by the WECHATPAY_* variables.
func (w Worker) Merchant() Merchant {
	return Merchant{
		API: w.WeChatAPI, BaseURL: w.BaseURL, PathStyle: w.PathStyle, MchID: w.MchID, AppID: w.AppID,
		// Load checks WECHATPAY_TIMEOUT itself: only it can tell "0s" from unset.
		Timeout:        w.HTTPTimeout,
		PrivateKeyFile: w.PrivateKeyFile, CertSerial: w.CertSerial, PlatformCertFile: w.PlatformCertFile,
		PublicKeyFile: w.PublicKeyFile, PublicKeyID: w.PublicKeyID, APIv3Key: w.APIv3Key,
		APIKey: w.APIKey, SignType: w.SignType, MaxIdleConnsPerHost: w.Concurrency,
	}
}

// merchantVariables are every WECHATPAY_* variable: none may be set when
// WXCLOSE_MERCHANTS_FILE is.
var merchantVariables = []string{
	"WECHATPAY_API", "WECHATPAY_BASE_URL", "WECHATPAY_PATH_STYLE", "WECHATPAY_MCHID", "WECHATPAY_APPID",
	"WECHATPAY_TIMEOUT", "WECHATPAY_MCH_PRIVATE_KEY_FILE", "WECHATPAY_MCH_CERT_SERIAL",
	"WECHATPAY_PLATFORM_CERT_FILE", "WECHATPAY_PUBLIC_KEY_FILE", "WECHATPAY_PUBLIC_KEY_ID",
	"WECHATPAY_APIV3_KEY", "WECHATPAY_API_KEY", "WECHATPAY_SIGN_TYPE",
}

// DefaultRateLimit is WXCLOSE_RATE_LIMIT's default, in closes per second
// per merchant. WeChat Pay documents no frequency limit for Close Order;
// its global API rules list 600/s for Unified Order and 1800/s for Query
// Order per institution, and a third-party comparison quotes 600/s as the
// default per institution. 100/s stays well inside those, leaves the rest
// of the merchant's quota to its own checkout and query traffic (which
// shares it), and still drains 30,000 closes in five minutes. The adaptive
// limiter lowers it further when WeChat Pay answers RATE_LIMITED anyway.
const DefaultRateLimit = 100

// loadMerchantSource reads WXCLOSE_MERCHANTS_FILE and WXCLOSE_RATE_LIMIT
// and checks the WECHATPAY_* merchant only when there is no registry file:
// the two ways to configure merchants exclude each other.
func (w *Worker) loadMerchantSource(r *reader) {
	w.MerchantsFile = r.str("WXCLOSE_MERCHANTS_FILE", "")
	w.RateLimit = r.rateLimit("WXCLOSE_RATE_LIMIT", DefaultRateLimit)
	switch {
	case w.APIOnly:
		// No WeChat Pay call (apiOnlyEnv blanked WECHATPAY_*): only the
		// producer's default merchant is needed.
		if w.MchID == "" {
			r.fail("WECHATPAY_MCHID", "is required (the merchant id, or the institution's in institutional mode)")
		} else if !ids.ValidMchID(w.MchID) {
			r.fail("WECHATPAY_MCHID", "%s", ids.MchIDRule)
		}
		return
	case w.MerchantsFile == "":
		m := w.Merchant()
		m.Check(EnvNames, func(name, reason string) { r.errs = append(r.errs, &Error{Variable: name, Reason: reason}) })
		w.BaseURL = m.BaseURL // redacted if it was refused
		return
	}
	var set []string
	for _, v := range merchantVariables {
		if r.str(v, "") != "" {
			set = append(set, v)
		}
	}
	if len(set) > 0 {
		r.fail("WXCLOSE_MERCHANTS_FILE", "and %s are both set: configure merchants either in the registry file or with WECHATPAY_* (one merchant), not both",
			strings.Join(set, ", "))
	}
}

// rateLimit reads a rate in closes per second: a positive number, or "off"
// (0: no limit).
func (r *reader) rateLimit(name string, def float64) float64 {
	v := r.str(name, "")
	if v == "" {
		return def
	}
	rate, err := ParseRate(v)
	if err != nil {
		r.fail(name, "%v", err)
		return def
	}
	return rate
}

// MaxRate bounds a configured rate limit; beyond it the limiter's spacing
// (a microsecond) would be below Redis's clock resolution.
const MaxRate = 100_000

// ParseRate parses a rate limit in closes per second: a positive number
// up to MaxRate, or "off" for none (0). The merchant registry's rate_limit
// uses it too.
func ParseRate(v string) (float64, error) {
	if strings.EqualFold(v, "off") {
		return 0, nil
	}
	rate, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(rate) || rate <= 0 || rate > MaxRate {
		return 0, fmt.Errorf("must be a number of closes per second above 0 and at most %d, or off, not %q", MaxRate, v)
	}
	return rate, nil
}

// merchantString is String's part for the merchant registry and the rate
// limit.
func (w Worker) merchantString() string {
	rate := "off"
	if w.RateLimit > 0 {
		rate = strconv.FormatFloat(w.RateLimit, 'f', -1, 64) + "/s"
	}
	if w.MerchantsFile == "" {
		return " rate_limit=" + rate
	}
	return fmt.Sprintf(" merchants_file=%s rate_limit_default=%s", w.MerchantsFile, rate)
}
