package main

// Acceptance tests of issue 9 (many merchants, one fleet, inside WeChat
// Pay's rate limits), at a scale CI can afford: worker processes (this test
// binary run as the worker command, see runMainEnv), one private
// redis-server, and the WeChat Pay sandbox in this process, which verifies
// every request with its own merchant's keys and enforces a per-merchant
// rate limit. Assertions are counts (closed orders, RATE_LIMITED answers,
// retries spent, early calls); the rates measured are logged, not asserted.
//
// Full scale, for the closing note (about two minutes each on two cores):
//
//	WXCLOSE_FLEET_ORDERS=30000 WXCLOSE_FLEET_RATE=500 WXCLOSE_FLEET_LOW_RATE=300 WXCLOSE_FLEET_CONCURRENCY=50 \
//	  go test ./cmd/worker -run 'TestFleetBurst|TestFleetAdapts' -v -count=1 -timeout 30m

import (
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/wxclose/wxclose/internal/closehandler"
	"github.com/wxclose/wxclose/internal/ops"
	"github.com/wxclose/wxclose/internal/redistest"
	"github.com/wxclose/wxclose/tasks"
	"github.com/wxclose/wxclose/wechat/sandbox"
)

const (
	fleetMchA = "1900000109" // v3
	fleetMchB = "1900000200" // v2
	fleetMchC = "1900000300" // v3, added to the registry later
)

var (
	fleetCredsOnce sync.Once
	fleetCreds     map[string]*sandbox.Credentials
	fleetCredsErr  error
)

// fleetKeys returns the three merchants' credentials, generated once per
// test binary (RSA key generation is slow).
func fleetKeys(t *testing.T) map[string]*sandbox.Credentials {
	t.Helper()
	fleetCredsOnce.Do(func() {
		fleetCreds = map[string]*sandbox.Credentials{}
		for id, appid := range map[string]string{fleetMchA: "", fleetMchB: "wx2421b1c4370ec43b", fleetMchC: ""} {
			c, err := sandbox.GenerateCredentials(id, appid)
			if err != nil {
				fleetCredsErr = err
				return
			}
			fleetCreds[id] = c
		}
	})
	if fleetCredsErr != nil {
		t.Fatal(fleetCredsErr)
	}
	return fleetCreds
}

// envInt reads a scale override for the full-scale run.
func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive whole number", name, v)
	}
	return n
}

// fleetMerchant is one registry entry.
type fleetMerchant struct {
	mchid, name, rate string // rate: rate_limit as written ("" for the default)
}

type fleet struct {
	t         *testing.T
	redis     *redistest.Server
	sb        *sandbox.Server
	url, dir  string
	file      string
	producer  *tasks.Producer
	inspector *asynq.Inspector
	procs     []*exec.Cmd
	outs      []*syncBuffer
}

