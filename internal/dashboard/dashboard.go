// Package dashboard serves asynq's web UI (asynqmon) at /monitoring/ on the
// worker's HTTP address, behind HTTP basic auth, or, without credentials,
// only to loopback clients.
//
// asynqmon has no authentication of its own and its UI can delete, run and
// archive close tasks, so this package refuses to start an unprotected
// dashboard on an address other machines can reach. It also shows task
// payloads and results through FormatPayload and FormatResult, which print
// the known fields of wxclose's tasks instead of raw JSON.
//
// Mount it with
//
//	d, err := dashboard.New(dashboard.Options{RedisConnOpt: redis, ListenAddr: cfg.HTTPAddr,
//		User: cfg.UIUser, Password: cfg.UIPassword, ReadOnly: cfg.UIReadOnly})
//	...
//	defer d.Close()
//	mux.Handle(d.Pattern(), d.Handler())
package dashboard

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"

	"github.com/hibiken/asynq"
	"github.com/hibiken/asynqmon"

	"github.com/wxclose/wxclose/internal/config"
)

// RootPath is the URL path the dashboard is served under.
const RootPath = "/monitoring"

// Realm is the basic-auth realm the dashboard announces.
const Realm = "wxclose"

// Options configures a Dashboard.
type Options struct {
	// RedisConnOpt is the Redis holding the queues. Required.
	RedisConnOpt asynq.RedisConnOpt
	// ListenAddr is the host:port the HTTP server listens on
	// (WXCLOSE_HTTP_ADDR). It decides whether a dashboard without
	// credentials is allowed (only on a loopback address) and is shown by
	// Describe. If empty, config.DefaultHTTPAddr (127.0.0.1:8080).
	ListenAddr string
	// User and Password turn on HTTP basic auth for every page and API call
	// of the dashboard (WXCLOSE_UI_USER, WXCLOSE_UI_PASSWORD). Set both or
	// neither. If both are empty, there is no authentication and New
	// accepts only a loopback ListenAddr; requests from non-loopback clients
	// are then refused too.
	User, Password string
	// ReadOnly makes the dashboard view-only: every API call other than GET
	// is refused (WXCLOSE_UI_READONLY). If false, operators can delete, run,
	// archive and pause from the UI.
	ReadOnly bool
}

// Dashboard is the protected asynq web UI. It is safe for concurrent use.
type Dashboard struct {
	mon        *asynqmon.HTTPHandler
	handler    http.Handler
	listenAddr string
	auth       bool
	readOnly   bool
	closeOnce  sync.Once
	closeErr   error
}

// New checks opts and builds the dashboard. It returns an error, and serves
// nothing, when the dashboard would be reachable from other machines
// without credentials.
func New(opts Options) (*Dashboard, error) {
	if opts.RedisConnOpt == nil {
		return nil, errors.New("dashboard: Options.RedisConnOpt is required (REDIS_URL)")
	}
	if opts.ListenAddr == "" {
		opts.ListenAddr = config.DefaultHTTPAddr
	}
	host, _, err := net.SplitHostPort(opts.ListenAddr)
	if err != nil {
		return nil, fmt.Errorf("dashboard: WXCLOSE_HTTP_ADDR %q must be host:port, e.g. 127.0.0.1:8080: %v", opts.ListenAddr, err)
	}
	auth := opts.User != "" || opts.Password != ""
	switch {
	case auth && (opts.User == "" || opts.Password == ""):
		return nil, errors.New("dashboard: set both WXCLOSE_UI_USER and WXCLOSE_UI_PASSWORD, or neither")
	case strings.Contains(opts.User, ":"):
		// RFC 7617: the user-id cannot contain a colon, so no browser could log in.
		return nil, errors.New("dashboard: WXCLOSE_UI_USER must not contain ':'")
	case !auth && !isLoopbackHost(host):
		return nil, fmt.Errorf("dashboard: the web UI has no authentication of its own and WXCLOSE_HTTP_ADDR %q is reachable from other machines: "+
			"set WXCLOSE_UI_USER and WXCLOSE_UI_PASSWORD, or bind WXCLOSE_HTTP_ADDR to loopback (e.g. 127.0.0.1:8080), or turn the UI off with WXCLOSE_UI=false",
			opts.ListenAddr)
	}

	mon, err := newAsynqmon(asynqmon.Options{
		RootPath:         RootPath,
		RedisConnOpt:     opts.RedisConnOpt,
		PayloadFormatter: asynqmon.PayloadFormatterFunc(FormatPayload),
		ResultFormatter:  asynqmon.ResultFormatterFunc(FormatResult),
		ReadOnly:         opts.ReadOnly,
	})
	if err != nil {
		return nil, err
	}
	d := &Dashboard{mon: mon, listenAddr: opts.ListenAddr, auth: auth, readOnly: opts.ReadOnly}

	// asynqmon's mutating API takes POST and DELETE without any token, and a
	// browser sends cached basic-auth credentials with cross-site requests:
	// without this, any web page an operator visits could pause the queue or
	// delete close tasks.
	h := http.NewCrossOriginProtection().Handler(mon)
	h = frameDenied(h)
	if auth {
		h = basicAuth(h, opts.User, opts.Password)
	} else {
		h = loopbackOnly(h)
	}
	d.handler = h
	return d, nil
}

