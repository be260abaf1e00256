package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/common/expfmt"

	"github.com/wxclose/wxclose/docs"
	"github.com/wxclose/wxclose/internal/ops"
	"github.com/wxclose/wxclose/tasks"
)

// TestAuth: no token and a wrong token get 401 with WWW-Authenticate; a
// plain token and a token stored as its digest both work; the OpenAPI
// document needs none.
func TestAuth(t *testing.T) {
	e := newEnv(t)
	body := func(n string) []byte { return jsonBody(t, order(n, time.Now())) }
	hdr := func(v string) http.Header { return http.Header{"Authorization": {v}} }

	e.token = ""
	a := e.do(req{method: "POST", path: "/v1/closes", body: body("AUTH-0"), docRejects: true})
	wantProblem(t, a, 401, CodeUnauthorized, "Authorization")
	if got := a.header.Get("WWW-Authenticate"); got != `Bearer realm="wxclose"` {
		t.Fatalf("WWW-Authenticate = %q", got)
	}
	for _, v := range []string{"Bearer wrong-token-0123456789", "Bearer " + sha256Hex(hashedToken), "Bearer " + HashPrefix + sha256Hex(hashedToken), "Basic " + plainToken, plainToken} {
		docRejects := !strings.HasPrefix(v, "Bearer ")
		a = e.do(req{method: "GET", path: taskURL("close:1900000109:out_trade_no:AUTH-0"), header: hdr(v), docRejects: docRejects})
		wantProblem(t, a, 401, CodeUnauthorized, "Authorization")
		if docRejects {
			continue
		}
		if got := a.header.Get("WWW-Authenticate"); got != `Bearer realm="wxclose", error="invalid_token"` {
			t.Fatalf("WWW-Authenticate = %q", got)
		}
	}
	// Unauthenticated requests learn nothing about routes either.
	wantProblem(t, e.do(req{method: "GET", path: "/v1/elsewhere", docRejects: true}), 401, CodeUnauthorized, "Authorization")

	for i, v := range []string{"Bearer " + plainToken, "Bearer " + hashedToken, "bearer " + plainToken} {
		a = e.do(req{method: "POST", path: "/v1/closes", body: body("AUTH-" + string(rune('1'+i))), header: hdr(v)})
		if a.status != 201 {
			t.Fatalf("%s: %d %s", v[:7], a.status, a.body)
		}
	}
	if a := e.do(req{method: "GET", path: "/v1/openapi.json"}); a.status != 200 {
		t.Fatalf("openapi.json without a token: %d", a.status)
	}
}

// TestTokensReload: Reload swaps the tokens; a broken file keeps the old
// ones.
func TestTokensReload(t *testing.T) {
	e := newEnv(t)
	path := e.tokens.Path()
	get := func(token string) int {
		e.token = token
		return e.do(req{method: "GET", path: taskURL("close:1900000109:out_trade_no:R")}).status
	}
	if s := get(plainToken); s != 404 {
		t.Fatalf("before reload: %d", s)
	}
	const newToken = "rotated-token-0123456789abcdef"
	if err := os.WriteFile(path, []byte(newToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.tokens.Reload(); err != nil {
		t.Fatal(err)
	}
	if s := get(plainToken); s != 401 {
		t.Fatalf("old token after reload: %d, want 401", s)
	}
	if s := get(newToken); s != 404 {
		t.Fatalf("new token after reload: %d, want 404", s)
	}
	if err := os.WriteFile(path, []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.tokens.Reload(); !errors.Is(err, ErrTokens) {
		t.Fatalf("Reload of a bad file = %v, want ErrTokens", err)
	}
	if s := get(newToken); s != 404 {
		t.Fatalf("token after a failed reload: %d, want 404 (kept)", s)
	}
}

func TestLoadTokens(t *testing.T) {
	const secret = "Secret-Token-Value-0123456789"
	tests := []struct {
		name, content string
		n             int
		wantErr       string // part of the error; "" for success
	}{
		{"plain and hashed", secret + "\n" + HashPrefix + sha256Hex("other-token-0123456789") + "\n", 2, ""},
		{"comments and blanks", "# rotated 2026-11\n\n  " + secret + "  \r\n", 1, ""},
		{"upper-case hex", HashPrefix + strings.ToUpper(sha256Hex(secret)), 1, ""},
		{"empty", "\n# nothing\n", 0, "no tokens"},
		{"too short", "Secret-Tok\n", 0, "line 1: a token must be at least 16"},
		{"space inside", "Secret Token Value 0123456789\n", 0, "line 1: a token may contain only"},
		{"bad digest", secret + "\n" + HashPrefix + "abc\n", 0, "line 2: after"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "tokens")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			tok, err := LoadTokens(path)
			if tt.wantErr != "" {
				if !errors.Is(err, ErrTokens) || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), path) {
					t.Fatalf("err = %v, want ErrTokens naming %s and saying %q", err, path, tt.wantErr)
				}
				// Every token in these files contains "Secret"; no error may
				// quote one.
				if msg := strings.ReplaceAll(err.Error(), path, ""); strings.Contains(msg, "Secret") || strings.Contains(msg, "Tok") {
					t.Fatalf("error %q quotes the file", err)
				}
				return
			}
			if err != nil || tok.Len() != tt.n {
				t.Fatalf("LoadTokens = %v, %v; want %d tokens", tok, err, tt.n)
			}
			if !tok.valid(secret) || tok.valid(secret+"x") || tok.valid("") {
				t.Fatalf("valid() disagrees with the file")
			}
		})
	}
	if _, err := LoadTokens(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, ErrTokens) {
		t.Fatalf("missing file: %v", err)
	}
}

