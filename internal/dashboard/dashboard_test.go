package dashboard

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/wxclose/wxclose/internal/redistest"
	"github.com/wxclose/wxclose/tasks"
)

func TestBasicAuth(t *testing.T) {
	srv := redistest.Start(t)
	// A non-loopback listen address is fine with credentials.
	d := newDashboard(t, srv, Options{ListenAddr: "0.0.0.0:8080", User: testUser, Password: testPassword})
	ts := serve(t, d)

	for _, path := range []string{"/monitoring/", "/monitoring/api/queues", "/monitoring/static/js/main.5adda2da.chunk.js", "/monitoring/queues/close_order"} {
		tests := []struct {
			name           string
			user, password string
			want           int
		}{
			{"no credentials", "", "", http.StatusUnauthorized},
			{"wrong password", testUser, "correct horse battery stapler", http.StatusUnauthorized},
			{"empty password", testUser, "", http.StatusUnauthorized},
			{"wrong user", "admin", testPassword, http.StatusUnauthorized},
			{"user differs in case", "OPS", testPassword, http.StatusUnauthorized},
			{"right credentials", testUser, testPassword, http.StatusOK},
		}
		for _, tt := range tests {
			t.Run(path+"/"+tt.name, func(t *testing.T) {
				r := do(t, http.MethodGet, ts.URL+path, tt.user, tt.password, nil)
				if r.status != tt.want {
					t.Fatalf("status = %d, want %d; body %q", r.status, tt.want, r.body)
				}
				if tt.want == http.StatusUnauthorized {
					if got := r.header.Get("WWW-Authenticate"); got != `Basic realm="wxclose"` {
						t.Errorf("WWW-Authenticate = %q", got)
					}
					if strings.Contains(r.body, "Asynq") || strings.Contains(r.body, "queues") {
						t.Errorf("401 body leaks the dashboard: %q", r.body)
					}
				}
			})
		}
	}

	r := do(t, http.MethodGet, ts.URL+"/monitoring/", testUser, testPassword, nil)
	if !strings.Contains(r.body, "<title>Asynq - Monitoring</title>") || !strings.Contains(r.body, `/monitoring/static/js/`) {
		t.Errorf("/monitoring/ does not serve the UI rooted at /monitoring: %.300q", r.body)
	}
	if got := r.header.Get("X-Frame-Options"); got != "DENY" {
		t.Errorf("X-Frame-Options = %q, want DENY", got)
	}
}

func TestNewRefusesUnprotectedDashboard(t *testing.T) {
	srv := redistest.Start(t)
	tests := []struct {
		name string
		opts Options
		want []string // substrings of the error
	}{
		{"every interface", Options{ListenAddr: ":8080"}, []string{"WXCLOSE_UI_USER", "WXCLOSE_UI_PASSWORD", "WXCLOSE_HTTP_ADDR", "loopback", `":8080"`}},
		{"0.0.0.0", Options{ListenAddr: "0.0.0.0:8080"}, []string{"WXCLOSE_UI_USER", "WXCLOSE_UI_PASSWORD", "WXCLOSE_HTTP_ADDR", "loopback"}},
		{"[::]", Options{ListenAddr: "[::]:8080"}, []string{"WXCLOSE_UI_USER", "WXCLOSE_HTTP_ADDR"}},
		{"LAN address", Options{ListenAddr: "192.0.2.10:8080"}, []string{"WXCLOSE_UI_USER", "WXCLOSE_HTTP_ADDR"}},
		{"host name", Options{ListenAddr: "worker-1.internal:8080"}, []string{"WXCLOSE_UI_USER", "WXCLOSE_HTTP_ADDR"}},
		{"localhost look-alike", Options{ListenAddr: "localhost.attacker.example:8080"}, []string{"WXCLOSE_UI_USER", "WXCLOSE_HTTP_ADDR"}},
		{"user without password", Options{ListenAddr: ":8080", User: testUser}, []string{"WXCLOSE_UI_USER", "WXCLOSE_UI_PASSWORD", "both"}},
		{"password without user", Options{ListenAddr: "127.0.0.1:8080", Password: testPassword}, []string{"WXCLOSE_UI_USER", "WXCLOSE_UI_PASSWORD", "both"}},
		{"colon in user", Options{User: "ops:1", Password: testPassword}, []string{"WXCLOSE_UI_USER", "':'"}},
		{"address without port", Options{ListenAddr: "127.0.0.1"}, []string{"WXCLOSE_HTTP_ADDR", "host:port"}},
		{"no redis", Options{}, []string{"RedisConnOpt"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.name != "no redis" {
				tt.opts.RedisConnOpt = srv.ConnOpt()
			}
			d, err := New(tt.opts)
			if err == nil {
				d.Close()
				t.Fatal("New succeeded, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %s", err, w)
				}
			}
			if tt.opts.Password != "" && strings.Contains(err.Error(), tt.opts.Password) {
				t.Errorf("error %q shows the password", err)
			}
		})
	}
}