// startFleet starts the sandbox (serving A, B and C, each limited to
// limit), writes a registry of ms and starts workers processes logging
// at logLevel.
func startFleet(t *testing.T, ms []fleetMerchant, limit sandbox.RateLimit, workers, concurrency int, logLevel string) *fleet {
	t.Helper()
	keys := fleetKeys(t)
	srv := redistest.Start(t)
	sb, err := sandbox.New(sandbox.Options{
		Credentials: keys[fleetMchA], Merchants: []*sandbox.Credentials{keys[fleetMchB], keys[fleetMchC]},
		RateLimit: limit, CacheResponseSignatures: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(sb.Handler())
	t.Cleanup(hs.Close)
	f := &fleet{t: t, redis: srv, sb: sb, url: hs.URL, dir: t.TempDir()}
	for id, c := range keys {
		if err := c.WriteFiles(filepath.Join(f.dir, id)); err != nil {
			t.Fatal(err)
		}
	}
	f.file = filepath.Join(f.dir, "merchants.yaml")
	f.writeRegistry(ms)
	f.producer = tasks.NewProducer(srv.ConnOpt(), tasks.ProducerConfig{})
	t.Cleanup(func() { f.producer.Close() })
	f.inspector = asynq.NewInspector(srv.ConnOpt())
	t.Cleanup(func() { f.inspector.Close() })
	for range workers {
		f.startWorker(concurrency, logLevel)
	}
	t.Cleanup(f.stop)
	waitUntil(t, "both workers serving", 60*time.Second, func() bool {
		s, err := f.inspector.Servers()
		return err == nil && len(s) == workers
	}, f.logs)
	return f
}

// writeRegistry writes the registry file (through a rename, so a reload
// never reads half a file).
func (f *fleet) writeRegistry(ms []fleetMerchant) {
	f.t.Helper()
	var b strings.Builder
	b.WriteString("merchants:\n")
	for _, m := range ms {
		c := fleetKeys(f.t)[m.mchid]
		dir := filepath.Join(f.dir, m.mchid)
		fmt.Fprintf(&b, "  - mchid: %q\n    base_url: %s\n", m.mchid, f.url)
		if m.name != "" {
			fmt.Fprintf(&b, "    name: %s\n", m.name)
		}
		if m.rate != "" {
			fmt.Fprintf(&b, "    rate_limit: %s\n", m.rate)
		}
		if m.mchid == fleetMchB {
			fmt.Fprintf(&b, "    api: v2\n    appid: %s\n    api_key_file: %s\n    sign_type: HMAC-SHA256\n", c.AppID, filepath.Join(dir, sandbox.FileAPIKey))
			continue
		}
		fmt.Fprintf(&b, "    api: v3\n    private_key_file: %s\n    cert_serial: %s\n    platform_cert_file: %s\n",
			filepath.Join(dir, "apiclient_key.pem"), c.MerchantCertSerial, filepath.Join(dir, "platform_cert.pem"))
	}
	tmp := f.file + ".new"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		f.t.Fatal(err)
	}
	if err := os.Rename(tmp, f.file); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fleet) startWorker(concurrency int, logLevel string) {
	f.t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = []string{
		runMainEnv + "=1",
		"REDIS_URL=" + f.redis.URL,
		"WXCLOSE_MERCHANTS_FILE=" + f.file,
		"WXCLOSE_HTTP_ADDR=127.0.0.1:0",
		"WXCLOSE_UI=false",
		"WXCLOSE_API=false",
		"WXCLOSE_LOG_FORMAT=json",
		"WXCLOSE_LOG_LEVEL=" + logLevel,
		"WXCLOSE_CONCURRENCY=" + strconv.Itoa(concurrency),
		// Closes WeChat Pay throttles anyway are snoozed for the first
		// backoff: keep it short so the test does not idle.
		"WXCLOSE_RETRY_INITIAL=1s",
		"WXCLOSE_RETRY_MAX=5s",
	}
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		f.t.Fatal(err)
	}
	f.procs = append(f.procs, cmd)
	f.outs = append(f.outs, out)
}

// stop ends every worker with SIGTERM (a clean shutdown) and waits.
func (f *fleet) stop() {
	for _, p := range f.procs {
		if p.ProcessState == nil {
			_ = p.Process.Signal(syscall.SIGTERM)
		}
	}
	for _, p := range f.procs {
		if p.ProcessState != nil {
			continue
		}
		done := make(chan struct{})
		go func() { _ = p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			_ = p.Process.Kill()
			<-done
		}
	}
}

func (f *fleet) logs() string {
	var b strings.Builder
	for i, o := range f.outs {
		s := o.String()
		if len(s) > 4000 {
			s = "..." + s[len(s)-4000:]
		}
		fmt.Fprintf(&b, "--- worker %d ---\n%s\n", i, s)
	}
	return b.String()
}

