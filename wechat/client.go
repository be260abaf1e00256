package wechat

import (
	"cmp"
	"crypto/rsa"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/wxclose/wxclose/internal/ids"
)

const (
	defaultTimeout         = 30 * time.Second
	defaultDialTimeout     = 5 * time.Second
	defaultTLSTimeout      = 10 * time.Second
	defaultCertRefresh     = 6 * time.Hour
	maxClockSkew           = 5 * time.Minute
	maxResponseBody        = 1 << 20 // 1 MiB; a close reply is a few hundred bytes
	unknownSerialRateLimit = time.Minute
	maxRetryAfter          = 24 * time.Hour
	// defaultMaxIdleConnsPerHost is Config.MaxIdleConnsPerHost when zero:
	// more than the worker's default concurrency (20) and than the
	// concurrency the benchmarks run (50, 100).
	defaultMaxIdleConnsPerHost = 100
)

// New validates cfg and returns the Closer of the chosen API generation: a
// *V3Client (the default) or a *V2Client; both also implement Querier.
// Configuration errors are *ConfigError (wrapping ErrInvalidConfig) and name
// the offending field.
func New(cfg Config) (Closer, error) {
	switch cfg.API {
	case "", APIv3:
		return NewV3(cfg)
	case APIv2:
		return NewV2(cfg)
	}
	return nil, configError("API", "must be %q or %q, not %q", APIv3, APIv2, cfg.API)
}

// String describes cfg without its secrets, so a Config that ends up in a
// log line or an error (%v, %+v, %s) does not leak keys.
func (cfg Config) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "wechat.Config{API:%q BaseURL:%q MchID:%q", cfg.API, redactURL(cfg.BaseURL), cfg.MchID)
	if cfg.API == APIv2 {
		fmt.Fprintf(&b, " AppID:%q SignType:%q APIKey:%s", cfg.AppID, cfg.SignType, redacted(cfg.APIKey != ""))
	} else {
		fmt.Fprintf(&b, " PathStyle:%q CertSerial:%q PrivateKey:%s PlatformCerts:%d PublicKeyID:%q APIv3Key:%s",
			cfg.PathStyle, cfg.CertSerial, redacted(cfg.PrivateKey != nil), len(cfg.PlatformCerts), cfg.PublicKeyID,
			redacted(cfg.APIv3Key != ""))
	}
	fmt.Fprintf(&b, " Timeout:%s}", cfg.Timeout)
	return b.String()
}

// GoString is String, so %#v does not print secrets either.
func (cfg Config) GoString() string { return cfg.String() }

func redacted(set bool) string {
	if set {
		return "[redacted]"
	}
	return "[unset]"
}

