package httpapi

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/wxclose/wxclose/docs"
	"github.com/wxclose/wxclose/internal/redistest"
	"github.com/wxclose/wxclose/tasks"
)

// The OpenAPI document drives these tests: every request a test makes goes
// through env.do, which validates the request and the answer against
// docs/openapi.yaml with kin-openapi (JSON Schema 2020-12 for OpenAPI 3.1),
// and fails the test on any disagreement.

var (
	specOnce   sync.Once
	specDoc    *openapi3.T
	specRouter routers.Router
	specErr    error
)

func spec(t testing.TB) (*openapi3.T, routers.Router) {
	t.Helper()
	specOnce.Do(func() {
		// Newline-delimited JSON has no decoder in kin-openapi; the document
		// describes its lines as an array, so decode it as one.
		openapi3filter.RegisterBodyDecoder("application/x-ndjson", ndjsonDecoder)
		specDoc, specErr = openapi3.NewLoader().LoadFromData(docs.OpenAPIYAML)
		if specErr != nil {
			return
		}
		if specErr = specDoc.Validate(context.Background()); specErr != nil {
			return
		}
		specRouter, specErr = gorillamux.NewRouter(specDoc)
	})
	if specErr != nil {
		t.Fatalf("openapi.yaml: %v", specErr)
	}
	return specDoc, specRouter
}

func ndjsonDecoder(body io.Reader, _ http.Header, _ *openapi3.SchemaRef, _ openapi3filter.EncodingFn) (any, error) {
	var items []any
	sc := bufio.NewScanner(body)
	sc.Buffer(nil, 2<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var v any
		if err := json.Unmarshal(line, &v); err != nil {
			return nil, fmt.Errorf("line %q is not JSON: %w", line, err)
		}
		items = append(items, v)
	}
	return items, sc.Err()
}

// env is one API served over real HTTP against a private redis-server.
type env struct {
	t      *testing.T
	redis  *redistest.Server
	api    *API
	srv    *httptest.Server
	client *http.Client
	reg    *prometheus.Registry
	logs   *syncBuffer
	// token is sent as Authorization: Bearer unless a request sets its
	// own header; empty in loopback mode.
	token  string
	tokens *Tokens
}

// Tokens written to the tokens file of env: one plain, one as its digest.
const (
	plainToken  = "plain-token-0123456789abcdef"
	hashedToken = "hashed-token-fedcba9876543210"
)

type envOption func(*Options, *env)

// withoutTokens serves the API in loopback mode.
func withoutTokens() envOption {
	return func(o *Options, e *env) { o.Tokens, e.token, e.tokens = nil, "", nil }
}

func withRedisTimeout(d time.Duration) envOption {
	return func(o *Options, _ *env) { o.RedisTimeout = d }
}

func newEnv(t *testing.T, opts ...envOption) *env {
	t.Helper()
	spec(t)
	e := &env{t: t, redis: redistest.Start(t), reg: prometheus.NewRegistry(), logs: &syncBuffer{}}
	e.tokens = writeTokens(t, plainToken+"\n# a comment\n\n"+HashPrefix+sha256Hex(hashedToken)+"\n")
	e.token = plainToken
	o := Options{
		Redis:      e.redis.ConnOpt(),
		Producer:   tasks.ProducerConfig{MchID: "1900000109"},
		Tokens:     e.tokens,
		ListenAddr: "127.0.0.1:0",
		Registerer: e.reg,
		Logger:     zerolog.New(e.logs).Level(zerolog.TraceLevel),
	}
	for _, opt := range opts {
		opt(&o, e)
	}
	api, err := New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = api.Close() })
	e.api = api
	e.srv = httptest.NewServer(api.Handler())
	t.Cleanup(e.srv.Close)
	// A generous client timeout turns a hung request into a failure
	// instead of a stuck test; no test asserts how fast an answer comes.
	e.client = &http.Client{Timeout: 30 * time.Second}
	return e
}

func writeTokens(t testing.TB, content string) *Tokens {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	tok, err := LoadTokens(path)
	if err != nil {
		t.Fatalf("LoadTokens: %v", err)
	}
	return tok
}

func sha256Hex(s string) string {
	d := sha256.Sum256([]byte(s))
	return hex.EncodeToString(d[:])
}

// req describes one request.
type req struct {
	method, path string
	body         []byte
	contentType  string // default application/json when body is set
	header       http.Header
	// docRejects says the document itself considers the request invalid
	// (a body that breaks the schema, a missing token). The test then
	// checks that the validator agrees, so document and server cannot
	// disagree silently in either direction.
	docRejects bool
	// chunked sends the body without Content-Length.
	chunked bool
}

// answer is a validated response.
type answer struct {
	status  int
	header  http.Header
	body    []byte
	problem *Problem
}

func (a answer) decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(a.body, v); err != nil {
		t.Fatalf("answer is not the expected JSON (%v): %s", err, a.body)
	}
}

// do sends r over real HTTP and validates the request and the answer
// against the OpenAPI document.
func (e *env) do(r req) answer {
	e.t.Helper()
	return e.doT(e.t, r)
}

