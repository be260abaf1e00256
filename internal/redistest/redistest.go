// Package redistest gives each test its own Redis.
//
//	func TestEnqueue(t *testing.T) {
//		srv := redistest.Start(t)
//		client := asynq.NewClient(srv.ConnOpt())
//		defer client.Close()
//		...
//		n, err := srv.Client().ZCard(ctx, "asynq:{close_order}:scheduled").Result()
//	}
//
// # Design
//
// Every call to Start launches a private redis-server for the calling test
// and stops it in tb.Cleanup. A server starts and answers PING in about
// 15 ms, so one per test costs little, and it buys full isolation with no
// bookkeeping: no TestMain hook to forget (Main exists but is optional), no database numbers to hand out,
// and a test may FLUSHALL, CONFIG SET or otherwise abuse its server without
// disturbing a parallel test. (A shared per-binary server with one DB per
// test would be faster but can only be stopped from TestMain, leaks a
// process whenever a package forgets that hook, and shares CONFIG, INFO and
// FLUSHALL between tests.)
//
// The private server listens on a free loopback port (never 6379), keeps no
// data on disk (--save "" --appendonly no, working directory in
// tb.TempDir) and, on Linux, is killed by the kernel if the test binary dies
// without running its cleanups (a panic or -timeout).
//
// # Choosing the Redis
//
// The environment variable WXCLOSE_TEST_REDIS selects what Start returns:
//
//   - unset or empty: a private redis-server if one is on PATH; otherwise
//     an embedded miniredis (github.com/alicebob/miniredis/v2), with a
//     test log line saying so. miniredis runs every asynq feature wxclose
//     uses, but it is not Redis: keys do not expire in real time and its
//     Lua and timing differ. Install redis-server to test against the real
//     thing.
//   - "server": a private redis-server, failing the test if none is on PATH
//     (for CI, so that a missing binary cannot silently downgrade the run).
//   - "embedded": an embedded miniredis, even if redis-server is installed.
//   - a redis://, rediss:// or unix:// URL: that server and database. Start
//     never flushes it, but tests write keys into it and do not clean up, and
//     every test in every package shares it, so tests are not isolated from
//     each other. Use an empty database of a server you can throw away, and
//     run one package at a time (go test -p 1).
package redistest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// EnvVar is the environment variable that selects the Redis used by Start.
const EnvVar = "WXCLOSE_TEST_REDIS"

// Server is a Redis server reserved for one test (unless WXCLOSE_TEST_REDIS
// names an external server).
type Server struct {
	// Addr is the server's host:port, for example "127.0.0.1:41234" (for a
	// unix:// URL, the socket path).
	Addr string
	// URL addresses the server and database, for example
	// "redis://127.0.0.1:41234/0", in the form asynq.ParseRedisURI and
	// redis.ParseURL accept.
	URL string
	// DB is the database number tests should use.
	DB int
	// Embedded is true when the server is an in-process miniredis rather than
	// a real Redis.
	Embedded bool

	opts   redis.Options
	client *redis.Client
}

// ConnOpt returns the connection options asynq.NewClient,
// asynq.NewServer and asynq.NewInspector need.
func (s *Server) ConnOpt() asynq.RedisClientOpt {
	return asynq.RedisClientOpt{
		Network:   s.opts.Network,
		Addr:      s.opts.Addr,
		Username:  s.opts.Username,
		Password:  s.opts.Password,
		DB:        s.opts.DB,
		TLSConfig: s.opts.TLSConfig,
	}
}

// Client returns a go-redis client connected to the server's database, for
// seeding data and making assertions. It is shared by every caller, safe for
// concurrent use, and closed when the test ends: do not close it.
func (s *Server) Client() *redis.Client { return s.client }

// Main runs the package's tests and exits with their status. Calling it is
// optional: Start needs no process-wide setup or teardown, because every
// server belongs to one test and stops in that test's cleanup. It exists so
// that a package may write
//
//	func TestMain(m *testing.M) { redistest.Main(m) }
//
// and pick up any process-wide setup this package adds later.
func Main(m *testing.M) {
	os.Exit(m.Run())
}

