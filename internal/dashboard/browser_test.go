//go:build unix

package dashboard

import (
	"bytes"
	"context"
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wxclose/wxclose/internal/redistest"
	"github.com/wxclose/wxclose/tasks"
)

// browserFlags are the chromium flags every run uses: headless, no
// sandbox (CI runs as root), and no traffic except to the test server.
var browserFlags = []string{
	"--headless",
	"--no-sandbox",
	"--disable-gpu",
	"--disable-quic",
	"--no-first-run",
	"--disable-background-networking",
	"--disable-component-update",
	"--disable-sync",
	"--disable-extensions",
	"--no-proxy-server",
	// Every name but the test server's fails at once, so the UI's Google
	// Fonts stylesheets cannot stall the page on DNS or a missing network.
	"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
	// The UI polls its API on timers; virtual time runs them without
	// waiting and ends the run once the page has been idle this long.
	"--virtual-time-budget=10000",
}

// browserTimeout bounds one chromium run in real time.
const browserTimeout = 90 * time.Second

// browser runs Debian's chromium from the command line.
type browser struct {
	t    *testing.T
	path string
}

// newBrowser finds chromium or skips the test.
func newBrowser(t *testing.T) *browser {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if path, err := exec.LookPath(name); err == nil {
			return &browser{t: t, path: path}
		}
	}
	t.Skip("chromium is not installed, skipping the browser test (apt-get install chromium; CI installs it)")
	return nil
}

// run starts chromium with a fresh profile and args, and returns its
// standard output. The process and every helper it started are killed when
// it returns or after browserTimeout.
func (b *browser) run(args ...string) (string, error) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), browserTimeout)
	defer cancel()
	profile, err := os.MkdirTemp("", "wxclose-chromium-")
	if err != nil {
		b.t.Fatal(err)
	}
	defer os.RemoveAll(profile)

	cmd := exec.CommandContext(ctx, b.path, append(append(append([]string{}, browserFlags...), "--user-data-dir="+profile), args...)...)
	cmd.SysProcAttr = browserProcAttr()
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	if cmd.Process != nil {
		// Renderer and GPU helpers can outlive the browser process; they
		// share its process group.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	if err != nil {
		return stdout.String(), fmt.Errorf("chromium %s: %w (context: %v); stderr:\n%s", strings.Join(args, " "), err, ctx.Err(), tail(stderr.String(), 2000))
	}
	return stdout.String(), nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// TestBrowser loads the dashboard in headless chromium, as an operator