func (e *env) doT(t testing.TB, r req) answer {
	t.Helper()
	doc, router := spec(t)
	newReq := func() *http.Request {
		var body io.Reader
		if r.body != nil {
			body = bytes.NewReader(r.body)
			if r.chunked {
				body = io.MultiReader(bytes.NewReader(r.body)) // hides the length
			}
		}
		hr, err := http.NewRequest(r.method, e.srv.URL+r.path, body)
		if err != nil {
			t.Fatal(err)
		}
		if r.body != nil {
			ct := r.contentType
			if ct == "" {
				ct = "application/json"
			}
			hr.Header.Set("Content-Type", ct)
		}
		if e.token != "" {
			hr.Header.Set("Authorization", "Bearer "+e.token)
		}
		for k, v := range r.header {
			hr.Header[k] = v
		}
		return hr
	}

	// The request, as the document sees it.
	check := newReq()
	route, params, routeErr := router.FindRoute(check)
	var in *openapi3filter.RequestValidationInput
	if routeErr == nil {
		in = &openapi3filter.RequestValidationInput{
			Request: check, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: e.authenticationFunc, MultiError: true},
		}
		reqErr := openapi3filter.ValidateRequest(context.Background(), in)
		switch {
		case r.docRejects && reqErr == nil:
			t.Fatalf("%s %s: the test says the document rejects this request, but it validates", r.method, r.path)
		case !r.docRejects && reqErr != nil:
			t.Fatalf("%s %s: request is invalid against openapi.yaml: %v", r.method, r.path, reqErr)
		}
	} else if !r.docRejects {
		t.Fatalf("%s %s: no operation in openapi.yaml for it (%v); mark it docRejects if that is the point", r.method, r.path, routeErr)
	}

	hr := newReq()
	if r.chunked {
		hr.ContentLength = -1
	}
	resp, err := e.client.Do(hr)
	if err != nil {
		t.Fatalf("%s %s: %v", r.method, r.path, err)
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		t.Fatalf("%s %s: reading the answer: %v", r.method, r.path, err)
	}
	a := answer{status: resp.StatusCode, header: resp.Header, body: body}

	// The answer, as the document sees it.
	if routeErr == nil {
		out := &openapi3filter.ResponseValidationInput{
			RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header,
			Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
		}
		out.SetBodyBytes(body)
		if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
			t.Fatalf("%s %s: answer %d is invalid against openapi.yaml: %v\nbody: %s", r.method, r.path, resp.StatusCode, err, body)
		}
	} else {
		// No operation (404, 405): the answer must still be a documented
		// problem.
		if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
			t.Fatalf("%s %s: answer %d has Content-Type %q, want application/problem+json", r.method, r.path, resp.StatusCode, ct)
		}
		var v any
		if err := json.Unmarshal(body, &v); err != nil {
			t.Fatalf("%s %s: problem is not JSON: %s", r.method, r.path, body)
		}
		if err := doc.Components.Schemas["Problem"].Value.VisitJSON(v, openapi3.EnableJSONSchema2020()); err != nil {
			t.Fatalf("%s %s: answer is not a Problem per openapi.yaml: %v\nbody: %s", r.method, r.path, err, body)
		}
	}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/problem+json") {
		a.problem = &Problem{}
		if err := json.Unmarshal(body, a.problem); err != nil {
			t.Fatal(err)
		}
		if a.problem.Status != resp.StatusCode || a.problem.Type != ProblemTypePrefix+a.problem.Code || a.problem.Title == "" {
			t.Fatalf("%s %s: inconsistent problem for status %d: %+v", r.method, r.path, resp.StatusCode, a.problem)
		}
	}
	return a
}

// authenticationFunc is the document's bearerAuth as a validator sees it:
// a bearer token must be present. In loopback mode the server ignores the
// header, as the document says, so anything goes.
func (e *env) authenticationFunc(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	if e.tokens == nil {
		return nil
	}
	if in.SecurityScheme.Type == "http" && strings.EqualFold(in.SecurityScheme.Scheme, "bearer") {
		if bearerToken(in.RequestValidationInput.Request.Header.Get("Authorization")) == "" {
			return errors.New("no bearer token")
		}
		return nil
	}
	return fmt.Errorf("unexpected security scheme %s", in.SecuritySchemeName)
}

// wantProblem fails unless a is a problem with status, code and field.
func wantProblem(t testing.TB, a answer, status int, code, field string) {
	t.Helper()
	if a.status != status || a.problem == nil || a.problem.Code != code || a.problem.Field != field {
		t.Fatalf("got %d %s, want %d problem code=%q field=%q", a.status, a.body, status, code, field)
	}
}

func jsonBody(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// order is a close request body.
func order(number string, createdAt time.Time) map[string]any {
	return map[string]any{"out_trade_no": number, "created_at": createdAt.Format(time.RFC3339)}
}

func taskURL(id string) string { return "/v1/closes/" + url.PathEscape(id) }

// syncBuffer collects log output from concurrent requests.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
