package redistest_test

import (
	"context"
	"errors"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/wxclose/wxclose/internal/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// checkWorks checks that srv answers through both of its clients.
func checkWorks(t *testing.T, srv *redistest.Server) {
	t.Helper()
	ctx := context.Background()
	if err := srv.Client().Ping(ctx).Err(); err != nil {
		t.Fatalf("PING: %v", err)
	}
	if err := srv.Client().Set(ctx, "redistest:k", "v", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	if got, err := srv.Client().Get(ctx, "redistest:k").Result(); err != nil || got != "v" {
		t.Fatalf("GET = %q, %v; want \"v\"", got, err)
	}

	client := asynq.NewClient(srv.ConnOpt())
	defer client.Close()
	if _, err := client.Enqueue(asynq.NewTask("test:ping", nil), asynq.ProcessIn(time.Hour)); err != nil {
		t.Fatalf("asynq Enqueue: %v", err)
	}
	if n := scheduled(t, srv); n != 1 {
		t.Fatalf("scheduled tasks = %d after one Enqueue, want 1", n)
	}
}

// scheduled returns how many scheduled tasks the default queue holds.
func scheduled(t *testing.T, srv *redistest.Server) int {
	t.Helper()
	insp := asynq.NewInspector(srv.ConnOpt())
	defer insp.Close()
	tasks, err := insp.ListScheduledTasks("default")
	if errors.Is(err, asynq.ErrQueueNotFound) {
		return 0
	}
	if err != nil {
		t.Fatalf("ListScheduledTasks: %v", err)
	}
	return len(tasks)
}

func TestStart(t *testing.T) {
	t.Setenv(redistest.EnvVar, "")
	srv := redistest.Start(t)
	checkWorks(t, srv)

	host, port, err := net.SplitHostPort(srv.Addr)
	if err != nil || host != "127.0.0.1" || port == "6379" {
		t.Fatalf("Addr = %q, want 127.0.0.1 and a port other than 6379", srv.Addr)
	}
	opt, err := asynq.ParseRedisURI(srv.URL)
	if err != nil {
		t.Fatalf("asynq.ParseRedisURI(%q): %v", srv.URL, err)
	}
	if got := opt.(asynq.RedisClientOpt); got.Addr != srv.Addr || got.DB != srv.DB {
		t.Fatalf("URL %q parses to %s db %d, want %s db %d", srv.URL, got.Addr, got.DB, srv.Addr, srv.DB)
	}
	_, lookErr := exec.LookPath("redis-server")
	if srv.Embedded != (lookErr != nil) {
		t.Fatalf("Embedded = %v, but redis-server on PATH: %v", srv.Embedded, lookErr == nil)
	}
}

func TestStartIsolated(t *testing.T) {
	t.Setenv(redistest.EnvVar, "")
	a, b := redistest.Start(t), redistest.Start(t)
	checkWorks(t, a)
	if a.Addr == b.Addr && a.DB == b.DB {
		t.Fatalf("two Start calls returned the same database %s/%d", a.Addr, a.DB)
	}
	n, err := b.Client().Exists(context.Background(), "redistest:k").Result()
	if err != nil || n != 0 {
		t.Fatalf("EXISTS in the second server = %d, %v; want 0", n, err)
	}
	if n := scheduled(t, b); n != 0 {
		t.Fatalf("second server has %d scheduled tasks, want 0", n)
	}
}

func TestEmbedded(t *testing.T) {
	t.Setenv(redistest.EnvVar, "embedded")
	srv := redistest.Start(t)
	if !srv.Embedded {
		t.Fatalf("Embedded = false with %s=embedded", redistest.EnvVar)
	}
	checkWorks(t, srv)
}

func TestServerStopsAtCleanup(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server is not installed")
	}
	t.Setenv(redistest.EnvVar, "server")
	var addr string
	t.Run("inner", func(t *testing.T) {
		srv := redistest.Start(t)
		if srv.Embedded {
			t.Fatalf("Embedded = true with %s=server", redistest.EnvVar)
		}
		info, err := srv.Client().Info(context.Background(), "server").Result()
		if err != nil || !strings.Contains(info, "redis_version:") {
			t.Fatalf("INFO server = %.100q, %v", info, err)
		}
		addr = srv.Addr
	})
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatalf("%s still accepts connections after the test that started it ended", addr)
	}
}

func TestExternal(t *testing.T) {
	t.Setenv(redistest.EnvVar, "")
	target := redistest.Start(t)

	t.Setenv(redistest.EnvVar, "redis://"+target.Addr+"/3")
	srv := redistest.Start(t)
	if srv.Embedded || srv.Addr != target.Addr || srv.DB != 3 || srv.ConnOpt().DB != 3 {
		t.Fatalf("Start with %s=redis://%s/3 = %+v", redistest.EnvVar, target.Addr, srv)
	}
	checkWorks(t, srv)

	// The key landed in DB 3 of the target, not in its DB 0.
	ctx := context.Background()
	db3 := redis.NewClient(&redis.Options{Addr: target.Addr, DB: 3})
	defer db3.Close()
	if n, err := db3.Exists(ctx, "redistest:k").Result(); err != nil || n != 1 {
		t.Fatalf("EXISTS in DB 3 = %d, %v; want 1", n, err)
	}
	if n, err := target.Client().Exists(ctx, "redistest:k").Result(); err != nil || n != 0 {
		t.Fatalf("EXISTS in DB 0 = %d, %v; want 0", n, err)
	}
}