// TestTokensNeverLeak: after requests with right and wrong tokens, and
// errors of every kind, neither the logs (at trace level) nor the metrics
// hold any token or digest.
func TestTokensNeverLeak(t *testing.T) {
	e := newEnv(t)
	const wrong = "wrong-token-abcdefghijklmnop"
	for _, token := range []string{plainToken, hashedToken, wrong} {
		e.token = token
		e.do(req{method: "POST", path: "/v1/closes", body: jsonBody(t, order("LEAK", time.Now()))})
		e.do(req{method: "POST", path: "/v1/closes", body: []byte(`{"x":1}`), docRejects: true})
		e.do(req{method: "GET", path: taskURL("close:1900000109:out_trade_no:NONE")})
		e.do(req{method: "PUT", path: "/v1/closes", docRejects: true})
	}
	var metrics bytes.Buffer
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&metrics, mf); err != nil {
			t.Fatal(err)
		}
	}
	logs := e.logs.String()
	if !strings.Contains(logs, `"route":"POST /v1/closes"`) {
		t.Fatalf("the request log is missing (so this test proves nothing): %s", logs)
	}
	for _, secret := range []string{plainToken, hashedToken, wrong, sha256Hex(hashedToken), sha256Hex(plainToken)} {
		for name, text := range map[string]string{"logs": logs, "metrics": metrics.String()} {
			if strings.Contains(text, secret) || strings.Contains(text, secret[:12]) {
				t.Errorf("%s contain a token (%s...)", name, secret[:4])
			}
		}
	}
}

// TestLoopbackOnly: without tokens the API refuses a non-loopback listen
// address at start, and requests that do not name a loopback host.
func TestLoopbackOnly(t *testing.T) {
	e := newEnv(t, withoutTokens())
	if a := e.do(req{method: "POST", path: "/v1/closes", body: jsonBody(t, order("LOOP", time.Now()))}); a.status != 201 {
		t.Fatalf("loopback client: %d %s", a.status, a.body)
	}
	// A DNS-rebinding page reaches the port with its own Host.
	hr, _ := http.NewRequest("GET", e.srv.URL+"/v1/openapi.json", nil)
	hr.Host = "evil.example:80"
	resp, err := e.client.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 || resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("foreign Host: %d", resp.StatusCode)
	}

	for _, addr := range []string{"", "0.0.0.0:8080", ":8080", "10.0.0.1:8080", "example.com:8080", "8080"} {
		if _, err := New(Options{Redis: e.redis.ConnOpt(), ListenAddr: addr}); err == nil {
			t.Errorf("New without tokens on %q: no error", addr)
		}
	}
	for _, addr := range []string{"127.0.0.1:8080", "[::1]:8080", "localhost:8080"} {
		api, err := New(Options{Redis: e.redis.ConnOpt(), ListenAddr: addr})
		if err != nil {
			t.Errorf("New without tokens on %q: %v", addr, err)
			continue
		}
		_ = api.Close()
	}
	// With tokens any address will do.
	api, err := New(Options{Redis: e.redis.ConnOpt(), ListenAddr: "0.0.0.0:8080", Tokens: writeTokens(t, plainToken)})
	if err != nil {
		t.Fatal(err)
	}
	_ = api.Close()
}