func TestNewAcceptsLoopbackWithoutCredentials(t *testing.T) {
	srv := redistest.Start(t)
	for _, addr := range []string{"", "127.0.0.1:8080", "127.8.9.10:0", "[::1]:8080", "localhost:8080", "LocalHost:1", "[::ffff:127.0.0.1]:8080"} {
		t.Run(addr, func(t *testing.T) {
			d := newDashboard(t, srv, Options{ListenAddr: addr})
			if got := d.Describe(); !strings.HasSuffix(got, "(no auth: loopback only)") {
				t.Errorf("Describe() = %q", got)
			}
		})
	}
}

func TestLoopbackOnlyWithoutCredentials(t *testing.T) {
	srv := redistest.Start(t)
	d := newDashboard(t, srv, Options{ListenAddr: "127.0.0.1:0"})
	ts := serve(t, d)

	t.Run("loopback client", func(t *testing.T) {
		for _, path := range []string{"/monitoring/", "/monitoring/api/queues"} {
			if r := do(t, http.MethodGet, ts.URL+path, "", "", nil); r.status != http.StatusOK {
				t.Errorf("GET %s = %d %q, want 200", path, r.status, r.body)
			}
		}
		// Hosts that a browser on this machine uses.
		for _, host := range []string{"localhost", "LOCALHOST:8080", "127.0.0.1", "[::1]:8080"} {
			r := do(t, http.MethodGet, ts.URL+"/monitoring/api/queues", "", "", http.Header{"Host": {host}})
			if r.status != http.StatusOK {
				t.Errorf("Host %s: status %d %q, want 200", host, r.status, r.body)
			}
		}
	})

	t.Run("rebound host name", func(t *testing.T) {
		// A page on attacker.example that re-resolved its name to
		// 127.0.0.1 reaches the dashboard with its own Host header.
		req, err := http.NewRequest(http.MethodGet, ts.URL+"/monitoring/api/queues", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = "attacker.example:8080"
		res, err := ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusForbidden {
			t.Errorf("status = %d, want 403", res.StatusCode)
		}
	})

	t.Run("non-loopback client", func(t *testing.T) {
		// Serve the same handler on a non-loopback address of this machine
		// and call it from there: the client address is not loopback.
		ip := nonLoopbackAddr(t)
		ln, err := net.Listen("tcp", net.JoinHostPort(ip.String(), "0"))
		if err != nil {
			t.Skipf("cannot listen on %s: %v", ip, err)
		}
		mux := http.NewServeMux()
		mux.Handle(d.Pattern(), d.Handler())
		remote := httptest.NewUnstartedServer(mux)
		remote.Listener.Close()
		remote.Listener = ln
		remote.Start()
		defer remote.Close()

		for _, path := range []string{"/monitoring/", "/monitoring/api/queues"} {
			r := do(t, http.MethodGet, remote.URL+path, "", "", http.Header{"Host": {"127.0.0.1"}})
			if r.status != http.StatusForbidden {
				t.Fatalf("GET %s from %s = %d, want 403", path, ip, r.status)
			}
			if !containsAll(r.body, "WXCLOSE_UI_USER", "clients on this machine") || strings.Contains(r.body, "Asynq") {
				t.Errorf("body = %q", r.body)
			}
		}
	})
}

// nonLoopbackAddr returns an address of this machine that is not loopback,
// or skips the test.
func nonLoopbackAddr(t *testing.T) netip.Addr {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Skipf("no interface addresses: %v", err)
	}
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(n.IP)
		if ok && ip.Unmap().Is4() && !ip.IsLoopback() && !ip.IsLinkLocalUnicast() {
			return ip.Unmap()
		}
	}
	t.Skip("this machine has no non-loopback IPv4 address to call the dashboard from")
	return netip.Addr{}
}

