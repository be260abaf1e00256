package sandbox

import (
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// UnknownOrderPolicy says what a close of an order the sandbox has never
// heard of does.
type UnknownOrderPolicy int

const (
	// UnknownNotFound answers 404 ORDER_NOT_EXIST (v2: ORDERNOTEXIST), as
	// WeChat Pay does. It is the zero value.
	UnknownNotFound UnknownOrderPolicy = iota
	// UnknownCreate makes the first close of an unknown order create it,
	// unpaid, with a zero CreatedAt (long ago), so that the close succeeds.
	// It is a convenience for development setups that do not register
	// orders through the admin endpoints.
	UnknownCreate
)

// String returns "notfound" or "create".
func (p UnknownOrderPolicy) String() string {
	switch p {
	case UnknownNotFound:
		return "notfound"
	case UnknownCreate:
		return "create"
	}
	return fmt.Sprintf("UnknownOrderPolicy(%d)", int(p))
}

// Rates are probabilities (0..1, summing to at most 1) of a random fault on
// each close call that has no scripted step. A fault is chosen with one
// random draw, so at most one applies to a call.
type Rates struct {
	// SystemError replies as SystemError() does.
	SystemError float64
	// RateLimited replies as RateLimited(time.Second) does.
	RateLimited float64
	// ServerError replies as ServerError(502) does.
	ServerError float64
	// Slow processes the close normally and replies after SlowDelay.
	Slow float64
	// Malformed replies as MalformedBody() does.
	Malformed float64
	// BadSignature processes the close normally and replies with a wrong
	// signature, as BadSignature() does.
	BadSignature float64
	// SlowDelay is the delay of Slow faults. If zero, 35 seconds (longer
	// than a typical 30 second client timeout).
	SlowDelay time.Duration
}

func (r Rates) validate() error {
	sum := 0.0
	for _, f := range []struct {
		name string
		v    float64
	}{
		{"SystemError", r.SystemError}, {"RateLimited", r.RateLimited}, {"ServerError", r.ServerError},
		{"Slow", r.Slow}, {"Malformed", r.Malformed}, {"BadSignature", r.BadSignature},
	} {
		if math.IsNaN(f.v) || f.v < 0 || f.v > 1 {
			return fmt.Errorf("sandbox: Rates.%s must be between 0 and 1, got %v", f.name, f.v)
		}
		sum += f.v
	}
	if sum > 1+1e-9 {
		return fmt.Errorf("sandbox: Rates must sum to at most 1, got %v", sum)
	}
	if r.SlowDelay < 0 {
		return errors.New("sandbox: Rates.SlowDelay must not be negative")
	}
	return nil
}

// Options configures a Server. The zero value is a usable sandbox with fresh
// keys, merchant DefaultMchID and app id DefaultAppID.
type Options struct {
	// MchID is the merchant (or institution, sp_mchid) id accepted. If
	// empty, Credentials.MchID when Credentials is set, else DefaultMchID.
	MchID string
	// AppID is the v2 appid accepted. If empty, Credentials.AppID when
	// Credentials is set, else DefaultAppID.
	AppID string
	// MinCloseAge is how long after an order's CreatedAt a close is
	// accepted; earlier closes are refused and counted (EarlyCalls). If
	// zero, 5 minutes, WeChat Pay's documented minimum.
	MinCloseAge time.Duration
	// Now is the sandbox clock, used for timestamps, the timestamp window
	// and MinCloseAge. If nil, time.Now.
	Now func() time.Time
	// UnknownOrders says what a close of an unknown order does. If zero,
	// UnknownNotFound.
	UnknownOrders UnknownOrderPolicy
	// SignWithPublicKeyID signs v3 responses with the key of PublicKeyPEM
	// and announces Wechatpay-Serial = PublicKeyID (WeChat Pay public-key
	// mode). If false, responses are signed with the current platform
	// certificate's key and announce its serial.
	SignWithPublicKeyID bool
	// Rates adds random faults to close calls that have no scripted step.
	// If zero, no random faults.
	Rates Rates
	// Seed seeds the random faults so that a run can be repeated. If zero,
	// a time-based seed.
	Seed int64
	// Credentials are the keys to use, for example from LoadCredentials. If
	// nil, fresh RSA-2048 keys are generated with GenerateCredentials.
	Credentials *Credentials
	// CacheResponseSignatures lets the sandbox reuse a v3 response's
	// timestamp, nonce and signature for identical response bodies within
	// one second, so that benchmarks measure the worker, not the sandbox's
	// RSA signing. Requests are still verified. If false, every response is
	// signed afresh.
	CacheResponseSignatures bool
	// UnsignedFinalAnswers sends the close answers that end a close (v3:
	// 204, ORDERCLOSED, ORDERPAID, ORDER_NOT_EXIST; v2: result SUCCESS,
	// ORDERCLOSED, ORDERPAID, ORDERNOTEXIST) without a signature (v3: no
	// Wechatpay-* headers; v2: no sign), as WeChat Pay might, while Query
	// Order answers stay signed. It tests that a client settles such answers
	// with a signed query instead of retrying forever. It can be changed at
	// run time with SetUnsignedFinalAnswers or POST /sandbox/settings. If
	// false, final answers are signed.
	UnsignedFinalAnswers bool
	// Merchants are more merchants to serve besides the primary one
	// (Credentials, or generated), each with its own keys, for example from
	// GenerateCredentials with another mchid: its requests are verified
	// with its own merchant certificate (v3) or API key (v2), so a close
	// signed with another merchant's key is refused with SIGN_ERROR, and
	// answers to it are signed with its own platform key or API key. Orders
	// belong to one merchant (Order.MchID). If empty, one merchant.
	Merchants []*Credentials
	// RateLimit limits each merchant's Close Order calls (each merchant
	// separately); SetRateLimit and POST /sandbox/rate-limit change it at
	// run time. If zero, no limit.
	RateLimit RateLimit
	// Logf, if set, receives one line per recorded call. Secrets are never
	// passed to it.
	Logf func(format string, args ...any)
}

// platformKey is one platform key and its certificate.
type platformKey struct {
	key     *rsa.PrivateKey
	cert    *x509.Certificate
	certPEM []byte
	serial  string
	foreign bool // supplied by ImpersonatePlatform
}

// Server is a sandbox instance. It is safe for concurrent use; create it
// with New.
type Server struct {
	opts    Options  // normalised: every zero value replaced
	primary *account // Options.Credentials
	// accounts holds every merchant by mchid, the primary one included;
	// it is not changed after New.
	accounts map[string]*account
	handler  http.Handler

	unsignedFinal atomic.Bool
	sigCache      sigCache

	mu       sync.Mutex
	byOutNo  map[string]*Order
	byTxID   map[string]*Order
	scripts  map[string][]Step
	qscripts map[string][]Step // Query Order steps
	calls    []Call
	early    int
	rng      *rand.Rand
}

// New returns a sandbox configured by opts. It fails if opts or
// opts.Credentials are inconsistent (for example MchID differing from
// Credentials.MchID).
func New(opts Options) (*Server, error) {
	if opts.MinCloseAge < 0 {
		return nil, errors.New("sandbox: Options.MinCloseAge must not be negative")
	}
	if opts.MinCloseAge == 0 {
		opts.MinCloseAge = 5 * time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.UnknownOrders != UnknownNotFound && opts.UnknownOrders != UnknownCreate {
		return nil, fmt.Errorf("sandbox: Options.UnknownOrders %d is not a known policy", int(opts.UnknownOrders))
	}
	if err := opts.Rates.validate(); err != nil {
		return nil, err
	}
	if opts.Rates.SlowDelay == 0 {
		opts.Rates.SlowDelay = 35 * time.Second
	}
	if opts.Seed == 0 {
		opts.Seed = time.Now().UnixNano()
	}
	creds := opts.Credentials
	if creds == nil {
		var err error
		if creds, err = GenerateCredentials(opts.MchID, opts.AppID); err != nil {
			return nil, err
		}
	}
	if opts.MchID == "" {
		opts.MchID = creds.MchID
	} else if opts.MchID != creds.MchID {
		return nil, fmt.Errorf("sandbox: Options.MchID %q differs from Credentials.MchID %q", opts.MchID, creds.MchID)
	}
	if opts.AppID == "" {
		opts.AppID = creds.AppID
	} else if opts.AppID != creds.AppID {
		return nil, fmt.Errorf("sandbox: Options.AppID %q differs from Credentials.AppID %q", opts.AppID, creds.AppID)
	}
	if err := opts.RateLimit.validate(); err != nil {
		return nil, err
	}
	primary, accounts, err := buildAccounts(creds, opts.Merchants, opts)
	if err != nil {
		return nil, err
	}
	opts.Credentials, opts.Merchants = nil, nil // the server keeps its own copies
	s := &Server{
		opts:     opts,
		primary:  primary,
		accounts: accounts,
		byOutNo:  map[string]*Order{},
		byTxID:   map[string]*Order{},
		scripts:  map[string][]Step{},
		qscripts: map[string][]Step{},
		rng:      rand.New(rand.NewPCG(uint64(opts.Seed), 0x5eed)),
	}
	s.unsignedFinal.Store(opts.UnsignedFinalAnswers)
	s.handler = s.routes()
	return s, nil
}

// SetUnsignedFinalAnswers turns Options.UnsignedFinalAnswers on or off for
// later calls.
func (s *Server) SetUnsignedFinalAnswers(on bool) {
	s.unsignedFinal.Store(on)
	s.logf("sandbox: unsigned final answers %v", on)
}

// UnsignedFinalAnswers reports whether final close answers are sent
// unsigned (see Options.UnsignedFinalAnswers).
func (s *Server) UnsignedFinalAnswers() bool { return s.unsignedFinal.Load() }

// Handler returns the HTTP handler serving the WeChat Pay endpoints and the
// admin endpoints. Serve it with httptest.NewServer or an http.Server.
func (s *Server) Handler() http.Handler { return s.handler }

// Credentials returns a copy of the primary merchant's credentials, with
// the current platform certificate after a RotatePlatformCert (see
// MerchantCredentials for the others).
func (s *Server) Credentials() Credentials {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.primary.creds.clone()
}

// RotatePlatformCert creates a new platform key and certificate and signs
// every later response with it (unless SignWithPublicKeyID). Older
// certificates stay listed by the certificates endpoint, as during a real
// WeChat Pay rotation. It returns the new certificate's serial.
func (s *Server) RotatePlatformCert() (serial string, err error) {
	keyPEM, certPEM, serial, err := newKeyAndCert(platformSubject(), time.Now())
	if err != nil {
		return "", err
	}
	key, err := parsePrivateKey(keyPEM, "platform key")
	if err != nil {
		return "", err
	}
	cert, err := parseCert(certPEM, "platform certificate")
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.primary
	// A genuine rotation ends an impersonation: WeChat Pay never lists the
	// impostor's certificate.
	a.platforms = slices.DeleteFunc(a.platforms, func(p *platformKey) bool { return p.foreign })
	a.impersonating = false
	a.platforms = append(a.platforms, &platformKey{key: key, cert: cert, certPEM: certPEM, serial: serial})
	a.creds.PlatformKeyPEM = keyPEM
	a.creds.PlatformCertPEM = certPEM
	a.creds.PlatformCertSerial = serial
	s.logf("sandbox: platform certificate rotated; responses are now signed by serial %s", serial)
	return serial, nil
}

// ImpersonatePlatform plays an attacker who knows the APIv3 key but not
// WeChat Pay's platform key: from now on the certificate list also carries
// certPEM (encrypted with the APIv3 key, so it decrypts like a genuine
// one), and every response, the certificate list included, is signed with
// keyPEM (PKCS#8) under the certificate's serial, whatever the request's
// Wechatpay-Serial. certPEM may be anything, for example self-signed,
// expired or not yet valid. Credentials are unchanged; RotatePlatformCert
// ends the impersonation. It returns the certificate's serial.
func (s *Server) ImpersonatePlatform(keyPEM, certPEM []byte) (serial string, err error) {
	key, err := parsePrivateKey(keyPEM, "impersonating key")
	if err != nil {
		return "", err
	}
	cert, err := parseCert(certPEM, "impersonating certificate")
	if err != nil {
		return "", err
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return "", errors.New("sandbox: ImpersonatePlatform: the certificate does not belong to the key")
	}
	serial = serialHex(cert.SerialNumber)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.primary.platforms = append(s.primary.platforms, &platformKey{key: key, cert: cert, certPEM: bytes.Clone(certPEM), serial: serial, foreign: true})
	s.primary.impersonating = true
	s.logf("sandbox: impersonating the platform with certificate %s", serial)
	return serial, nil
}

func (s *Server) logf(format string, args ...any) {
	if s.opts.Logf != nil {
		s.opts.Logf(format, args...)
	}
}

// sigCache remembers v3 response signatures for Options.CacheResponseSignatures.
type sigCache struct {
	mu sync.Mutex
	m  map[string]cachedSig
}

type cachedSig struct {
	at                   time.Time
	ts, nonce, signature string
}

// maxCachedSigs bounds the cache; when it is full it starts over.
const maxCachedSigs = 4096

// get returns the signature cached under key if it is less than a second
// old at now.
func (c *sigCache) get(key string, now time.Time) (cachedSig, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	if !ok || now.Before(e.at) || now.Sub(e.at) >= time.Second {
		return cachedSig{}, false
	}
	return e, true
}

func (c *sigCache) put(key string, e cachedSig) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxCachedSigs {
		c.m = make(map[string]cachedSig)
	}
	c.m[key] = e
}