func TestLoopbackRequest(t *testing.T) {
	tests := []struct {
		remote, host string
		want         bool
	}{
		{"127.0.0.1:5000", "127.0.0.1:8080", true},
		{"[::1]:5000", "[::1]:8080", true},
		{"[::ffff:127.0.0.1]:5000", "localhost:8080", true},
		{"127.0.0.1:5000", "LOCALHOST", true},
		{"10.0.0.2:5000", "127.0.0.1:8080", false},
		{"127.0.0.1:5000", "evil.example", false},
		{"127.0.0.1:5000", "127.0.0.1.nip.io:8080", false},
		{"garbage", "127.0.0.1", false},
	}
	for _, tt := range tests {
		r := &http.Request{RemoteAddr: tt.remote, Host: tt.host}
		if got := loopbackRequest(r); got != tt.want {
			t.Errorf("loopbackRequest(remote %s, host %s) = %v", tt.remote, tt.host, got)
		}
	}
}

// TestMethodsAndRoutes: 405 with Allow for a known path, 404 for an
// unknown one, both as problems.
func TestMethodsAndRoutes(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		method, path, allow string
	}{
		{"PUT", "/v1/closes", "POST"},
		{"GET", "/v1/closes", "POST"},
		{"DELETE", "/v1/closes", "POST"},
		{"GET", "/v1/closes/batch", "POST"},
		{"DELETE", "/v1/closes/batch", "POST"},
		{"PUT", "/v1/closes/batch", "POST"},
		{"POST", taskURL("close:1900000109:out_trade_no:A"), "DELETE, GET, HEAD"},
		{"PATCH", taskURL("close:1900000109:out_trade_no:A"), "DELETE, GET, HEAD"},
		{"POST", "/v1/openapi.json", "GET, HEAD"},
	}
	for _, tt := range tests {
		a := e.do(req{method: tt.method, path: tt.path, docRejects: true})
		wantProblem(t, a, 405, CodeMethodNotAllowed, "")
		if got := a.header.Get("Allow"); got != tt.allow {
			t.Errorf("%s %s: Allow = %q, want %q", tt.method, tt.path, got, tt.allow)
		}
	}
	for _, path := range []string{"/v1/", "/v1/close", "/v1/closes/", "/v1/closes/a/b"} {
		wantProblem(t, e.do(req{method: "GET", path: path, docRejects: true}), 404, CodeNotFound, "")
	}
}

// TestOpenAPIServed: the document served is the checked-in one.
func TestOpenAPIServed(t *testing.T) {
	e := newEnv(t)
	a := e.do(req{method: "GET", path: "/v1/openapi.json"})
	want, err := docs.OpenAPIJSON()
	if err != nil {
		t.Fatal(err)
	}
	if a.status != 200 || a.header.Get("Content-Type") != "application/json" || !bytes.Equal(a.body, want) {
		t.Fatalf("GET /v1/openapi.json: %d %s", a.status, a.header.Get("Content-Type"))
	}
	var v struct {
		OpenAPI string `json:"openapi"`
	}
	a.decode(t, &v)
	if v.OpenAPI != "3.1.0" {
		t.Fatalf("openapi = %q", v.OpenAPI)
	}
}