func TestReadOnly(t *testing.T) {
	pause := "/monitoring/api/queues/" + tasks.QueueClose + ":pause"
	tests := []struct {
		readOnly   bool
		wantStatus int
		wantPaused bool
	}{
		{readOnly: true, wantStatus: http.StatusMethodNotAllowed, wantPaused: false},
		{readOnly: false, wantStatus: http.StatusNoContent, wantPaused: true},
	}
	for _, tt := range tests {
		t.Run(map[bool]string{true: "read-only", false: "read-write"}[tt.readOnly], func(t *testing.T) {
			srv := redistest.Start(t)
			enqueueOne(t, srv)
			d := newDashboard(t, srv, Options{User: testUser, Password: testPassword, ReadOnly: tt.readOnly})
			ts := serve(t, d)

			r := do(t, http.MethodPost, ts.URL+pause, testUser, testPassword, nil)
			if r.status != tt.wantStatus {
				t.Fatalf("POST %s = %d %q, want %d", pause, r.status, r.body, tt.wantStatus)
			}
			if got := listQueues(t, ts.URL)[tasks.QueueClose].Paused; got != tt.wantPaused {
				t.Errorf("paused = %t, want %t", got, tt.wantPaused)
			}
			// Reads keep working either way.
			if r := do(t, http.MethodGet, ts.URL+"/monitoring/api/queues/"+tasks.QueueClose+"/scheduled_tasks", testUser, testPassword, nil); r.status != http.StatusOK {
				t.Errorf("GET scheduled_tasks = %d %q", r.status, r.body)
			}
		})
	}
}

func TestCrossSiteRequestRefused(t *testing.T) {
	// What a browser sends with a POST from another site's page (which
	// carries the operator's cached credentials), and from the UI itself.
	tests := []struct {
		name       string
		header     func(origin string) http.Header
		wantStatus int
	}{
		{"cross-site page", func(string) http.Header {
			return http.Header{"Sec-Fetch-Site": {"cross-site"}, "Origin": {"https://attacker.example"}}
		}, http.StatusForbidden},
		{"other origin, older browser", func(string) http.Header {
			return http.Header{"Origin": {"https://attacker.example"}}
		}, http.StatusForbidden},
		{"the dashboard's own page", func(origin string) http.Header {
			return http.Header{"Sec-Fetch-Site": {"same-origin"}, "Origin": {origin}}
		}, http.StatusNoContent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := redistest.Start(t)
			enqueueOne(t, srv)
			d := newDashboard(t, srv, Options{User: testUser, Password: testPassword})
			ts := serve(t, d)

			r := do(t, http.MethodPost, ts.URL+"/monitoring/api/queues/"+tasks.QueueClose+":pause", testUser, testPassword, tt.header(ts.URL))
			if r.status != tt.wantStatus {
				t.Fatalf("POST :pause = %d %q, want %d", r.status, r.body, tt.wantStatus)
			}
			if paused := listQueues(t, ts.URL)[tasks.QueueClose].Paused; paused != (tt.wantStatus == http.StatusNoContent) {
				t.Errorf("paused = %t after a %d", paused, r.status)
			}
		})
	}
}

func enqueueOne(t *testing.T, srv *redistest.Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p := tasks.NewProducer(srv.ConnOpt(), tasks.ProducerConfig{MchID: testMchID})
	defer p.Close()
	if _, err := p.EnqueueClose(ctx, tasks.CloseOrder{OutTradeNo: "ORDER-1"}); err != nil {
		t.Fatal(err)
	}
}

