// Package httpapi serves the close API: checkout services in any language
// schedule, inspect and cancel order closes over HTTP with the guarantees
// of the Go producer (package tasks), which does all the validation and
// scheduling.
//
//	POST   /v1/closes            schedule one close (201, or 200 for a duplicate)
//	POST   /v1/closes/batch      up to 1,000, JSON array or NDJSON, per-item results
//	GET    /v1/closes/{task_id}  state, due time, retries, last error, result
//	DELETE /v1/closes/{task_id}  cancel (204; 404 none; 409 in progress or completed)
//	GET    /v1/openapi.json      the OpenAPI 3.1 document (docs/openapi.yaml)
//
// The contract is docs/openapi.yaml; the tests validate every request and
// answer against it. Errors are RFC 9457 problems with a machine-readable
// code. Every Redis call is bounded (Options.RedisTimeout), so an
// unreachable Redis gives 503 with Retry-After, never a hung request.
//
// Mount it on the worker's HTTP server with
//
//	api, err := httpapi.New(httpapi.Options{Redis: cfg.Redis, ListenAddr: cfg.HTTPAddr,
//		Producer: tasks.ProducerConfig{MchID: cfg.MchID, CloseMargin: cfg.CloseMargin},
//		Tokens: tokens, Registerer: reg, Logger: log})
//	...
//	defer api.Close()
//	mux.Handle(api.Pattern(), api.Handler())
//
// and call tokens.Reload() on SIGHUP.
package httpapi

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/wxclose/wxclose/docs"
	"github.com/wxclose/wxclose/tasks"
)

// Defaults used for zero Options fields.
const (
	DefaultRedisTimeout = time.Second
	DefaultRetryAfter   = 2 * time.Second
)

// Body limits: larger bodies get 413.
const (
	MaxBodyBytes      = 64 << 10
	MaxBatchBodyBytes = 1 << 20
	// MaxBatchItems is the most orders one batch may hold.
	MaxBatchItems = 1000
)

// bodyReadTimeout bounds the reading of a request body, so that a client
// that sends slowly cannot hold a request open.
const bodyReadTimeout = 30 * time.Second

// Options configures the API.
type Options struct {
	// Redis holds the queues (REDIS_URL). Required. The API opens its own
	// connections with every timeout capped at RedisTimeout.
	Redis asynq.RedisConnOpt
	// Producer configures scheduling exactly as for the Go producer: the
	// default merchant (MchID, usually WECHATPAY_MCHID), the close margin,
	// the retry budget and the retention. The zero value is usable.
	Producer tasks.ProducerConfig
	// Tokens are the accepted bearer tokens (WXCLOSE_API_TOKENS_FILE; see
	// LoadTokens). If nil, no token is asked for and the API is served only
	// to clients on this machine: ListenAddr must then be a loopback
	// address, and other clients get 403.
	Tokens *Tokens
	// ListenAddr is the host:port the HTTP server listens on
	// (WXCLOSE_HTTP_ADDR). Without Tokens it must be a loopback address
	// (127.0.0.1:8080, [::1]:8080, localhost:8080); New fails if it is
	// empty or not loopback then. It is also shown by Describe.
	ListenAddr string
	// RedisTimeout bounds every Redis command of a request, including
	// connecting; a request makes at most three. If zero,
	// DefaultRedisTimeout (1 s).
	RedisTimeout time.Duration
	// RetryAfter is the Retry-After of 503 answers, rounded up to whole
	// seconds. If zero, DefaultRetryAfter (2 s).
	RetryAfter time.Duration
	// Registerer receives the API's metrics (wxclose_api_requests_total,
	// wxclose_api_request_duration_seconds). If nil, they are not
	// registered.
	Registerer prometheus.Registerer
	// Logger receives one line per request (debug level; errors at error
	// level) and never a token. If zero, logging is off.
	Logger zerolog.Logger
}

// API is the close API. It is safe for concurrent use.
type API struct {
	rdb       redis.UniversalClient
	producer  *tasks.Producer
	canceller *tasks.Producer
	inspector *asynq.Inspector
	tokens    *Tokens
	mux       *http.ServeMux
	metrics   *apiMetrics
	log       zerolog.Logger
	openapi   []byte
	retry     string
	listen    string
}