func configError(field, format string, args ...any) error {
	return &ConfigError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// redactURL returns raw fit for a message: user information (user:password@),
// the query and the fragment can all carry credentials, so they are replaced
// by placeholders. It works on strings that do not parse as URLs too.
func redactURL(raw string) string {
	s := raw
	if i := strings.IndexAny(s, "?#"); i >= 0 {
		s = s[:i] + "?[redacted]"
	}
	start := 0
	if i := strings.Index(s, "//"); i >= 0 {
		start = i + 2
	}
	end := len(s)
	if j := strings.IndexAny(s[start:], "/?"); j >= 0 {
		end = start + j
	}
	if at := strings.LastIndexByte(s[start:end], '@'); at >= 0 {
		s = s[:start] + "[redacted]@" + s[start+at+1:]
	}
	return clip(s, 200)
}

// common holds what both generations share once the config is validated.
type common struct {
	base      *url.URL // no trailing slash in Path
	baseStr   string
	mchID     string
	userAgent string
	http      *http.Client
	now       func() time.Time
	hooks     Hooks
}

func newCommon(cfg Config) (common, error) {
	var c common
	base, err := parseBaseURL(cfg.BaseURL)
	if err != nil {
		return c, err
	}
	if cfg.MchID == "" {
		return c, configError("MchID", "is required")
	}
	if !ids.ValidMchID(cfg.MchID) {
		return c, configError("MchID", "%s", ids.MchIDRule)
	}
	if cfg.Timeout < 0 {
		return c, configError("Timeout", "must not be negative (it is %s)", cfg.Timeout)
	}
	if cfg.MaxIdleConnsPerHost < 0 {
		return c, configError("MaxIdleConnsPerHost", "must not be negative (it is %d)", cfg.MaxIdleConnsPerHost)
	}
	c.base = base
	c.baseStr = base.String()
	c.mchID = cfg.MchID
	c.userAgent = cfg.UserAgent
	if c.userAgent == "" {
		c.userAgent = defaultUserAgent()
	}
	if strings.ContainsAny(c.userAgent, "\r\n") {
		return c, configError("UserAgent", "must be a single line")
	}
	c.http = cfg.HTTPClient
	if c.http == nil {
		t := cfg.Timeout
		if t == 0 {
			t = defaultTimeout
		}
		c.http = defaultHTTPClient(t, cmp.Or(cfg.MaxIdleConnsPerHost, defaultMaxIdleConnsPerHost))
	}
	c.now = cfg.Now
	if c.now == nil {
		c.now = time.Now
	}
	c.hooks = cfg.Hooks
	return c, nil
}

func parseBaseURL(raw string) (*url.URL, error) {
	if raw == "" {
		raw = DefaultBaseURL
	}
	// Messages quote redactURL(raw), never raw: a URL can carry a password.
	u, err := url.Parse(raw)
	if err != nil {
		return nil, configError("BaseURL", "%q is not a URL", redactURL(raw))
	}
	if u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return nil, configError("BaseURL", "%q must be scheme, host and optional path only (no user information, query or fragment)", redactURL(raw))
	}
	if u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, configError("BaseURL", "%q must be an absolute https:// URL", redactURL(raw))
	}
	if u.Scheme == "http" && !isLoopback(u.Hostname()) {
		return nil, configError("BaseURL", "%q must use https; plain http is only allowed for loopback hosts", redactURL(raw))
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = strings.TrimRight(u.RawPath, "/")
	return u, nil
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkRSAKeySize rejects keys shorter than WeChat Pay's. what names the
// key inside field, e.g. "[1]" for the second platform certificate.
func checkRSAKeySize(n int, field, what string) error {
	if n < 2048 {
		return configError(field, "%sis a %d-bit RSA key; WeChat Pay uses RSA-2048 or larger", what, n)
	}
	return nil
}

func rsaBits(k *rsa.PublicKey) int {
	if k == nil || k.N == nil {
		return 0
	}
	return k.N.BitLen()
}

// defaultHTTPClient bounds every phase of a request. Redirects are not
// followed: a redirected request would be signed for the wrong URI, and
// WeChat Pay does not redirect API calls. idlePerHost connections are kept
// for reuse (see Config.MaxIdleConnsPerHost).
func defaultHTTPClient(timeout time.Duration, idlePerHost int) *http.Client {
	tr := &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   defaultDialTimeout,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		TLSHandshakeTimeout:   defaultTLSTimeout,
		TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          max(100, idlePerHost),
		MaxIdleConnsPerHost:   idlePerHost,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	return &http.Client{
		Timeout:   timeout,
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

func defaultUserAgent() string {
	v := "dev"
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Path == "github.com/wxclose/wxclose" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
		for _, d := range bi.Deps {
			if d.Path == "github.com/wxclose/wxclose" {
				v = d.Version
			}
		}
	}
	return "wxclose/" + v + " (" + runtime.GOOS + "/" + runtime.GOARCH + ") Go/" + runtime.Version()
}

// readBody reads at most maxResponseBody bytes. A longer body is an error:
// truncating it would make any signature over it fail in a confusing way.
// contentLength is the response's (-1 if unknown): a body of known length
// is read into one buffer of that size (net/http ends the body there, and
// a short one fails with io.ErrUnexpectedEOF either way).
func readBody(r io.Reader, contentLength int64) ([]byte, error) {
	if contentLength >= 0 && contentLength <= maxResponseBody {
		b := make([]byte, contentLength)
		if _, err := io.ReadFull(r, b); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		return b, nil
	}
	b, err := io.ReadAll(io.LimitReader(r, maxResponseBody+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxResponseBody {
		return nil, errTooLarge
	}
	return b, nil
}

var errTooLarge = errors.New("response body exceeds 1 MiB")

// parseRetryAfter reads a Retry-After header: delay-seconds or an HTTP
// date. Unparseable, negative and past values give 0.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		if secs > int64(maxRetryAfter/time.Second) {
			return maxRetryAfter
		}
		return time.Duration(secs) * time.Second
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0
	}
	d := t.Sub(now)
	if d <= 0 {
		return 0
	}
	if d > maxRetryAfter {
		return maxRetryAfter
	}
	return d.Round(time.Second)
}

// transportError classifies a failure to get a response. A cancelled or
// expired caller context is retryable too: the order is still open.
func transportError(err error) *Error {
	msg := "no response from WeChat Pay; retry later"
	var ne net.Error
	switch {
	case errors.Is(err, errTooLarge):
		return &Error{Class: ClassRetryable, Message: "response body exceeds 1 MiB", Err: ErrMalformedResponse}
	case errors.As(err, &ne) && ne.Timeout():
		msg = "request timed out; retry later"
	}
	return &Error{Class: ClassRetryable, Message: msg, Err: fmt.Errorf("%w: %w", ErrTransport, err)}
}

func invalidRequest(format string, args ...any) *Error {
	return &Error{Class: ClassPermanent, Message: fmt.Sprintf(format, args...), Err: ErrInvalidRequest}
}

// classByStatus is the fallback for replies without a known code.
func classByStatus(status int) Class {
	switch {
	case status == http.StatusTooManyRequests:
		return ClassRateLimited
	case status >= 500, status == http.StatusRequestTimeout:
		return ClassRetryable
	}
	return ClassPermanent
}

// reportClock passes WeChat Pay's clock to Hooks.ServerClock: the signed
// Wechatpay-Timestamp when the response verified (signedSec != 0), else the
// Date header, which any server or proxy on the way could have set.
func (cm *common) reportClock(sent, received time.Time, h http.Header, signedSec int64) {
	f := cm.hooks.ServerClock
	if f == nil {
		return
	}
	if signedSec != 0 {
		f(sent, received, time.Unix(signedSec, 0))
		return
	}
	if d := h.Get("Date"); d != "" {
		if t, err := http.ParseTime(d); err == nil {
			f(sent, received, t)
		}
	}
}
