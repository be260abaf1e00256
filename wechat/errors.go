package wechat

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Class says what a caller should do about an *Error.
type Class int

const (
	// ClassRetryable errors may succeed if the same close is tried again
	// later: SYSTEMERROR, 5xx, network errors, timeouts and responses whose
	// signature could not be verified.
	ClassRetryable Class = iota + 1
	// ClassRateLimited errors are retryable, but say that WeChat Pay asked
	// the caller to slow down (429 RATE_LIMITED / FREQUENCY_LIMITED). They
	// should not count against a retry budget.
	ClassRateLimited
	// ClassPermanent errors will fail the same way every time until a person
	// fixes the cause (bad parameters, bad signature, no permission, a local
	// configuration error).
	ClassPermanent
)

// String returns the lower-case name used in logs and metrics.
func (c Class) String() string {
	switch c {
	case ClassRetryable:
		return "retryable"
	case ClassRateLimited:
		return "rate_limited"
	case ClassPermanent:
		return "permanent"
	}
	return fmt.Sprintf("class(%d)", int(c))
}

// Sentinel causes, wrapped by *Error.Err and matched with errors.Is.
var (
	// ErrUntrustedResponse means a response that claimed success (or any
	// response that had to be verified) carried a missing, stale, unknown or
	// invalid signature. Such a response is never reported as success.
	ErrUntrustedResponse = errors.New("wechat: response signature could not be verified")
	// ErrMalformedResponse means the response body could not be parsed.
	ErrMalformedResponse = errors.New("wechat: malformed response")
	// ErrInvalidRequest means the CloseRequest itself is unusable (for
	// example no order number); nothing was sent.
	ErrInvalidRequest = errors.New("wechat: invalid close request")
	// ErrInvalidConfig means the client's configuration is unusable.
	ErrInvalidConfig = errors.New("wechat: invalid configuration")
	// ErrTransport means the request did not get a response: a connection
	// failure, a timeout or a cancelled context.
	ErrTransport = errors.New("wechat: request failed")
	// ErrCertificateDownload means the platform certificates could not be
	// refreshed: the download failed, its certificates did not decrypt with
	// Config.APIv3Key, or it was not signed by a key the client already
	// trusts. The client keeps the keys it trusted before, reports the
	// failure to Hooks.CertificateRefreshFailed and tries again later (at
	// most once a minute). A close that fails because of it is
	// ClassRetryable unless WeChat Pay answered the download with a
	// permanent error code.
	ErrCertificateDownload = errors.New("wechat: platform certificate download failed")
	// ErrCertificateDecrypt is wrapped together with ErrCertificateDownload
	// when the downloaded certificates do not decrypt with Config.APIv3Key:
	// the key is wrong, or the list did not come from WeChat Pay. A caller
	// can treat it as a configuration error at start-up; during operation it
	// is retryable, so that it never ends a close.
	ErrCertificateDecrypt = errors.New("wechat: platform certificates do not decrypt with Config.APIv3Key")
	// ErrOrderOpen is wrapped together with ErrUntrustedResponse when a Close
	// Order answer that claimed a final state was not signed and a signed
	// Query Order answer says the order is still open (NOTPAY, USERPAYING,
	// PAYERROR): the close must run again.
	ErrOrderOpen = errors.New("wechat: Query Order says the order is still open")
)

// ConfigError is the error New, NewV3 and NewV2 return for an unusable
// Config. It names the Config field, so that a caller can point at where the
// value came from (an environment variable, a flag), and it never contains a
// secret or a URL's user information. errors.Is(err, ErrInvalidConfig) holds.
type ConfigError struct {
	// Field is the name of the Config field, e.g. "BaseURL" or
	// "PlatformCerts".
	Field string
	// Reason completes a sentence that starts with the field, e.g. "is
	// required" or "must be 32 characters (it is 31)".
	Reason string
}

// Error reads "wechat: invalid configuration: Config.<Field> <Reason>".
func (e *ConfigError) Error() string {
	sep := " "
	if strings.HasPrefix(e.Reason, "[") { // an index: Config.PlatformCerts[1] ...
		sep = ""
	}
	return "wechat: invalid configuration: Config." + e.Field + sep + e.Reason
}

// Unwrap returns ErrInvalidConfig.
func (e *ConfigError) Unwrap() error { return ErrInvalidConfig }

// Error is the single error type Close returns. It carries what WeChat Pay
// said (code, message, status, request id) and never a secret.
type Error struct {
	// Class decides whether and how to retry.
	Class Class
	// Code is WeChat's error code (v3 "code", v2 "err_code", or "FAIL" for a
	// v2 return_code failure); empty for local and transport errors.
	Code string
	// Message is WeChat's message (v3 "message", v2 "err_code_des" or
	// "return_msg"), or a description of the local failure.
	Message string
	// HTTPStatus is the response status, 0 when there was no response.
	HTTPStatus int
	// RequestID is the Request-ID response header, if any.
	RequestID string
	// RetryAfter is the server's Retry-After hint, 0 if none.
	RetryAfter time.Duration
	// Err is the underlying cause (one of the sentinels above, possibly
	// wrapping a lower-level error), or nil.
	Err error
}

// Error formats every field that is set, so one log line tells the whole
// story, for example:
//
//	wechat: permanent: code=NO_AUTH status=403 request_id=abc: no permission
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("wechat: ")
	b.WriteString(e.Class.String())
	b.WriteString(":")
	if e.Code != "" {
		fmt.Fprintf(&b, " code=%s", e.Code)
	}
	if e.HTTPStatus != 0 {
		fmt.Fprintf(&b, " status=%d", e.HTTPStatus)
	}
	if e.RequestID != "" {
		fmt.Fprintf(&b, " request_id=%s", e.RequestID)
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, " retry_after=%s", e.RetryAfter)
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the underlying cause.
func (e *Error) Unwrap() error { return e.Err }

// ClassOf returns the class of err if it is (or wraps) a *Error, and
// ClassRetryable otherwise: an error the package did not classify is treated
// as transient, because giving up on an unclassified failure could leave an
// order open.
func ClassOf(err error) Class {
	var we *Error
	if errors.As(err, &we) {
		return we.Class
	}
	return ClassRetryable
}
