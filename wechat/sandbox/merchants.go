package sandbox

import (
	"crypto/rsa"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// account is one merchant the sandbox serves, with its own keys: requests
// naming it are verified with its merchant certificate (v3) or API key
// (v2), and answers to it are signed with its platform key (v3) or API key
// (v2), as WeChat Pay keeps every merchant's credentials apart. The primary
// account comes from Options.Credentials, the others from
// Options.Merchants.
type account struct {
	mchid, appid   string
	merchantPub    *rsa.PublicKey
	merchantSerial string
	pubKey         *rsa.PrivateKey // signs in public-key mode
	pubKeyID       string
	apiKey         string // v2
	apiV3Key       string
	limit          callLimiter // Close Order calls

	// Guarded by Server.mu.
	creds     Credentials    // current; platform fields change on rotation
	platforms []*platformKey // oldest first; the last one signs
	// impersonating: ImpersonatePlatform replaced the platform key, and
	// every response, the certificate list included, is signed with it.
	impersonating bool
}

// newAccount checks creds and builds the account they describe.
func newAccount(creds *Credentials, signWithPublicKeyID bool) (*account, error) {
	p, err := creds.parse()
	if err != nil {
		return nil, err
	}
	if signWithPublicKeyID && p.publicPrivate == nil {
		return nil, fmt.Errorf("sandbox: merchant %s: SignWithPublicKeyID needs the private half of PublicKeyPEM, but it is not PlatformKeyPEM (credentials saved after a rotation?); generate new credentials", creds.MchID)
	}
	return &account{
		mchid:          creds.MchID,
		appid:          creds.AppID,
		merchantPub:    p.merchantCert.PublicKey.(*rsa.PublicKey),
		merchantSerial: creds.MerchantCertSerial,
		pubKey:         p.publicPrivate,
		pubKeyID:       creds.PublicKeyID,
		apiKey:         creds.APIKey,
		apiV3Key:       creds.APIv3Key,
		creds:          creds.clone(),
		platforms: []*platformKey{{
			key: p.platformKey, cert: p.platformCert,
			certPEM: creds.PlatformCertPEM, serial: creds.PlatformCertSerial,
		}},
	}, nil
}

// accountFor returns the merchant mchid, or nil. The map is not changed
// after New, so no lock is needed.
func (s *Server) accountFor(mchid string) *account { return s.accounts[mchid] }

// accountBySerial returns the merchant whose API certificate has serial,
// or nil.
func (s *Server) accountBySerial(serial string) *account {
	for _, a := range s.accounts {
		if a.merchantSerial == serial {
			return a
		}
	}
	return nil
}

// orPrimary returns a, or the primary merchant when a is nil (a request
// that named no merchant of this sandbox).
func (s *Server) orPrimary(a *account) *account {
	if a == nil {
		return s.primary
	}
	return a
}

// MchIDs returns the merchants the sandbox serves, the primary one first.
func (s *Server) MchIDs() []string {
	ids := make([]string, 0, len(s.accounts))
	for id := range s.accounts {
		if id != s.primary.mchid {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return append([]string{s.primary.mchid}, ids...)
}

// MerchantCredentials returns a copy of the credentials of merchant mchid
// (the primary one or one of Options.Merchants), and whether the sandbox
// serves it.
func (s *Server) MerchantCredentials(mchid string) (Credentials, bool) {
	a := s.accountFor(mchid)
	if a == nil {
		return Credentials{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return a.creds.clone(), true
}

// signingKey returns the key that signs a's responses now and the serial
// to announce in Wechatpay-Serial.
func (s *Server) signingKey(a *account) (*rsa.PrivateKey, string) {
	a = s.orPrimary(a)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.opts.SignWithPublicKeyID && !a.impersonating {
		return a.pubKey, a.pubKeyID
	}
	p := a.platforms[len(a.platforms)-1]
	return p.key, p.serial
}

// listSigningKey returns the key that signs a's certificate list: the one
// the request's Wechatpay-Serial names, when the sandbox holds it, else the
// current one. A client thereby learns a rotated certificate from a list
// signed by a key it already trusts, as WeChat Pay's 24-hour overlap (a new
// certificate is listed a day before it signs anything) allows. An
// impersonator signs with its own key whatever is asked.
func (s *Server) listSigningKey(a *account, announced string) (*rsa.PrivateKey, string) {
	a = s.orPrimary(a)
	s.mu.Lock()
	imp := a.impersonating
	var named *platformKey
	for _, p := range a.platforms {
		if announced != "" && strings.EqualFold(strings.TrimLeft(p.serial, "0"), strings.TrimLeft(announced, "0")) {
			named = p
		}
	}
	s.mu.Unlock()
	switch {
	case imp:
	case named != nil:
		return named.key, named.serial
	case announced != "" && announced == a.pubKeyID && a.pubKey != nil:
		return a.pubKey, a.pubKeyID
	}
	return s.signingKey(a)
}

// RateLimit is a merchant's Close Order frequency limit, as WeChat Pay
// enforces one per merchant: PerSecond calls per second on average, of
// which up to Burst may arrive together (a token bucket of Burst calls
// refilled at PerSecond). A close above it is answered 429 RATE_LIMITED
// (v2: FREQUENCY_LIMITED), signed, without touching the order, and
// recorded with Outcome "rate_limited". The zero value is no limit.
//
// WeChat Pay documents its limits as calls per second (QPS) without saying
// how it counts; a bucket of one second's calls behaves like a per-second
// counter (a second's calls may come together, a sustained excess is
// refused within a second) without its edge effects, and tolerates the
// jitter of a loaded machine. A smaller Burst is stricter.
type RateLimit struct {
	// PerSecond is the sustained rate. If zero, no limit.
	PerSecond float64 `json:"per_second"`
	// Burst is how many calls may arrive at once. If zero, PerSecond
	// rounded up (one second's calls), at least 1.
	Burst int `json:"burst,omitempty"`
}

func (rl RateLimit) validate() error {
	if math.IsNaN(rl.PerSecond) || math.IsInf(rl.PerSecond, 0) || rl.PerSecond < 0 || rl.Burst < 0 {
		return fmt.Errorf("sandbox: RateLimit %+v: PerSecond and Burst must be finite and not negative", rl)
	}
	return nil
}

func (rl RateLimit) burst() int {
	if rl.Burst > 0 {
		return rl.Burst
	}
	return max(1, int(math.Ceil(rl.PerSecond)))
}

// callLimiter enforces a RateLimit with GCRA (the theoretical arrival time
// of the next call): the sandbox's own code, independent of the worker's
// limiter.
type callLimiter struct {
	mu  sync.Mutex
	rl  RateLimit
	tat time.Time
}

func (c *callLimiter) set(rl RateLimit) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rl, c.tat = rl, time.Time{}
}

func (c *callLimiter) get() RateLimit {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rl
}

// allow reports whether a call arriving at now is within the limit, and
// counts it if so.
func (c *callLimiter) allow(now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rl.PerSecond <= 0 {
		return true
	}
	interval := time.Duration(float64(time.Second) / c.rl.PerSecond)
	if c.tat.Before(now) {
		c.tat = now
	}
	if c.tat.Sub(now) > time.Duration(c.rl.burst()-1)*interval {
		return false
	}
	c.tat = c.tat.Add(interval)
	return true
}

// SetRateLimit sets the Close Order limit of merchant mchid, or of every
// merchant when mchid is empty, starting afresh (a full bucket). The zero
// RateLimit removes it.
func (s *Server) SetRateLimit(mchid string, rl RateLimit) error {
	if err := rl.validate(); err != nil {
		return err
	}
	if mchid == "" {
		for _, a := range s.accounts {
			a.limit.set(rl)
		}
		s.logf("sandbox: rate limit of every merchant set to %v/s (burst %d)", rl.PerSecond, rl.burst())
		return nil
	}
	a := s.accountFor(mchid)
	if a == nil {
		return fmt.Errorf("sandbox: no merchant %q", mchid)
	}
	a.limit.set(rl)
	s.logf("sandbox: rate limit of merchant %s set to %v/s (burst %d)", mchid, rl.PerSecond, rl.burst())
	return nil
}

// RateLimitOf returns merchant mchid's Close Order limit (zero: none).
func (s *Server) RateLimitOf(mchid string) RateLimit {
	if a := s.accountFor(mchid); a != nil {
		return a.limit.get()
	}
	return RateLimit{}
}

// overLimit reports whether a close by a, arriving now, exceeds a's limit.
func (s *Server) overLimit(a *account) bool {
	return a != nil && !a.limit.allow(s.opts.Now())
}

// rateLimitJSON is the admin representation of a merchant's limit.
type rateLimitJSON struct {
	MchID     string  `json:"mchid,omitempty"`
	PerSecond float64 `json:"per_second"`
	Burst     int     `json:"burst"`
}

// adminGetRateLimits: GET /sandbox/rate-limit, every merchant's limit.
func (s *Server) adminGetRateLimits(w http.ResponseWriter, _ *http.Request) {
	out := []rateLimitJSON{}
	for _, id := range s.MchIDs() {
		rl := s.RateLimitOf(id)
		j := rateLimitJSON{MchID: id, PerSecond: rl.PerSecond}
		if rl.PerSecond > 0 {
			j.Burst = rl.burst()
		}
		out = append(out, j)
	}
	writeJSON(w, http.StatusOK, out)
}

// adminSetRateLimit: POST /sandbox/rate-limit {"mchid":"...","per_second":N,
// "burst":B}; without mchid, every merchant; per_second 0 removes the limit.
func (s *Server) adminSetRateLimit(w http.ResponseWriter, r *http.Request) {
	var j rateLimitJSON
	if err := decodeStrict(r, &j); err != nil {
		adminError(w, http.StatusBadRequest, "%v (want {\"mchid\": \"...\" (optional), \"per_second\": N, \"burst\": B (optional)})", err)
		return
	}
	if err := s.SetRateLimit(j.MchID, RateLimit{PerSecond: j.PerSecond, Burst: j.Burst}); err != nil {
		adminError(w, http.StatusBadRequest, "%v", err)
		return
	}
	s.adminGetRateLimits(w, r)
}

// buildAccounts makes the primary account and those of extra, refusing
// duplicates.
func buildAccounts(primary *Credentials, extra []*Credentials, opts Options) (*account, map[string]*account, error) {
	p, err := newAccount(primary, opts.SignWithPublicKeyID)
	if err != nil {
		return nil, nil, err
	}
	all := map[string]*account{p.mchid: p}
	serials := map[string]string{p.merchantSerial: p.mchid}
	for i, c := range extra {
		if c == nil {
			return nil, nil, fmt.Errorf("sandbox: Options.Merchants[%d] is nil", i)
		}
		a, err := newAccount(c, opts.SignWithPublicKeyID)
		if err != nil {
			return nil, nil, fmt.Errorf("%w (Options.Merchants[%d])", err, i)
		}
		if _, dup := all[a.mchid]; dup {
			return nil, nil, fmt.Errorf("sandbox: Options.Merchants[%d]: merchant %s is already served", i, a.mchid)
		}
		if other, dup := serials[a.merchantSerial]; dup {
			return nil, nil, fmt.Errorf("sandbox: Options.Merchants[%d]: merchant certificate serial %s is already merchant %s's", i, a.merchantSerial, other)
		}
		all[a.mchid], serials[a.merchantSerial] = a, a.mchid
	}
	for _, a := range all {
		a.limit.set(opts.RateLimit)
	}
	return p, all, nil
}

var errNoMerchant = errors.New("not a merchant of this sandbox")