// enqueue registers n unpaid orders of mchid with the sandbox and enqueues
// their closes, all due in the same second, dueIn from now.
func (f *fleet) enqueue(prefix, mchid string, n int, dueIn time.Duration) []string {
	f.t.Helper()
	created := time.Now().Add(-tasks.MinCloseAge - tasks.DefaultCloseMargin + dueIn)
	nos := make([]string, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				no := fmt.Sprintf("%s-%06d", prefix, i)
				nos[i] = no
				f.sb.AddOrder(sandbox.Order{OutTradeNo: no, MchID: mchid, CreatedAt: created})
				if _, err := f.producer.EnqueueClose(context.Background(), tasks.CloseOrder{OutTradeNo: no, MchID: mchid, CreatedAt: created}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		f.t.Fatal(err)
	}
	return nos
}

// waitDone waits until done closes are completed and archived archived.
func (f *fleet) waitDone(completed, archived int, limit time.Duration) {
	f.t.Helper()
	waitUntil(f.t, fmt.Sprintf("%d closes completed and %d archived", completed, archived), limit, func() bool {
		q, err := f.inspector.GetQueueInfo(tasks.QueueClose)
		return err == nil && q.Completed >= completed && q.Archived >= archived && q.Active == 0 && q.Pending == 0 && q.Retry == 0 && q.Scheduled == 0
	}, func() string {
		q, _ := f.inspector.GetQueueInfo(tasks.QueueClose)
		return fmt.Sprintf("queue: %+v\n%s", q, f.logs())
	})
}

// retriesSpent sums the retries the completed closes spent (postponements
// spend none).
func (f *fleet) retriesSpent() int {
	f.t.Helper()
	spent := 0
	for page := 1; ; page++ {
		infos, err := f.inspector.ListCompletedTasks(tasks.QueueClose, asynq.PageSize(1000), asynq.Page(page))
		if err != nil {
			f.t.Fatal(err)
		}
		for _, in := range infos {
			spent += in.Retried
		}
		if len(infos) < 1000 {
			return spent
		}
	}
}

// closeStats counts the sandbox's close calls.
type closeStats struct {
	calls, closed, rateLimited, authFailed, early int
	first, last                                   time.Time
	times                                         []time.Time // accepted closes
}

func (f *fleet) stats() closeStats {
	var s closeStats
	for _, c := range f.sb.Calls() {
		if c.API != "v3" && c.API != "v2" {
			continue
		}
		s.calls++
		switch c.Outcome {
		case "rate_limited":
			s.rateLimited++
		case "auth_failed":
			s.authFailed++
		case "closed", "already_closed":
			s.closed++
			s.times = append(s.times, c.At)
		}
	}
	s.early = f.sb.EarlyCalls()
	slices.SortFunc(s.times, func(a, b time.Time) int { return a.Compare(b) })
	if len(s.times) > 0 {
		s.first, s.last = s.times[0], s.times[len(s.times)-1]
	}
	return s
}

// rates returns the mean accepted rate from skip after the first close to
// the last one, and the most closes accepted in any one-second window.
func (s closeStats) rates(skip time.Duration) (mean float64, maxWindow int) {
	from := s.first.Add(skip)
	n := 0
	for i, at := range s.times {
		if !at.Before(from) {
			n++
		}
		j := i
		for j < len(s.times) && s.times[j].Sub(at) < time.Second {
			j++
		}
		maxWindow = max(maxWindow, j-i)
	}
	if d := s.last.Sub(from).Seconds(); d > 0 {
		mean = float64(n) / d
	}
	return mean, maxWindow
}

// assertNoSecrets checks that no key reached a worker's output.
func (f *fleet) assertNoSecrets() {
	f.t.Helper()
	for id, c := range fleetKeys(f.t) {
		for _, secret := range []string{c.APIKey, c.APIv3Key} {
			for i, o := range f.outs {
				if strings.Contains(o.String(), secret) {
					f.t.Errorf("worker %d's output holds merchant %s's key", i, id)
				}
			}
		}
	}
}

// TestFleetClosesEachMerchantWithItsOwnKeys: one registry of a v3 and a v2
// merchant, one Redis, two worker processes. Every order is closed with
// its own merchant's signature (the sandbox verifies each request with
// that merchant's keys and refuses any other); an order of a merchant the
// registry does not have is archived with a reason naming it and the fix;
// after the merchant is added (SIGHUP) and the archive replayed by code,
// it is closed with its own keys.
func TestFleetClosesEachMerchantWithItsOwnKeys(t *testing.T) {
	f := startFleet(t, []fleetMerchant{{mchid: fleetMchA, name: "brand-a"}, {mchid: fleetMchB}}, sandbox.RateLimit{}, 2, 8, "info")
	const n = 30
	orders := map[string][]string{
		fleetMchA: f.enqueue("A", fleetMchA, n, time.Second),
		fleetMchB: f.enqueue("B", fleetMchB, n, time.Second),
	}
	orphan := f.enqueue("C", fleetMchC, 1, time.Second)[0]
	f.waitDone(2*n, 1, 2*time.Minute)

	for mchid, nos := range orders {
		for _, no := range nos {
			if o, _ := f.sb.Order(no); o.State != sandbox.StateClosed {
				t.Errorf("order %s of %s is %v, want closed", no, mchid, o.State)
			}
			for _, c := range f.sb.CallsFor(no) {
				if c.MchID != mchid || c.Outcome == "auth_failed" {
					t.Errorf("order %s of %s: call %+v, want every call signed as its own merchant and accepted", no, mchid, c)
				}
			}
		}
	}
	if calls := f.sb.CallsFor(orphan); len(calls) != 0 {
		t.Fatalf("the unknown merchant's order reached WeChat Pay: %+v", calls)
	}
	infos, err := f.inspector.ListArchivedTasks(tasks.QueueClose)
	if err != nil || len(infos) != 1 {
		t.Fatalf("archived: %d tasks, %v; want the unknown merchant's", len(infos), err)
	}
	for _, want := range []string{fleetMchC, "not configured", "enqueue replay --code " + closehandler.CodeUnknownMerchant} {
		if !strings.Contains(infos[0].LastErr, want) {
			t.Errorf("archive reason %q does not contain %q", infos[0].LastErr, want)
		}
	}
	if s := f.stats(); s.authFailed != 0 || s.early != 0 {
		t.Fatalf("sandbox: %d refused signatures, %d early calls; want none", s.authFailed, s.early)
	}

	// The fix the reason gives: add the merchant, reload, replay by code.
	f.writeRegistry([]fleetMerchant{{mchid: fleetMchA, name: "brand-a"}, {mchid: fleetMchB}, {mchid: fleetMchC}})
	for _, p := range f.procs {
		if err := p.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, "both workers reloaded the registry", 60*time.Second, func() bool {
		for _, o := range f.outs {
			if !strings.Contains(o.String(), "merchant registry reloaded") {
				return false
			}
		}
		return true
	}, f.logs)
	oc := ops.New(f.redis.Client(), tasks.ProducerConfig{})
	sum, err := oc.Replay(context.Background(), ops.ReplayOptions{Filter: ops.ReplayFilter{Code: closehandler.CodeUnknownMerchant}, Err: io.Discard})
	if err != nil || sum.Replayed != 1 {
		t.Fatalf("replay by code: %+v, %v; want 1 replayed", sum, err)
	}
	f.waitDone(2*n+1, 0, time.Minute)
	if o, _ := f.sb.Order(orphan); o.State != sandbox.StateClosed {
		t.Fatalf("the replayed order is %v, want closed", o.State)
	}
	if calls := f.sb.CallsFor(orphan); len(calls) != 1 || calls[0].MchID != fleetMchC || calls[0].Outcome != "closed" {
		t.Fatalf("the replayed order's calls: %+v, want one close signed as %s", calls, fleetMchC)
	}
	f.assertNoSecrets()
}

// TestFleetBurstWithinTheRateLimit: a burst of closes due at once for one
// merchant with rate_limit R, the sandbox enforcing R, two worker
// processes: no RATE_LIMITED answer, no retry spent, no early call, every
// order closed.
func TestFleetBurstWithinTheRateLimit(t *testing.T) {
	n := envInt(t, "WXCLOSE_FLEET_ORDERS", 1500)
	rate := envInt(t, "WXCLOSE_FLEET_RATE", 100)
	conc := envInt(t, "WXCLOSE_FLEET_CONCURRENCY", 20)
	f := startFleet(t, []fleetMerchant{{mchid: fleetMchA, rate: strconv.Itoa(rate)}}, sandbox.RateLimit{PerSecond: float64(rate)}, 2, conc, "warn")
	f.enqueue("BURST", fleetMchA, n, 3*time.Second)
	f.waitDone(n, 0, time.Duration(n/rate)*3*time.Second+2*time.Minute)

	s := f.stats()
	mean, maxWindow := s.rates(0)
	t.Logf("%d closes at R=%d/s, sandbox %d/s: %d calls, %d RATE_LIMITED, drained at %.1f/s (%.2f R) over %s, at most %d closes in any second",
		n, rate, rate, s.calls, s.rateLimited, mean, mean/float64(rate), s.last.Sub(s.first).Round(time.Millisecond), maxWindow)
	if s.closed != n || s.rateLimited != 0 || s.early != 0 || s.authFailed != 0 {
		t.Errorf("closed %d of %d, %d RATE_LIMITED, %d early, %d refused signatures; want all closed and no others", s.closed, n, s.rateLimited, s.early, s.authFailed)
	}
	if spent := f.retriesSpent(); spent != 0 {
		t.Errorf("%d retries spent, want 0", spent)
	}
	f.assertNoSecrets()
}

// TestFleetAdaptsToALowerLimit: the same burst while WeChat Pay (the
// sandbox) enforces less than the configured rate: the fleet lowers its
// shared rate when throttled, every order is closed, few calls are
// throttled and no retry budget is spent.
func TestFleetAdaptsToALowerLimit(t *testing.T) {
	n := envInt(t, "WXCLOSE_FLEET_ORDERS", 1500)
	rate := envInt(t, "WXCLOSE_FLEET_RATE", 100)
	low := envInt(t, "WXCLOSE_FLEET_LOW_RATE", 60)
	conc := envInt(t, "WXCLOSE_FLEET_CONCURRENCY", 20)
	f := startFleet(t, []fleetMerchant{{mchid: fleetMchA, name: "brand-a", rate: strconv.Itoa(rate)}}, sandbox.RateLimit{PerSecond: float64(low)}, 2, conc, "warn")
	f.enqueue("ADAPT", fleetMchA, n, 3*time.Second)
	f.waitDone(n, 0, time.Duration(n/low)*4*time.Second+2*time.Minute)

	s := f.stats()
	mean, maxWindow := s.rates(10 * time.Second)
	share := float64(s.rateLimited) / float64(s.calls)
	t.Logf("%d closes at R=%d/s, sandbox %d/s: %d calls, %d RATE_LIMITED (%.2f %%), effective %.1f/s (%.2f of the sandbox's) after the first 10 s, over %s, at most %d closes in any second",
		n, rate, low, s.calls, s.rateLimited, 100*share, mean, mean/float64(low), s.last.Sub(s.first).Round(time.Millisecond), maxWindow)
	if s.closed != n || s.early != 0 || s.authFailed != 0 {
		t.Errorf("closed %d of %d, %d early, %d refused signatures; want all closed and no others", s.closed, n, s.early, s.authFailed)
	}
	if s.rateLimited == 0 {
		t.Error("the sandbox never throttled: the test does not exercise the adaptive limit")
	}
	if share > 0.05 {
		t.Errorf("%d of %d calls (%.1f %%) were throttled, want at most 5 %%", s.rateLimited, s.calls, 100*share)
	}
	if spent := f.retriesSpent(); spent != 0 {
		t.Errorf("%d retries spent, want 0 (throttled closes are postponed)", spent)
	}
}

// waitUntil polls cond; the limit only bounds a broken run.
func waitUntil(t *testing.T, what string, limit time.Duration, cond func() bool, explain func() string) {
	t.Helper()
	for deadline := time.Now().Add(limit); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s\n%s", what, limit, explain())
		}
	}
}
