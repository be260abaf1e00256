// Package merchants is the worker's merchant registry: which merchants it
// closes orders for, each with its own WeChat Pay client (its own keys) and
// its rate limit.
//
// The merchants come from a registry file (WXCLOSE_MERCHANTS_FILE, YAML,
// any number of merchants) or, for the zero-configuration single-merchant
// setup, from the WECHATPAY_* variables (config.Worker.Merchant). Both go
// through config.Merchant's rules, so a value is refused with the same words
// wherever it was set. Secrets are only ever read from files.
//
// Lookups are lock-free: the registry is an immutable snapshot behind an
// atomic pointer. Reload builds a whole new snapshot (every file read again,
// every key checked, platform certificates downloaded for new keys) and
// swaps it in only when all of it is good; a reload that fails keeps the
// snapshot in use and says why. A close holds the Merchant it looked up for
// its whole run, so a reload never changes the client of a close in flight.
// Merchants whose configuration and key files did not change keep their
// client (and the platform certificates it downloaded).
package merchants

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/wxclose/wxclose/internal/config"
	"github.com/wxclose/wxclose/wechat"
)

// Merchant is one merchant the worker closes orders for. It is immutable.
type Merchant struct {
	MchID string
	// Name is the operator's short name, the only merchant label metrics
	// carry; empty for none.
	Name string
	API  wechat.APIVersion
	// RateLimit is the merchant's Close Order rate in closes per second,
	// shared by every worker; 0 means no limit.
	RateLimit float64
	// Closer signs with this merchant's keys only.
	Closer wechat.Closer

	fingerprint [sha256.Size]byte // configuration and key files
}

// Lookup errors.
var (
	// ErrUnknown: no merchant has this mchid.
	ErrUnknown = errors.New("merchant is not in the registry")
	// ErrAmbiguous: no mchid was given and there are several merchants.
	ErrAmbiguous = errors.New("no mchid given and the registry has several merchants")
)

// DefaultPollInterval is how often Watch looks for changed files.
const DefaultPollInterval = 10 * time.Second

// prefetchTimeout bounds the platform certificate download of one merchant
// at load.
const prefetchTimeout = 30 * time.Second

// loadParallelism bounds the merchants built at once (each may download
// platform certificates).
const loadParallelism = 8

// Options configures a Registry.
type Options struct {
	// File is the registry file (WXCLOSE_MERCHANTS_FILE). If empty, Single
	// is the only merchant.
	File string
	// Single is the merchant configured by WECHATPAY_*; used when File is
	// empty.
	Single *config.Merchant
	// DefaultRateLimit is the rate of Single and of entries without
	// rate_limit (WXCLOSE_RATE_LIMIT); 0 means no limit.
	DefaultRateLimit float64
	// Hooks returns the hooks of a merchant's client. If nil, none.
	Hooks func(mchid, name string) wechat.Hooks
	// Logger receives reloads and failed certificate downloads. If zero,
	// logging is off.
	Logger zerolog.Logger
	// PollInterval is how often Watch compares the files' contents. If
	// zero, DefaultPollInterval.
	PollInterval time.Duration
}

// Registry is the merchants the worker serves. It is safe for concurrent
// use.
type Registry struct {
	opts   Options
	cur    atomic.Pointer[snapshot]
	reload sync.Mutex // one reload at a time
	// seen is the files' state when they were last loaded or tried;
	// guarded by reload.
	seen string
}

type snapshot struct {
	list  []*Merchant // in file order
	byID  map[string]*Merchant
	files []string // the registry file and every file its entries name
}

// New loads the merchants: reads the registry file (or takes Single), every
// key file, checks every key, builds each client and downloads platform
// certificates where an APIv3 key is given. Configuration errors wrap
// config.ErrInvalid and name the variable, or the registry entry (index and
// mchid) and field; they never contain a secret.
func New(ctx context.Context, opts Options) (*Registry, error) {
	if opts.File == "" && opts.Single == nil {
		return nil, errors.New("merchants: Options.File or Options.Single is required")
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = DefaultPollInterval
	}
	r := &Registry{opts: opts}
	snap, err := r.load(ctx, nil)
	if err != nil {
		return nil, err
	}
	r.cur.Store(snap)
	r.seen = fileState(snap.files)
	return r, nil
}

// NewStatic returns a registry of the given merchants, which it never
// reloads (for callers that build their own clients, such as tests).
func NewStatic(ms ...Merchant) (*Registry, error) {
	snap := &snapshot{byID: map[string]*Merchant{}}
	for i := range ms {
		m := ms[i]
		if _, dup := snap.byID[m.MchID]; dup {
			return nil, fmt.Errorf("merchants: merchant %s given twice", m.MchID)
		}
		snap.list = append(snap.list, &m)
		snap.byID[m.MchID] = &m
	}
	if len(snap.list) == 0 {
		return nil, errors.New("merchants: NewStatic needs at least one merchant")
	}
	r := &Registry{}
	r.cur.Store(snap)
	return r, nil
}