// Start returns a Redis for the calling test, chosen as the package
// documentation describes, and registers its shutdown with tb.Cleanup. It
// fails the test (tb.Fatal) if the server cannot be started or reached.
func Start(tb testing.TB) *Server {
	tb.Helper()
	m, err := parseMode(os.Getenv(EnvVar))
	if err != nil {
		tb.Fatal(err)
	}
	var s *Server
	switch m.kind {
	case modeAuto:
		bin, err := exec.LookPath("redis-server")
		if err != nil {
			tb.Log("redistest: redis-server is not installed (not found on PATH): these tests run against the embedded miniredis store, not a real Redis")
			s = startEmbedded(tb)
			break
		}
		s = startPrivate(tb, bin)
	case modeServer:
		bin, err := exec.LookPath("redis-server")
		if err != nil {
			tb.Fatalf("redistest: %s=server but redis-server is not on PATH: install it (Debian: apt-get install redis-server) or unset %[1]s", EnvVar)
		}
		s = startPrivate(tb, bin)
	case modeEmbedded:
		tb.Logf("redistest: %s=embedded: these tests run against the embedded miniredis store, not a real Redis", EnvVar)
		s = startEmbedded(tb)
	case modeExternal:
		s = &Server{Addr: m.opts.Addr, URL: m.url, DB: m.opts.DB, opts: *m.opts}
	}
	s.client = redis.NewClient(&s.opts)
	tb.Cleanup(func() { _ = s.client.Close() })
	if m.kind == modeExternal {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.client.Ping(ctx).Err(); err != nil {
			tb.Fatalf("redistest: %s names a server that does not answer PING: %v", EnvVar, err)
		}
	}
	return s
}

type modeKind int

const (
	modeAuto modeKind = iota
	modeServer
	modeEmbedded
	modeExternal
)

type mode struct {
	kind modeKind
	url  string         // modeExternal only
	opts *redis.Options // modeExternal only
}

// parseMode interprets the value of EnvVar.
func parseMode(v string) (mode, error) {
	switch v {
	case "":
		return mode{kind: modeAuto}, nil
	case "server":
		return mode{kind: modeServer}, nil
	case "embedded":
		return mode{kind: modeEmbedded}, nil
	}
	if strings.HasPrefix(v, "redis://") || strings.HasPrefix(v, "rediss://") || strings.HasPrefix(v, "unix://") {
		opts, err := redis.ParseURL(v)
		if err != nil {
			// The URL may hold a password: report the parser's error only.
			return mode{}, fmt.Errorf("redistest: %s is not a usable Redis URL: %v", EnvVar, err)
		}
		return mode{kind: modeExternal, url: v, opts: opts}, nil
	}
	return mode{}, fmt.Errorf(`redistest: %s=%q: want "" (redis-server if installed, else embedded), "server", "embedded" or a redis:// URL`, EnvVar, v)
}

func startEmbedded(tb testing.TB) *Server {
	tb.Helper()
	m := miniredis.NewMiniRedis()
	if err := m.Start(); err != nil {
		tb.Fatalf("redistest: starting embedded miniredis: %v", err)
	}
	tb.Cleanup(m.Close)
	return &Server{
		Addr:     m.Addr(),
		URL:      "redis://" + m.Addr() + "/0",
		Embedded: true,
		opts:     redis.Options{Addr: m.Addr()},
	}
}

// errPortTaken means the chosen port was taken between picking it and the
// server binding it; another port may work.
var errPortTaken = errors.New("port taken")

