package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"

	"github.com/wxclose/wxclose/tasks"
	"github.com/wxclose/wxclose/wechat/sandbox"
)

// bench is one run: its processes, Redis, sandbox and results.
type bench struct {
	o      options
	log    io.Writer // progress lines
	dir    string
	procs  *procs
	redis  *redisServer
	report *report

	sandbox *sandbox.Server
	sbURL   string
	sbHTTP  *http.Server
	calls   *callLog
	creds   sandbox.Credentials
	keysDir string

	workerBin, profWorkerBin, enqueueBin, minimalBin string

	producer *tasks.Producer
}

// newBench builds the binaries and starts Redis and the sandbox. On error
// it has already stopped whatever it started.
func newBench(ctx context.Context, o options, getenv func(string) string, log io.Writer) (*bench, error) {
	b := &bench{o: o, log: log, procs: &procs{}, report: &report{Machine: machine()}}
	if err := b.start(ctx, getenv); err != nil {
		b.close()
		return nil, err
	}
	return b, nil
}

func (b *bench) start(ctx context.Context, getenv func(string) string) error {
	o := b.o
	var err error
	if b.dir, err = os.MkdirTemp("", "wxclose-bench-"); err != nil {
		return err
	}
	if err := b.build(ctx); err != nil {
		return err
	}
	if o.redisMode == "env" {
		b.redis, err = useRedisURL(ctx, getenv("REDIS_URL"))
	} else {
		settings := recommendedRedis
		if o.aof {
			settings = append(append([]string(nil), settings...), "appendonly", "yes", "appendfsync", "everysec")
		}
		b.redis, err = startRedis(ctx, b.procs, b.dir, "redis", settings)
	}
	if err != nil {
		return err
	}
	if v, err := b.redis.info(ctx, "server", "redis_version"); err == nil {
		b.report.Machine["redis"] = v
	}
	b.report.Machine["redis_mode"] = o.redisMode
	if o.aof {
		b.report.Machine["redis_mode"] += ", appendonly everysec"
	}
	if len(o.workerEnv) > 0 {
		b.report.Machine["worker_env"] = strings.Join(o.workerEnv, " ")
	}
	if v, err := b.redis.rdb.ConfigGet(ctx, "hash-max-listpack-value").Result(); err == nil {
		b.report.Machine["redis_hash_max_listpack_value"] = v["hash-max-listpack-value"]
	}
	return b.startSandbox()
}

func (b *bench) progress(format string, args ...any) {
	fmt.Fprintf(b.log, "bench: "+format+"\n", args...)
}

// close stops every process the bench started and removes its files.
func (b *bench) close() {
	b.procs.stopAll()
	if b.redis != nil {
		b.redis.close()
	}
	if b.sbHTTP != nil {
		b.sbHTTP.Close()
	}
	if b.dir != "" {
		if b.o.keep {
			b.progress("kept %s", b.dir)
		} else {
			os.RemoveAll(b.dir)
		}
	}
}

// build compiles cmd/worker, cmd/enqueue and cmd/bench/minimalworker as
// production builds (go build), and with -profile a worker that also
// serves net/http/pprof.
func (b *bench) build(ctx context.Context) error {
	root, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	if b.o.runs("v3") || b.o.runs("v2") || b.o.runs("burst") || b.o.runs("rss") || b.o.runs("ratelimit") || b.o.runs("capacity") ||
		b.o.runs("api") || b.o.runs("webhook") {
		b.progress("building cmd/worker")
		b.workerBin = filepath.Join(b.dir, "worker")
		if err := goBuild(ctx, root, b.workerBin, "./cmd/worker"); err != nil {
			return err
		}
	}
	if b.o.runs("minimal") && (b.o.runs("v3") || b.o.runs("v2")) {
		b.progress("building cmd/bench/minimalworker")
		b.minimalBin = filepath.Join(b.dir, "minimalworker")
		if err := goBuild(ctx, root, b.minimalBin, "./cmd/bench/minimalworker"); err != nil {
			return err
		}
	}
	if b.o.runs("bulk") {
		b.progress("building cmd/enqueue")
		b.enqueueBin = filepath.Join(b.dir, "enqueue")
		if err := goBuild(ctx, root, b.enqueueBin, "./cmd/enqueue"); err != nil {
			return err
		}
	}
	if b.o.profileDir == "" || !(b.o.runs("v3") || b.o.runs("v2")) {
		return nil
	}
	if err := os.MkdirAll(b.o.profileDir, 0o755); err != nil {
		return err
	}
	overlay, err := writeProfileOverlay(b.dir, root)
	if err != nil {
		return err
	}
	b.profWorkerBin = filepath.Join(b.dir, "worker-pprof")
	return goBuild(ctx, root, b.profWorkerBin, "-overlay", overlay, "./cmd/worker")
}