// TestMetrics: requests are counted by route pattern and status, never by
// raw path, and timed.
func TestMetrics(t *testing.T) {
	e := newEnv(t)
	e.do(req{method: "POST", path: "/v1/closes", body: jsonBody(t, order("M-1", time.Now()))})
	e.do(req{method: "POST", path: "/v1/closes", body: jsonBody(t, order("M-1", time.Now()))})
	e.do(req{method: "GET", path: taskURL("close:1900000109:out_trade_no:M-1")})
	e.do(req{method: "GET", path: taskURL("close:1900000109:out_trade_no:M-2")})
	e.do(req{method: "GET", path: "/v1/nothing/here", docRejects: true})

	counts := map[[2]string]float64{}
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var histograms uint64
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
				if strings.Contains(l.GetValue(), "close:") || strings.Contains(l.GetValue(), "M-1") || strings.Contains(l.GetValue(), "nothing") {
					t.Errorf("label %s=%q holds a path or an id", l.GetName(), l.GetValue())
				}
			}
			switch mf.GetName() {
			case "wxclose_api_requests_total":
				counts[[2]string{labels["route"], labels["status"]}] += m.GetCounter().GetValue()
			case "wxclose_api_request_duration_seconds":
				histograms += m.GetHistogram().GetSampleCount()
			}
		}
	}
	want := map[[2]string]float64{
		{"POST /v1/closes", "201"}:          1,
		{"POST /v1/closes", "200"}:          1,
		{"GET /v1/closes/{task_id}", "200"}: 1,
		{"GET /v1/closes/{task_id}", "404"}: 1,
		{routeUnmatched, "404"}:             1,
	}
	for k, v := range want {
		if counts[k] != v {
			t.Errorf("requests{route=%q,status=%q} = %v, want %v (all: %v)", k[0], k[1], counts[k], v, counts)
		}
	}
	if histograms != 5 {
		t.Errorf("latency samples = %d, want 5", histograms)
	}
	// A second API cannot register over the first.
	if _, err := New(Options{Redis: e.redis.ConnOpt(), ListenAddr: "127.0.0.1:0", Registerer: e.reg}); err == nil {
		t.Fatal("a second API registered the same metrics")
	}
}

// TestRedisDown: with Redis killed, or stopped so that it accepts
// connections and never answers, every endpoint that needs it answers 503
// with Retry-After, well within the client's patience.
func TestRedisDown(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGSTOP} {
		t.Run(sig.String(), func(t *testing.T) {
			e := newEnv(t, withRedisTimeout(300*time.Millisecond))
			if e.redis.Embedded {
				t.Skip("needs a redis-server process to kill")
			}
			// Warm the pool so that stopped Redis is met on open connections too.
			a := e.do(req{method: "POST", path: "/v1/closes", body: jsonBody(t, order("UP", time.Now()))})
			if a.status != 201 {
				t.Fatalf("%d %s", a.status, a.body)
			}
			signalRedis(t, e, sig)

			// The client gives up after 30 s; the API must answer long before.
			for _, r := range []req{
				{method: "POST", path: "/v1/closes", body: jsonBody(t, order("DOWN", time.Now()))},
				{method: "POST", path: "/v1/closes", body: jsonBody(t, order("UP", time.Now()))},
				{method: "POST", path: "/v1/closes/batch", body: jsonBody(t, []any{order("D1", time.Now()), order("D2", time.Now())})},
				{method: "GET", path: taskURL("close:1900000109:out_trade_no:UP")},
				{method: "DELETE", path: taskURL("close:1900000109:out_trade_no:UP")},
			} {
				start := time.Now()
				a := e.do(r)
				wantProblem(t, a, 503, CodeRedisUnavailable, "")
				if got := a.header.Get("Retry-After"); got != "2" {
					t.Errorf("Retry-After = %q", got)
				}
				t.Logf("%s %s: 503 after %s", r.method, r.path, time.Since(start).Round(time.Millisecond))
			}
			// Invalid input is still judged without Redis.
			wantProblem(t, e.do(req{method: "POST", path: "/v1/closes", body: []byte(`{}`), docRejects: true}), 400, CodeMissingField, "created_at")
		})
	}
}

// signalRedis sends sig to the test's own redis-server (found by the pid it
// reports), and kills it at the end if it was only stopped.
func signalRedis(t *testing.T, e *env, sig syscall.Signal) {
	t.Helper()
	info, err := e.redis.Client().Info(t.Context(), "server").Result()
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			if err := json.Unmarshal([]byte(v), &pid); err != nil {
				t.Fatal(err)
			}
		}
	}
	if pid <= 1 {
		t.Fatalf("no process_id in INFO")
	}
	if err := syscall.Kill(pid, sig); err != nil {
		t.Fatal(err)
	}
	if sig == syscall.SIGSTOP {
		// redistest's cleanup kills the process, which works on a stopped
		// one too; resume it first so that it exits at once.
		t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })
	}
}