// startPrivate launches redis-server on a free loopback port, retrying with
// another port if the first is taken in the meantime.
func startPrivate(tb testing.TB, bin string) *Server {
	tb.Helper()
	dir := tb.TempDir()
	const attempts = 5
	var err error
	for range attempts {
		var port int
		port, err = freePort()
		if err != nil {
			break
		}
		var p *process
		p, err = launch(bin, dir, port)
		if errors.Is(err, errPortTaken) {
			err = fmt.Errorf("the free port picked was taken before redis-server could bind it, %d times", attempts)
			continue
		}
		if err != nil {
			break
		}
		tb.Cleanup(p.stop)
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		return &Server{
			Addr: addr,
			URL:  "redis://" + addr + "/0",
			opts: redis.Options{Addr: addr},
		}
	}
	tb.Fatalf("redistest: starting %s: %v", bin, err)
	return nil
}

// freePort returns a loopback TCP port that was free a moment ago. 6379 is
// never returned, so a test cannot reach the machine's default Redis.
func freePort() (int, error) {
	for range 10 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("finding a free loopback port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		if port != 6379 {
			return port, nil
		}
	}
	return 0, errors.New("finding a free loopback port: only 6379 was offered")
}

// process is a running redis-server.
type process struct {
	cmd    *exec.Cmd
	log    *os.File
	exited chan struct{} // closed once cmd.Wait has returned
}

// launch starts redis-server on port and waits until it answers PING. It
// returns errPortTaken if the port turned out to be in use, including by
// another Redis that answered in place of ours.
func launch(bin, dir string, port int) (*process, error) {
	return launchArgs(bin, dir, port,
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", dir,
		"--daemonize", "no",
		"--logfile", "", // to stdout, which is logFile
	)
}

// launchArgs is launch with the server's whole command line given (the
// topologies of topology.go add replication, cluster or sentinel settings);
// args must make it listen on 127.0.0.1:port.
func launchArgs(bin, dir string, port int, args ...string) (*process, error) {
	logPath := filepath.Join(dir, fmt.Sprintf("redis-%d.log", port))
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, err
	}
	p := &process{cmd: cmd, log: logFile, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		_ = logFile.Close()
		close(p.exited)
	}()

	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-p.exited:
			out := readLog(logPath)
			if bytes.Contains(out, []byte("Address already in use")) {
				return nil, errPortTaken
			}
			return nil, fmt.Errorf("redis-server exited before answering; its output:\n%s", out)
		default:
		}
		// Poll with plain dials: go-redis throttles a pool after failed
		// dials, which would add ~100 ms to every start.
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.Close()
			if err = checkOwner(addr, cmd.Process.Pid); err == nil {
				return p, nil
			}
			if errors.Is(err, errPortTaken) {
				p.stop()
				return nil, err
			}
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("redis-server did not answer on %s within 10s (last error: %v); its output:\n%s", addr, err, readLog(logPath))
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// checkOwner asks the server at addr for its process id and returns
// errPortTaken if it is not pid: someone else's Redis took the port between
// freePort and our bind (ours will then exit, or be stopped by the caller).
func checkOwner(addr string, pid int) error {
	probe := redis.NewClient(&redis.Options{
		Addr:        addr,
		MaxRetries:  -1,
		DialTimeout: time.Second,
		ReadTimeout: time.Second,
		PoolSize:    1,
	})
	defer probe.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	info, err := probe.Info(ctx, "server").Result()
	if err != nil {
		return err
	}
	if got := infoField(info, "process_id"); got != strconv.Itoa(pid) {
		return errPortTaken
	}
	return nil
}

// stop kills redis-server and waits for it to exit. The server holds no
// data worth saving, and SIGTERM would cost up to 100 ms per test: Redis acts
// on it only in its next cron tick.
func (p *process) stop() {
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// readLog returns the end of a redis-server log, for error messages.
func readLog(path string) []byte {
	b, err := os.ReadFile(path)
	if err != nil {
		return []byte("(log unavailable: " + err.Error() + ")")
	}
	const keep = 4 << 10
	if len(b) > keep {
		b = b[len(b)-keep:]
	}
	return b
}

// infoField returns the value of field in the text of an INFO reply.
func infoField(info, field string) string {
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return v
		}
	}
	return ""
}