func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, goTool(), "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("run the bench inside the wxclose module (go run ./cmd/bench)")
	}
	return filepath.Dir(mod), nil
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(os.Getenv("GOROOT"), "bin", "go")
}

// goBuild runs go build -o out args... in root. Its process group is
// killed if ctx ends, so a Ctrl-C does not leave compilers running.
func goBuild(ctx context.Context, root, out string, args ...string) error {
	cmd := exec.CommandContext(ctx, goTool(), append([]string{"build", "-o", out}, args...)...)
	cmd.Dir = root
	cmd.SysProcAttr = childAttr()
	cmd.Cancel = func() error { return killGroup(cmd.Process.Pid) }
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// startSandbox serves the WeChat Pay sandbox on a free loopback port, with
// fresh keys written where the worker's key files point.
func (b *bench) startSandbox() error {
	creds, err := sandbox.GenerateCredentials("", "")
	if err != nil {
		return err
	}
	b.keysDir = filepath.Join(b.dir, "keys")
	if err := creds.WriteFiles(b.keysDir); err != nil {
		return err
	}
	sb, err := sandbox.New(sandbox.Options{Credentials: creds, CacheResponseSignatures: true})
	if err != nil {
		return err
	}
	b.sandbox, b.creds = sb, sb.Credentials()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	b.calls = &callLog{}
	b.sbHTTP = &http.Server{Handler: b.calls.wrap(sb.Handler()), ReadHeaderTimeout: 10 * time.Second,
		ConnState: func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				b.calls.conns.Add(1)
			}
		}}
	go func() { _ = b.sbHTTP.Serve(ln) }() // ends with ErrServerClosed at cleanup
	b.sbURL = "http://" + ln.Addr().String()
	return nil
}

// callLog times every close call that reaches the sandbox, cheaply enough
// to run during a measurement (the sandbox's own Calls copies its whole
// record on each read).
type callLog struct {
	n     atomic.Int64
	conns atomic.Int64 // connections the sandbox accepted
	mu    sync.Mutex
	calls []call
}

type call struct {
	at    time.Time // when the request reached the sandbox
	order string    // out_trade_no of a v3 close; empty for v2
}

func (l *callLog) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		isV3 := strings.HasSuffix(r.URL.Path, "/close")
		if r.Method != http.MethodPost || !(isV3 || r.URL.Path == "/pay/closeorder") {
			h.ServeHTTP(w, r)
			return
		}
		c := call{at: time.Now()}
		if isV3 {
			if _, rest, ok := strings.Cut(r.URL.Path, "/out-trade-no/"); ok {
				c.order = strings.TrimSuffix(rest, "/close")
			}
		}
		h.ServeHTTP(w, r)
		l.mu.Lock()
		l.calls = append(l.calls, c)
		l.mu.Unlock()
		l.n.Add(1)
	})
}

func (l *callLog) count() int { return int(l.n.Load()) }

// since returns the calls recorded after the first from.
func (l *callLog) since(from int) []call {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]call(nil), l.calls[min(from, len(l.calls)):]...)
}

// workerRun is one worker child process.
type workerRun struct {
	*child
	httpAddr  string
	pprofAddr string // empty unless profiling
}

// startWorker runs the built worker as an operator would, configured by
// closeWorkerEnv and -worker-env, its log going to a file.
func (b *bench) startWorker(ctx context.Context, name, api string, concurrency int, profile bool) (*workerRun, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	w := &workerRun{httpAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
	env, err := b.closeWorkerEnv(api, concurrency)
	if err != nil {
		return nil, err
	}
	env = append(env, "WXCLOSE_HTTP_ADDR="+w.httpAddr)
	// Last, so that they win over the values above.
	env = append(env, b.o.workerEnv...)
	bin := b.workerBin
	if profile {
		pp, err := freePort()
		if err != nil {
			return nil, err
		}
		w.pprofAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(pp))
		env = append(env, profileAddrEnv+"="+w.pprofAddr)
		bin = b.profWorkerBin
	}
	cmd := exec.Command(bin)
	cmd.Env = env
	cmd.Dir = b.dir
	if w.child, err = b.procs.start(name, cmd, filepath.Join(b.dir, name+".log")); err != nil {
		return nil, err
	}
	if err := w.awaitReady(ctx); err != nil {
		w.kill()
		return nil, err
	}
	return w, nil
}