// TestClassifyInvalid runs the real parsers (ops.ParseOrderLine and the
// producer's validation) over each kind of bad order and checks the code
// and field the API reports, so that a change in their wording fails here.
func TestClassifyInvalid(t *testing.T) {
	// Payload does not touch Redis; the address is never dialled.
	p := tasks.NewProducer(asynq.RedisClientOpt{Addr: "127.0.0.1:1"}, tasks.ProducerConfig{})
	defer p.Close()
	now := time.Now().Format(time.RFC3339)
	tests := []struct {
		line        string
		code, field string
	}{
		{`{"out_trade_no":"A","created_at":"` + now + `","closeAt":"x"}`, CodeUnknownField, "closeAt"},
		{`{"Out_Trade_No":"A","created_at":"` + now + `"}`, CodeUnknownField, "Out_Trade_No"},
		{`{"out_trade_no":"A","created_at":"` + now + `","` + strings.Repeat("k", 60) + `":1}`, CodeUnknownField, strings.Repeat("k", 40) + "..."},
		{`{"out_trade_no":"A","out_trade_no":"B","created_at":"` + now + `"}`, CodeDuplicateField, "out_trade_no"},
		{`{"created_at":"` + now + `"}`, CodeMissingField, "out_trade_no"},
		{`{"out_trade_no":"A"}`, CodeMissingField, "created_at"},
		{`{"out_trade_no":"A B","created_at":"` + now + `"}`, CodeInvalidField, "out_trade_no"},
		{`{"transaction_id":"42-0","created_at":"` + now + `"}`, CodeInvalidField, "transaction_id"},
		{`{"out_trade_no":"A","mchid":"x","created_at":"` + now + `"}`, CodeInvalidField, "mchid"},
		{`{"out_trade_no":"A","sub_mchid":"x","created_at":"` + now + `"}`, CodeInvalidField, "sub_mchid"},
		{`{"out_trade_no":"A","sub_appid":"a-b","created_at":"` + now + `"}`, CodeInvalidField, "sub_appid"},
		{`{"out_trade_no":"A","created_at":"yesterday"}`, CodeInvalidField, "created_at"},
		{`{"out_trade_no":"A","created_at":"2026-11-22T10:00:00+24:00"}`, CodeInvalidField, "created_at"},
		{`{"out_trade_no":"A","created_at":"` + now + `","close_at":"soon"}`, CodeInvalidField, "close_at"},
		{`{"out_trade_no":"A","created_at":"` + time.Now().Add(3*time.Hour).Format(time.RFC3339) + `"}`, CodeInvalidField, "created_at"},
		{`{"out_trade_no":"A","created_at":"` + now + `","close_at":"2000-01-01T00:00:00Z"}`, CodeInvalidField, "close_at"},
		{`{"out_trade_no":7,"created_at":"` + now + `"}`, CodeInvalidField, "out_trade_no"},
		{`{"out_trade_no":"A","created_at":` + `12}`, CodeInvalidField, "created_at"},
		{`[]`, CodeInvalidJSON, ""},
		{`{"out_trade_no":"A",}`, CodeInvalidJSON, ""},
		{`{"out_trade_no":"A"} x`, CodeInvalidJSON, ""},
		{``, CodeInvalidJSON, ""},
	}
	for _, tt := range tests {
		o, err := ops.ParseOrderLine([]byte(tt.line))
		if err == nil {
			_, _, err = p.Payload(o)
		}
		if err == nil || !isInvalid(err) {
			t.Errorf("%s: err = %v, want a validation error", tt.line, err)
			continue
		}
		code, field := classifyInvalid(err)
		if code != tt.code || field != tt.field {
			t.Errorf("%s\n\terror %q\n\tgives %s %q, want %s %q", tt.line, err, code, field, tt.code, tt.field)
		}
	}
}