// newAsynqmon turns asynqmon.New's panics (unsupported connection options)
// into an error.
func newAsynqmon(opts asynqmon.Options) (h *asynqmon.HTTPHandler, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("dashboard: %v", r)
		}
	}()
	return asynqmon.New(opts), nil
}

// Handler returns the handler to mount at Pattern. It serves the UI and its
// JSON API.
func (d *Dashboard) Handler() http.Handler { return d.handler }

// Pattern is the http.ServeMux pattern to mount Handler at: "/monitoring/".
func (d *Dashboard) Pattern() string { return RootPath + "/" }

// Close releases the dashboard's Redis connections. Calling it more than
// once is harmless.
func (d *Dashboard) Close() error {
	d.closeOnce.Do(func() { d.closeErr = d.mon.Close() })
	return d.closeErr
}

// Describe returns one line for the startup log, such as
// "dashboard at http://127.0.0.1:8080/monitoring/ (basic auth)".
func (d *Dashboard) Describe() string {
	host, port, _ := net.SplitHostPort(d.listenAddr)
	if host == "" {
		host = "*" // every interface
	}
	var mode string
	if d.auth {
		mode = "basic auth"
	} else {
		mode = "no auth: loopback only"
	}
	if d.readOnly {
		mode += ", read-only"
	}
	return fmt.Sprintf("dashboard at http://%s%s (%s)", net.JoinHostPort(host, port), d.Pattern(), mode)
}

// isLoopbackHost reports whether host (from host:port, without brackets) can
// only be reached from this machine, by the rule config.Load also applies.
// Other names are not resolved: what they resolve to can change after the
// check.
func isLoopbackHost(host string) bool { return config.IsLoopbackHost(host) }

// basicAuth requires user and password. Both are compared in constant time
// over SHA-256 digests, so neither their content nor their length leaks
// through timing, and only the digests are kept in memory.
func basicAuth(next http.Handler, user, password string) http.Handler {
	wantUser := sha256.Sum256([]byte(user))
	wantPass := sha256.Sum256([]byte(password))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		gotUser := sha256.Sum256([]byte(u))
		gotPass := sha256.Sum256([]byte(p))
		// Evaluate both comparisons whatever the first one says.
		match := subtle.ConstantTimeCompare(gotUser[:], wantUser[:]) & subtle.ConstantTimeCompare(gotPass[:], wantPass[:])
		if !ok || match != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="`+Realm+`"`)
			http.Error(w, "401 unauthorized: the wxclose dashboard needs the user and password set in WXCLOSE_UI_USER and WXCLOSE_UI_PASSWORD", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// loopbackOnly guards a dashboard without credentials: besides the listen
// address check in New, it refuses clients that are not on this machine
// (in case the server is reachable in a way the address check missed) and
// Host headers that are not loopback names (DNS rebinding, where a web page
// renames itself to 127.0.0.1 to read the dashboard). A reverse proxy on the
// same machine defeats the client check: put credentials on a proxied
// dashboard.
func loopbackOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !isLoopbackRemote(r.RemoteAddr) {
			http.Error(w, "403 forbidden: the wxclose dashboard has no credentials (WXCLOSE_UI_USER, WXCLOSE_UI_PASSWORD) and only answers clients on this machine", http.StatusForbidden)
			return
		}
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if !isLoopbackHost(strings.Trim(host, "[]")) {
			http.Error(w, "403 forbidden: the wxclose dashboard has no credentials and only answers requests for localhost or a loopback address", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func isLoopbackRemote(remoteAddr string) bool {
	if ap, err := netip.ParseAddrPort(remoteAddr); err == nil {
		return ap.Addr().Unmap().IsLoopback()
	}
	ip, err := netip.ParseAddr(remoteAddr)
	return err == nil && ip.Unmap().IsLoopback()
}

// frameDenied stops other sites from framing the dashboard to trick an
// operator into clicking its delete and run buttons.
func frameDenied(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Frame-Options", "DENY")
		w.Header().Set("Content-Security-Policy", "frame-ancestors 'none'")
		next.ServeHTTP(w, r)
	})
}
