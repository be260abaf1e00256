package wechat

import (
	"crypto/rsa"
	"crypto/x509"
	"net/http"
	"time"
)

// APIVersion selects the WeChat Pay API generation.
type APIVersion string

const (
	// APIv3 is the JSON API signed with SHA256-RSA2048 (the default).
	APIv3 APIVersion = "v3"
	// APIv2 is the legacy XML API signed with MD5 or HMAC-SHA256.
	APIv2 APIVersion = "v2"
)

// PathStyle selects the v3 URL family.
type PathStyle string

const (
	// PathGlobal is /v3/global/transactions/... (the default).
	PathGlobal PathStyle = "global"
	// PathHK is the legacy Hong Kong family /hk/v3/transactions/....
	PathHK PathStyle = "hk"
)

// SignType is the v2 signature algorithm.
type SignType string

const (
	// SignHMACSHA256 is HMAC-SHA256 (the default).
	SignHMACSHA256 SignType = "HMAC-SHA256"
	// SignMD5 is MD5.
	SignMD5 SignType = "MD5"
)

// DefaultBaseURL is the WeChat Pay Global host.
const DefaultBaseURL = "https://apihk.mch.weixin.qq.com"

// Config configures a Closer. Only the fields of the chosen API generation
// are read. Secrets in Config are used to sign and verify and are never
// printed, logged or put in an error.
type Config struct {
	// API is the generation to use. If empty, APIv3.
	API APIVersion
	// BaseURL is the scheme and host (and optional path prefix) of WeChat
	// Pay. If empty, DefaultBaseURL. A plain http:// URL is accepted only
	// for loopback hosts (the sandbox).
	BaseURL string
	// MchID is the merchant id, or the institution's merchant id
	// (sp_mchid) in institutional mode. Used when a CloseRequest has none.
	MchID string

	// PathStyle selects the v3 URL family. If empty, PathGlobal.
	PathStyle PathStyle
	// PrivateKey is the merchant API private key that signs v3 requests.
	// Required for v3.
	PrivateKey *rsa.PrivateKey
	// CertSerial is the serial number (hex) of the merchant API
	// certificate. Required for v3.
	CertSerial string
	// PlatformCerts are WeChat Pay platform certificates trusted to sign
	// responses, keyed by their own serial numbers. Each is used only
	// within its validity period (NotBefore to NotAfter by Now). With
	// APIv3Key set they also pin the downloads: a downloaded list must be
	// signed by one of them (or by PublicKey, or by a certificate from an
	// earlier verified download). See V3Client.
	PlatformCerts []*x509.Certificate
	// PublicKey is a WeChat Pay public key trusted to sign responses whose
	// Wechatpay-Serial equals PublicKeyID ("PUB_KEY_ID_...").
	PublicKey   *rsa.PublicKey
	PublicKeyID string
	// APIv3Key (32 bytes) enables downloading platform certificates from
	// WeChat Pay. At least one of PlatformCerts, PublicKey and APIv3Key is
	// required for v3. With APIv3Key alone, the first download is trusted
	// because the key decrypts it (as the official SDKs do) and later ones
	// must be signed by a certificate already downloaded; see V3Client.
	APIv3Key string
	// CertRefreshInterval is how often downloaded platform certificates are
	// refreshed. If zero, 6 hours (WeChat Pay asks for less than 12).
	CertRefreshInterval time.Duration

	// AppID is the app id bound to the merchant. Required for v2.
	AppID string
	// APIKey is the 32-character v2 API key. Required for v2.
	APIKey string
	// SignType is the v2 signature algorithm. If empty, SignHMACSHA256.
	SignType SignType

	// Timeout bounds one whole request, response body included. If zero,
	// 30 seconds. Ignored when HTTPClient is set.
	Timeout time.Duration
	// MaxIdleConnsPerHost is how many idle connections to WeChat Pay the
	// client keeps for reuse. Set it to the number of calls made at once
	// (the worker's concurrency): with fewer, connections opened for a
	// burst are closed after it and opened again for the next (a TLS
	// handshake each). Idle connections close after 90 s. If zero, 100.
	// Ignored when HTTPClient is set.
	MaxIdleConnsPerHost int
	// HTTPClient sends the requests. If nil, a client with a 5 second
	// connect timeout, Timeout as its overall timeout and TLS verification
	// on is used.
	HTTPClient *http.Client
	// UserAgent is sent with every request. If empty, "wxclose/<version>".
	UserAgent string
	// Now returns the current time. If nil, time.Now. Tests use it to check
	// the timestamp window.
	Now func() time.Time
	// Hooks lets the caller observe what the client learns on the way. The
	// zero value observes nothing.
	Hooks Hooks
}

// Hooks are optional callbacks; each nil field is skipped. They are called
// synchronously on the request path, so they must be cheap and must not
// block, and they never receive a secret.
type Hooks struct {
	// ServerClock is called for every response that carries WeChat Pay's
	// clock (the signed Wechatpay-Timestamp of a verified v3 response, else
	// the Date header), with the local instants the request was sent and
	// the response received. Callers estimate the clock offset from it.
	ServerClock func(sent, received, server time.Time)
	// CertificateRefreshFailed is called when a platform certificate
	// download failed, could not be decrypted or did not verify with an
	// already trusted certificate (not when the caller's context ended). err
	// is a *Error wrapping ErrCertificateDownload. The client keeps the
	// certificates it already trusts and tries again at most once a minute.
	CertificateRefreshFailed func(err error)
}