// New checks opts, converts the OpenAPI document and opens the Redis
// connections (lazily: New does not fail when Redis is down; requests get
// 503 until it answers). Call Close when done.
func New(opts Options) (*API, error) {
	if opts.Redis == nil {
		return nil, errors.New("httpapi: Options.Redis is required (REDIS_URL)")
	}
	if opts.Tokens == nil || opts.Tokens.Len() == 0 {
		host, _, err := net.SplitHostPort(opts.ListenAddr)
		switch {
		case opts.ListenAddr == "":
			return nil, errors.New("httpapi: without API tokens (WXCLOSE_API_TOKENS_FILE) the API is served only on a loopback address, and Options.ListenAddr (WXCLOSE_HTTP_ADDR) is empty")
		case err != nil:
			return nil, fmt.Errorf("httpapi: WXCLOSE_HTTP_ADDR %q must be host:port, e.g. 127.0.0.1:8080: %v", opts.ListenAddr, err)
		case !isLoopbackHost(host):
			return nil, fmt.Errorf("httpapi: the close API has no tokens and WXCLOSE_HTTP_ADDR %q is reachable from other machines: "+
				"set WXCLOSE_API_TOKENS_FILE, or bind WXCLOSE_HTTP_ADDR to loopback (e.g. 127.0.0.1:8080)", opts.ListenAddr)
		}
		opts.Tokens = nil
	}
	if opts.RedisTimeout <= 0 {
		opts.RedisTimeout = DefaultRedisTimeout
	}
	if opts.RetryAfter <= 0 {
		opts.RetryAfter = DefaultRetryAfter
	}
	doc, err := docs.OpenAPIJSON()
	if err != nil {
		return nil, fmt.Errorf("httpapi: %w", err)
	}
	m, err := newAPIMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	rdb, err := boundedRedis(opts.Redis, opts.RedisTimeout)
	if err != nil {
		return nil, err
	}
	a := &API{
		rdb:      rdb,
		producer: tasks.NewProducerFromRedisClient(rdb, opts.Producer),
		// Cancelling by task id: the id already names the merchant (or "_"
		// for none), so this producer has no default merchant to fill in.
		canceller: tasks.NewProducerFromRedisClient(rdb, tasks.ProducerConfig{
			Shards: opts.Producer.Shards, PreviousShards: opts.Producer.PreviousShards,
		}),
		inspector: asynq.NewInspectorFromRedisClient(rdb),
		tokens:    opts.Tokens,
		metrics:   m,
		log:       opts.Logger,
		openapi:   doc,
		retry:     strconv.Itoa(int((opts.RetryAfter + time.Second - 1) / time.Second)),
		listen:    opts.ListenAddr,
	}
	a.mux = http.NewServeMux()
	a.mux.HandleFunc("POST /v1/closes", a.postClose)
	a.mux.HandleFunc("POST "+batchPath, a.postBatch)
	a.mux.HandleFunc("GET /v1/closes/{task_id}", a.getClose)
	a.mux.HandleFunc("DELETE /v1/closes/{task_id}", a.deleteClose)
	a.mux.HandleFunc("GET "+openAPIPath, a.getOpenAPI)
	// Without these, GET and DELETE /v1/closes/batch would match the
	// {task_id} routes and answer 400 for a task id "batch".
	a.mux.HandleFunc("GET "+batchPath, a.batchMethodNotAllowed)
	a.mux.HandleFunc("DELETE "+batchPath, a.batchMethodNotAllowed)
	return a, nil
}

const (
	openAPIPath = "/v1/openapi.json"
	batchPath   = "/v1/closes/batch"
)

// Pattern is the ServeMux pattern to mount Handler at: "/v1/".
func (a *API) Pattern() string { return "/v1/" }

// Handler returns the API's handler.
func (a *API) Handler() http.Handler { return a }

// Close releases the Redis connections.
func (a *API) Close() error { return a.rdb.Close() }

// Describe returns one line for the startup log, such as
// "close API at http://127.0.0.1:8080/v1/ (bearer tokens: 2)".
func (a *API) Describe() string {
	mode := "no tokens: loopback only"
	if a.tokens != nil {
		mode = fmt.Sprintf("bearer tokens: %d", a.tokens.Len())
	}
	addr := a.listen
	if host, port, err := net.SplitHostPort(addr); err == nil && host == "" {
		addr = net.JoinHostPort("*", port)
	}
	return fmt.Sprintf("close API at http://%s%s (%s)", addr, a.Pattern(), mode)
}