// would, and reads the queue counts from the rendered page.
func TestBrowser(t *testing.T) {
	b := newBrowser(t)
	srv := redistest.Start(t)
	seed(t, srv)
	d := newDashboard(t, srv, Options{ListenAddr: "127.0.0.1:0", User: testUser, Password: testPassword})
	statuses := &statusLog{}
	mux := http.NewServeMux()
	mux.Handle(d.Pattern(), statuses.wrap(d.Handler()))
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)

	// Chromium takes credentials from the URL for the page and reuses them
	// for the UI's API calls on the same origin.
	pageURL := func(user, password, path string) string {
		u, err := url.Parse(ts.URL)
		if err != nil {
			t.Fatal(err)
		}
		u.User = url.UserPassword(user, password)
		u.Path = path
		return u.String()
	}

	t.Run("queues page", func(t *testing.T) {
		dom, err := b.run("--dump-dom", pageURL(testUser, testPassword, "/monitoring/"))
		if err != nil {
			t.Fatal(err)
		}
		cells := textCells(dom)
		for _, q := range []string{tasks.QueueClose, tasks.QueueReconcile} {
			// Row: name, state, size, ...
			row := rowAfter(cells, q, "run")
			if row == nil {
				t.Fatalf("queue %s not in the rendered table; page text: %q", q, cells)
			}
			want := seeded[q]
			size := want.Pending + want.Active + want.Scheduled + want.Retry + want.Archived + want.Completed
			if got := row[0]; got != strconv.Itoa(size) {
				t.Errorf("queue %s shows size %s, want %d", q, got, size)
			}
		}
		if path := os.Getenv("WXCLOSE_SCREENSHOT"); path != "" {
			abs, err := filepath.Abs(path)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := b.run("--window-size=1400,900", "--hide-scrollbars", "--screenshot="+abs, pageURL(testUser, testPassword, "/monitoring/")); err != nil {
				t.Fatal(err)
			}
			if fi, err := os.Stat(abs); err != nil || fi.Size() == 0 {
				t.Fatalf("no screenshot at %s: %v", abs, err)
			}
			t.Logf("screenshot saved to %s", abs)
		}
	})

	for _, q := range []string{tasks.QueueClose, tasks.QueueReconcile} {
		t.Run(q+" page", func(t *testing.T) {
			dom, err := b.run("--dump-dom", pageURL(testUser, testPassword, "/monitoring/queues/"+q))
			if err != nil {
				t.Fatal(err)
			}
			cells := textCells(dom)
			want := seeded[q]
			for label, n := range map[string]int{"Active": want.Active, "Pending": want.Pending, "Scheduled": want.Scheduled,
				"Retry": want.Retry, "Archived": want.Archived, "Completed": want.Completed} {
				row := rowAfter(cells, label)
				if row == nil {
					t.Fatalf("no %s tab on the %s page; page text: %q", label, q, cells)
				}
				if row[0] != strconv.Itoa(n) {
					t.Errorf("%s page: %s = %s, want %d", q, label, row[0], n)
				}
			}
		})
	}

	t.Run("wrong password", func(t *testing.T) {
		statuses.reset()
		dom, err := b.run("--dump-dom", pageURL(testUser, "wrong password", "/monitoring/"))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(dom, tasks.QueueClose) || strings.Contains(dom, tasks.QueueReconcile) || strings.Contains(dom, "Queue Size") {
			t.Errorf("the page shows queues with a wrong password: %q", textCells(dom))
		}
		// Headless chromium cannot ask for other credentials: it gives up
		// on the 401 and renders nothing.
		got := statuses.get()
		if len(got) == 0 {
			t.Fatal("chromium made no request")
		}
		for _, s := range got {
			if s != http.StatusUnauthorized {
				t.Errorf("responses to chromium = %v, want only 401", got)
				break
			}
		}
	})
}

// statusLog records the status of every response.
type statusLog struct {
	mu       sync.Mutex
	statuses []int
}

func (l *statusLog) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(sw, r)
		l.mu.Lock()
		l.statuses = append(l.statuses, sw.status)
		l.mu.Unlock()
	})
}

func (l *statusLog) reset() { l.mu.Lock(); l.statuses = nil; l.mu.Unlock() }

func (l *statusLog) get() []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]int(nil), l.statuses...)
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(status int) {
	w.status = status
	w.ResponseWriter.WriteHeader(status)
}

var (
	invisibleRE = regexp.MustCompile(`(?s)<(script|style|svg)\b.*?</(script|style|svg)>`)
	tagRE       = regexp.MustCompile(`<[^>]*>`)
)

// textCells returns the visible text pieces of a dumped DOM, in order,
// each trimmed, with empty ones dropped (as a table row reads: name,
// state, size, ...).
func textCells(dom string) []string {
	var cells []string
	for _, piece := range tagRE.Split(invisibleRE.ReplaceAllString(dom, "<x>"), -1) {
		if s := strings.TrimSpace(html.UnescapeString(piece)); s != "" {
			cells = append(cells, s)
		}
	}
	return cells
}

// rowAfter finds the cells prefix in a row in cells and returns the cells
// that follow, or nil.
func rowAfter(cells []string, prefix ...string) []string {
	for i := 0; i+len(prefix) < len(cells); i++ {
		match := true
		for j, p := range prefix {
			if cells[i+j] != p {
				match = false
				break
			}
		}
		if match {
			return cells[i+len(prefix):]
		}
	}
	return nil
}