// Lookup returns the merchant mchid, or, for "", the only merchant. Its
// errors are ErrUnknown and ErrAmbiguous (unwrapped, so the lookup never
// allocates). It takes no lock.
func (r *Registry) Lookup(mchid string) (*Merchant, error) {
	s := r.cur.Load()
	if mchid == "" {
		if len(s.list) == 1 {
			return s.list[0], nil
		}
		return nil, ErrAmbiguous
	}
	if m, ok := s.byID[mchid]; ok {
		return m, nil
	}
	return nil, ErrUnknown
}

// All returns every merchant, in the registry's order.
func (r *Registry) All() []*Merchant {
	return append([]*Merchant(nil), r.cur.Load().list...)
}

// Reload loads the merchants again and swaps them in when every one of
// them is good; otherwise the merchants in use stay, and the error (also
// logged) says why. A registry from NewStatic never changes.
func (r *Registry) Reload(ctx context.Context) error {
	if r.opts.File == "" && r.opts.Single == nil {
		return nil
	}
	r.reload.Lock()
	defer r.reload.Unlock()
	old := r.cur.Load()
	r.seen = fileState(old.files) // what this reload reads
	snap, err := r.load(ctx, old)
	if err != nil {
		r.opts.Logger.Error().Str("component", "merchants").Err(err).Int("merchants_in_use", len(old.list)).
			Msg("merchant registry not reloaded; the merchants and keys in use stay in use")
		return err
	}
	changed := 0
	for _, m := range snap.list {
		if o, ok := old.byID[m.MchID]; !ok || o.Closer != m.Closer {
			changed++
		}
	}
	r.cur.Store(snap)
	r.seen = fileState(snap.files)
	r.opts.Logger.Info().Str("component", "merchants").Int("merchants", len(snap.list)).Int("new_or_rekeyed", changed).
		Int("removed", removed(old, snap)).Msg("merchant registry reloaded")
	return nil
}

func removed(old, cur *snapshot) int {
	n := 0
	for id := range old.byID {
		if _, ok := cur.byID[id]; !ok {
			n++
		}
	}
	return n
}

// Watch reloads the registry whenever the registry file or a key file it
// names changes (their contents, compared every PollInterval),
// until ctx ends. A change that does not load is logged once and tried
// again at the next change (or SIGHUP).
func (r *Registry) Watch(ctx context.Context) {
	if r.opts.File == "" && r.opts.Single == nil {
		return
	}
	t := time.NewTicker(r.opts.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.reload.Lock()
		changed := fileState(r.cur.Load().files) != r.seen
		r.reload.Unlock()
		if changed {
			_ = r.Reload(ctx)
		}
	}
}

// fileState fingerprints files by their contents: registry and key files
// are small, and a content hash sees a change that size and modification
// time miss (a same-size rewrite within the file system's clock tick).
func fileState(files []string) string {
	h := sha256.New()
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			fmt.Fprintf(h, "%s\x00unreadable: %v\n", f, err)
			continue
		}
		fmt.Fprintf(h, "%s\x00%d\n", f, len(b))
		h.Write(b)
	}
	return string(h.Sum(nil))
}