// ServeHTTP runs every request through the same steps: route, guard
// (loopback or token), handler; then it counts and logs the answer.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	h, pattern := a.mux.Handler(r)
	route := pattern
	if route == "" {
		route = routeUnmatched
	}
	rec := &recorder{ResponseWriter: w}
	defer func() {
		if v := recover(); v != nil {
			if err, ok := v.(error); ok && errors.Is(err, http.ErrAbortHandler) {
				panic(v)
			}
			a.log.Error().Str("route", route).Str("panic", fmt.Sprint(v)).Msg("close API handler panicked")
			if rec.status == 0 {
				writeProblem(rec, newProblem(http.StatusInternalServerError, CodeInternal, "", "internal error"))
			}
		}
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
		elapsed := time.Since(start)
		a.metrics.observe(route, rec.status, elapsed.Seconds())
		level := zerolog.DebugLevel
		if rec.status >= 500 {
			level = zerolog.ErrorLevel
		}
		if ev := a.log.WithLevel(level); ev != nil {
			ev = ev.Str("method", r.Method).Str("route", route).Int("status", rec.status).Dur("duration_ms", elapsed)
			if rec.code != "" {
				ev = ev.Str("code", rec.code)
			}
			ev.Msg("close API request")
		}
	}()

	if a.tokens == nil {
		if !loopbackRequest(r) {
			writeProblem(rec, newProblem(http.StatusForbidden, CodeForbidden, "",
				"this close API has no tokens (WXCLOSE_API_TOKENS_FILE) and only answers clients on its own machine that address it as localhost or a loopback address"))
			return
		}
	} else if pattern != "GET "+openAPIPath {
		if p := a.authenticate(rec, r); p != nil {
			writeProblem(rec, p)
			return
		}
	}
	if pattern == "" {
		unrouted(rec, r, h)
		return
	}
	a.mux.ServeHTTP(rec, r)
}

// authenticate checks the bearer token. Neither the token nor the header
// is logged or echoed.
func (a *API) authenticate(w http.ResponseWriter, r *http.Request) *Problem {
	token := bearerToken(r.Header.Get("Authorization"))
	if token == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="wxclose"`)
		return newProblem(http.StatusUnauthorized, CodeUnauthorized, "Authorization",
			"send the header Authorization: Bearer <token>, with a token from the server's WXCLOSE_API_TOKENS_FILE")
	}
	if !a.tokens.valid(token) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="wxclose", error="invalid_token"`)
		return newProblem(http.StatusUnauthorized, CodeUnauthorized, "Authorization", "the bearer token is not one of the server's tokens")
	}
	return nil
}

// unrouted answers a request that matched no route: 405 with Allow when the
// path exists with other methods, 404 otherwise, both as problems. The
// ServeMux decides which (and computes Allow) in h, the handler it chose;
// its plain-text answer is replaced. Anything else it answers (a redirect
// to a cleaned path) is passed on.
func unrouted(w http.ResponseWriter, r *http.Request, h http.Handler) {
	c := &captured{header: http.Header{}}
	h.ServeHTTP(c, r)
	switch c.status {
	case http.StatusMethodNotAllowed:
		allow := c.header.Get("Allow")
		if r.URL.Path == batchPath {
			allow = http.MethodPost // the mux counts the {task_id} routes too
		}
		methodNotAllowed(w, r, allow)
	case http.StatusNotFound:
		writeProblem(w, newProblem(http.StatusNotFound, CodeNotFound, "", "no such endpoint; see "+openAPIPath))
	default:
		for k, v := range c.header {
			w.Header()[k] = v
		}
		w.WriteHeader(c.status)
		_, _ = w.Write(c.body)
	}
}

func (a *API) batchMethodNotAllowed(w http.ResponseWriter, r *http.Request) {
	methodNotAllowed(w, r, http.MethodPost)
}

func methodNotAllowed(w http.ResponseWriter, r *http.Request, allow string) {
	w.Header().Set("Allow", allow)
	writeProblem(w, newProblem(http.StatusMethodNotAllowed, CodeMethodNotAllowed, "",
		fmt.Sprintf("%s is not allowed on %s; allowed: %s", r.Method, r.URL.Path, allow)))
}

// captured holds an answer the ServeMux gave, for unrouted to rewrite.
type captured struct {
	header http.Header
	status int
	body   []byte
}

func (c *captured) Header() http.Header { return c.header }
func (c *captured) WriteHeader(s int) {
	if c.status == 0 {
		c.status = s
	}
}
func (c *captured) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	c.body = append(c.body, b...)
	return len(b), nil
}

func (a *API) getOpenAPI(w http.ResponseWriter, _ *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(a.openapi)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(a.openapi)
}

// unavailable is the answer when Redis failed: 503 with Retry-After. The
// error is logged (it names Redis's address at most, never its password:
// go-redis errors do not carry it), not sent.
func (a *API) unavailable(w http.ResponseWriter, err error, detail string) {
	a.log.Error().Err(err).Msg("close API: Redis call failed")
	w.Header().Set("Retry-After", a.retry)
	writeProblem(w, newProblem(http.StatusServiceUnavailable, CodeRedisUnavailable, "", detail))
}

// isContentType reports whether the Content-Type header names want (any
// parameters, such as charset, are allowed).
func isContentType(r *http.Request, want string) bool {
	ct, _, _ := strings.Cut(r.Header.Get("Content-Type"), ";")
	return strings.EqualFold(strings.TrimSpace(ct), want)
}