func TestQueuesAPI(t *testing.T) {
	srv := redistest.Start(t)
	seed(t, srv)
	d := newDashboard(t, srv, Options{User: testUser, Password: testPassword, ReadOnly: true})
	ts := serve(t, d)

	got := listQueues(t, ts.URL)
	for name, want := range seeded {
		q := got[name]
		q.Size = 0 // asynq's own sum; the states are what matter
		if q != want {
			t.Errorf("queue %s = %+v, want %+v", name, q, want)
		}
	}

	// Task lists show formatted payloads and results, not raw JSON.
	tests := []struct {
		path string
		want []string
	}{
		{"/close_order/scheduled_tasks", []string{`order out_trade_no=WX20261122100501 mchid=1900000109 created `, `(close due after `}},
		// The plain close stores no record and reads as closed.
		{"/close_order/completed_tasks", []string{`"result":"outcome=closed"`,
			`outcome=paid code=ORDERPAID message=\"订单已支付\"`, `outcome=already_closed code=ORDERCLOSED`}},
		{"/close_order/archived_tasks", []string{`order out_trade_no=WX20261122094721 mchid=1900000109`, `code=NO_AUTH`}},
		{"/reconciliation/pending_tasks", []string{`order out_trade_no=WX20261122094450 mchid=1900000109 created `, `: reason=ORDERPAID detected_at=`,
			`order out_trade_no=WX20261122093958`}},
	}
	for _, tt := range tests {
		r := do(t, http.MethodGet, ts.URL+"/monitoring/api/queues"+tt.path, testUser, testPassword, nil)
		if r.status != http.StatusOK {
			t.Fatalf("GET %s = %d %q", tt.path, r.status, r.body)
		}
		for _, w := range tt.want {
			if !strings.Contains(r.body, w) {
				t.Errorf("GET %s: no %s in %s", tt.path, w, r.body)
			}
		}
		if strings.Contains(r.body, `\"created_at\"`) || strings.Contains(r.body, `\"outcome\"`) {
			t.Errorf("GET %s shows raw JSON: %s", tt.path, r.body)
		}
	}

	// FormatResult reads every close result as a completed close's,
	// because asynqmon formats results with the task type only in the
	// completed list. Its task page must not show an archived close (whose
	// record is a failure) as closed.
	archived := tasks.CloseTaskID(tasks.OrderRef{OutTradeNo: "WX20261122094721", MchID: testMchID})
	path := "/close_order/tasks/" + archived
	r := do(t, http.MethodGet, ts.URL+"/monitoring/api/queues"+path, testUser, testPassword, nil)
	if r.status != http.StatusOK || !strings.Contains(r.body, `"state":"archived"`) {
		t.Fatalf("GET %s = %d %s", path, r.status, r.body)
	}
	if strings.Contains(r.body, "outcome=closed") {
		t.Errorf("GET %s shows an archived close as closed: %s", path, r.body)
	}
}

func TestDescribe(t *testing.T) {
	srv := redistest.Start(t)
	tests := []struct {
		opts Options
		want string
	}{
		{Options{}, "dashboard at http://127.0.0.1:8080/monitoring/ (no auth: loopback only)"},
		{Options{ListenAddr: "[::1]:9000", ReadOnly: true}, "dashboard at http://[::1]:9000/monitoring/ (no auth: loopback only, read-only)"},
		{Options{ListenAddr: "127.0.0.1:8080", User: testUser, Password: testPassword}, "dashboard at http://127.0.0.1:8080/monitoring/ (basic auth)"},
		{Options{ListenAddr: ":8080", User: testUser, Password: testPassword, ReadOnly: true}, "dashboard at http://*:8080/monitoring/ (basic auth, read-only)"},
	}
	for _, tt := range tests {
		d := newDashboard(t, srv, tt.opts)
		if got := d.Describe(); got != tt.want {
			t.Errorf("Describe() = %q, want %q", got, tt.want)
		}
		if strings.Contains(d.Describe(), testPassword) || strings.Contains(d.Describe(), testUser) {
			t.Errorf("Describe() = %q shows credentials", d.Describe())
		}
		if d.Pattern() != "/monitoring/" {
			t.Errorf("Pattern() = %q", d.Pattern())
		}
	}
}

func TestCloseTwice(t *testing.T) {
	srv := redistest.Start(t)
	d, err := New(Options{RedisConnOpt: srv.ConnOpt()})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("first Close: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