// load builds a snapshot; prev's clients are reused for merchants whose
// configuration and key files are unchanged.
func (r *Registry) load(ctx context.Context, prev *snapshot) (*snapshot, error) {
	if r.opts.File == "" {
		m, files, err := r.build(ctx, *r.opts.Single, config.EnvNames, "", r.opts.DefaultRateLimit, prev, nil)
		if err != nil {
			return nil, err
		}
		return &snapshot{list: []*Merchant{m}, byID: map[string]*Merchant{m.MchID: m}, files: files}, nil
	}
	entries, err := ReadFile(r.opts.File, r.opts.DefaultRateLimit)
	if err != nil {
		return nil, err
	}
	out := make([]*Merchant, len(entries))
	files := make([][]string, len(entries))
	errs := make([]error, len(entries))
	sem := make(chan struct{}, loadParallelism)
	var wg sync.WaitGroup
	for i, e := range entries {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			name := func(field string) string { return entryName(r.opts.File, e, field) }
			apiKey, apiv3Key, err := secrets(e, name)
			if err != nil {
				errs[i] = err
				return
			}
			out[i], files[i], errs[i] = r.build(ctx, e.merchant(apiKey, apiv3Key), names, e.Name, e.RateLimit, prev, name)
			for _, f := range []string{e.APIKeyFile, e.APIv3KeyFile} {
				if f != "" {
					files[i] = append(files[i], f)
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	snap := &snapshot{list: out, byID: map[string]*Merchant{}, files: []string{r.opts.File}}
	for i, m := range out {
		snap.byID[m.MchID] = m
		snap.files = append(snap.files, files[i]...)
	}
	return snap, nil
}

// secrets reads an entry's key files and checks the keys' lengths.
func secrets(e Entry, name func(string) string) (apiKey, apiv3Key string, err error) {
	read := func(field, path string) (string, error) {
		if path == "" {
			return "", nil
		}
		k, err := readSecret(path)
		if err != nil {
			return "", &config.Error{Variable: name(field), Reason: "cannot be used: " + err.Error()}
		}
		if len(k) != 32 {
			return "", &config.Error{Variable: name(field), Reason: fmt.Sprintf("must hold the 32-character key (it holds %d characters after trimming whitespace)", len(k))}
		}
		return k, nil
	}
	if apiKey, err = read("api_key_file", e.APIKeyFile); err != nil {
		return "", "", err
	}
	if apiv3Key, err = read("apiv3_key_file", e.APIv3KeyFile); err != nil {
		return "", "", err
	}
	return apiKey, apiv3Key, nil
}

// build makes one merchant. names are the operator's words for cm's
// fields; prefix, when not nil, turns them into the registry entry's full
// name for errors.
func (r *Registry) build(ctx context.Context, cm config.Merchant, names config.Names, name string, rate float64,
	prev *snapshot, prefix func(string) string) (*Merchant, []string, error) {
	named := func(err error) error {
		var ce *config.Error
		if prefix != nil && errors.As(err, &ce) {
			return &config.Error{Variable: prefix(ce.Variable), Reason: ce.Reason}
		}
		return err
	}
	files := append([]string{}, cm.PlatformCertFile...)
	for _, f := range []string{cm.PrivateKeyFile, cm.PublicKeyFile} {
		if f != "" {
			files = append(files, f)
		}
	}
	sort.Strings(files)
	h := sha256.New()
	// The configuration, secrets included, only ever goes into the hash.
	fmt.Fprintf(h, "%#v\n", cm)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			b = []byte("unreadable: " + err.Error()) // loading reports it
		}
		fmt.Fprintf(h, "%s %d\n", f, len(b))
		h.Write(b)
	}
	m := &Merchant{MchID: cm.MchID, Name: name, API: cm.API, RateLimit: rate}
	copy(m.fingerprint[:], h.Sum(nil))
	if prev != nil {
		if o, ok := prev.byID[cm.MchID]; ok && o.fingerprint == m.fingerprint {
			m.Closer = o.Closer // unchanged keys: keep the client and what it downloaded
			return m, files, nil
		}
	}
	var hooks wechat.Hooks
	if r.opts.Hooks != nil {
		hooks = r.opts.Hooks(cm.MchID, name)
	}
	c, err := cm.NewCloser(names, hooks)
	if err != nil {
		return nil, nil, named(err)
	}
	if err := prefetch(ctx, c, names, r.opts.Logger.With().Str("mchid", cm.MchID).Logger()); err != nil {
		return nil, nil, named(err)
	}
	m.Closer = c
	return m, files, nil
}

// prefetch downloads platform certificates when an APIv3 key is
// configured. Certificates that do not decrypt mean a wrong APIv3 key, and
// a permanent refusal wrong merchant credentials: both are configuration
// errors. Any other failure (network, a download not signed by a trusted
// key) is not: the client keeps what it trusts and tries again later.
func prefetch(ctx context.Context, c wechat.Closer, names config.Names, log zerolog.Logger) error {
	v3, ok := c.(*wechat.V3Client)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, prefetchTimeout)
	defer cancel()
	err := v3.RefreshCertificates(ctx)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, wechat.ErrCertificateDecrypt):
		return &config.Error{Variable: names["APIv3Key"],
			Reason: "does not decrypt the platform certificates WeChat Pay sent: check the key (merchant platform, API security)"}
	case wechat.ClassOf(err) == wechat.ClassPermanent:
		return &config.Error{Variable: names["MchID"] + "/" + names["CertSerial"] + "/" + names["PrivateKey"],
			Reason: fmt.Sprintf("were refused by WeChat Pay when downloading platform certificates: %v", err)}
	default:
		log.Warn().Err(err).Msg("could not download WeChat Pay platform certificates yet; will retry on first use")
		return nil
	}
}