// closeWorkerEnv is the environment a close worker for api reads, as an
// operator sets it: the sandbox's credentials (keys in files), Redis,
// concurrency and JSON logs at info level. The bench's own WECHATPAY_*,
// WXCLOSE_*, REDIS_URL and Go runtime tuning variables are not passed on.
func (b *bench) closeWorkerEnv(api string, concurrency int) ([]string, error) {
	env := cleanEnv()
	keys, err := readEnvFile(filepath.Join(b.keysDir, "sandbox.env"))
	if err != nil {
		return nil, err
	}
	switch api {
	case "v3":
		for k, v := range keys {
			if k != "WECHATPAY_API_KEY" && k != "WECHATPAY_APPID" {
				env = append(env, k+"="+v)
			}
		}
	case "v2":
		for _, k := range []string{"WECHATPAY_MCHID", "WECHATPAY_APPID", "WECHATPAY_API_KEY"} {
			env = append(env, k+"="+keys[k])
		}
	}
	return append(env,
		"WECHATPAY_API="+api,
		"WECHATPAY_BASE_URL="+b.sbURL,
		"REDIS_URL="+b.redis.url,
		"WXCLOSE_CONCURRENCY="+strconv.Itoa(concurrency),
		"WXCLOSE_LOG_LEVEL=info",
		"WXCLOSE_LOG_FORMAT=json",
		// The figures are the worker's own; the ratelimit section sets a
		// limit where it measures one.
		"WXCLOSE_RATE_LIMIT=off",
	), nil
}

// awaitReady waits until the worker's /readyz answers 200.
func (w *workerRun) awaitReady(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		if !w.running() {
			return fmt.Errorf("%s exited at start: %w\n%s", w.name, w.exitErr(), w.logTail())
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+w.httpAddr+"/readyz", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not become ready within 30s:\n%s", w.name, w.logTail())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// shutdown stops the worker as an orchestrator does (SIGTERM) and fails if
// it does not exit cleanly.
func (w *workerRun) shutdown() error {
	if err := w.stop(45 * time.Second); err != nil {
		return fmt.Errorf("%w\n%s", err, w.logTail())
	}
	return nil
}

// cleanEnv is the bench's environment without the variables that would
// configure the worker or tune the Go runtime differently from production.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "WECHATPAY_"), strings.HasPrefix(k, "WXCLOSE_"), k == "REDIS_URL",
			k == "GOGC", k == "GOMEMLIMIT", k == "GOMAXPROCS", k == "GODEBUG":
			continue
		}
		env = append(env, kv)
	}
	return env
}

// readEnvFile reads the KEY=VALUE lines of the sandbox.env file written
// with the keys.
func readEnvFile(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok {
			m[k] = v
		}
	}
	return m, sc.Err()
}

// queueDrained waits until the close_order queue has nothing pending,
// active, scheduled or retrying, and returns its counts.
func (b *bench) queueDrained(ctx context.Context, timeout time.Duration) (*asynq.QueueInfo, error) {
	return b.drained(ctx, tasks.QueueClose, timeout)
}

// drained waits until queue has nothing pending, active, scheduled or
// retrying, and returns its counts.
func (b *bench) drained(ctx context.Context, queue string, timeout time.Duration) (*asynq.QueueInfo, error) {
	insp := asynq.NewInspectorFromRedisClient(b.redis.rdb)
	deadline := time.Now().Add(timeout)
	for {
		qi, err := insp.GetQueueInfo(queue)
		if err == nil && qi.Pending+qi.Active+qi.Scheduled+qi.Retry == 0 {
			return qi, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if time.Now().After(deadline) {
			return qi, fmt.Errorf("queue %s not drained after %s: %+v (err %w)", queue, timeout, qi, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
