package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/wxclose/wxclose/internal/redistest"
	"github.com/wxclose/wxclose/tasks"
)

// runMainEnv makes the test binary behave as the enqueue command, so a test
// can run it as a process of its own and kill it.
const runMainEnv = "WXCLOSE_ENQUEUE_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		main()
		return
	}
	redistest.Main(m)
}

// TestReplayCrashSafe kills "enqueue replay --all" with SIGKILL at random
// points over a few thousand archived closes, and after every kill counts
// each close in asynq's lists: none may be lost, none may be in two places
// or twice in one. The old replay deleted a task and then enqueued it again
// in a second step, and lost the closes caught in between.
func TestReplayCrashSafe(t *testing.T) {
	const n = 3000
	srv := redistest.Start(t)
	if srv.Embedded {
		t.Skip("needs a real redis-server: the replaying process runs outside the test")
	}
	rdb := srv.Client()
	ids := archiveMany(t, srv, n)

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	for iter := 0; ; iter++ {
		left := countArchived(t, rdb)
		if left == 0 {
			break
		}
		if iter == 8 {
			t.Fatalf("%d tasks still archived after %d runs", left, iter)
		}
		// Kill after k replayed lines: somewhere in the run, with up to
		// --concurrency scripts in flight; the last run completes.
		k := 0
		if iter < 6 {
			k = 1 + rng.IntN(max(1, left/3))
		}
		replayed := runReplay(t, srv.URL, k)
		t.Logf("run %d: %d archived before, killed after %d replayed lines (0: ran to the end), saw %d", iter, left, k, replayed)
		checkEachOnce(t, rdb, ids)
	}
	if got := countIn(t, rdb, "scheduled") + countIn(t, rdb, "pending"); got != n {
		t.Errorf("%d tasks scheduled or pending after the last run, want %d", got, n)
	}
}

// archiveMany puts n close tasks in the archive the way asynq does: a
// worker fails them. A third are recent (a replay schedules them), the rest
// old (a replay makes them pending).
func archiveMany(t *testing.T, srv *redistest.Server, n int) map[string]bool {
	t.Helper()
	cl := asynq.NewClientFromRedisClient(srv.Client())
	ids := make(map[string]bool, n)
	for i := range n {
		created := time.Now().Add(-time.Hour)
		if i%3 == 0 {
			created = time.Now().Add(-time.Minute)
		}
		p := tasks.ClosePayload{OutTradeNo: fmt.Sprintf("K-%d", i), MchID: "1900000109", CreatedAt: created.UTC().Truncate(time.Second)}
		data, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		id := tasks.CloseTaskID(p.Ref())
		ids[id] = true
		if _, err := cl.Enqueue(asynq.NewTask(tasks.TypeClose, data), asynq.Queue(tasks.QueueClose), asynq.TaskID(id), asynq.MaxRetry(0)); err != nil {
			t.Fatal(err)
		}
	}
	w := asynq.NewServerFromRedisClient(srv.Client(), asynq.Config{
		Concurrency: 8, Queues: map[string]int{tasks.QueueClose: 1},
		TaskCheckInterval: 10 * time.Millisecond, LogLevel: asynq.FatalLevel,
	})
	err := w.Start(asynq.HandlerFunc(func(context.Context, *asynq.Task) error {
		return errors.New("wechat: transient: code=SYSTEM_ERROR status=500: busy")
	}))
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(60 * time.Second); countArchived(t, srv.Client()) < n; {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d tasks archived", countArchived(t, srv.Client()), n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	w.Shutdown()
	return ids
}

// runReplay runs "enqueue replay --all" as a process and SIGKILLs it after
// it printed killAfter "replayed" lines; 0 lets it finish. It returns the
// number of such lines seen.
func runReplay(t *testing.T, url string, killAfter int) int {
	t.Helper()
	cmd := exec.Command(os.Args[0], "replay", "--all", "--redis", url)
	cmd.Env = append(os.Environ(), runMainEnv+"=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	seen := 0
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "replayed ") {
			seen++
		}
		if killAfter > 0 && seen == killAfter {
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	_, _ = io.Copy(io.Discard, stdout) // Wait must not close the pipe under the reader
	err = cmd.Wait()
	if killAfter == 0 && err != nil {
		t.Fatalf("replay: %v\n%s", err, stderr.String())
	}
	if strings.Contains(stderr.String(), "failed ") {
		t.Errorf("replay reported failures:\n%s", stderr.String())
	}
	return seen
}

// checkEachOnce reads every list of the close queue in one transaction (a
// consistent snapshot) and checks that each close is in exactly one of
// them, once, with the matching state in its hash.
func checkEachOnce(t *testing.T, rdb *redis.Client, ids map[string]bool) {
	t.Helper()
	ctx := context.Background()
	key := func(s string) string { return "asynq:{" + tasks.QueueClose + "}:" + s }
	var zs map[string]*redis.StringSliceCmd
	var ls map[string]*redis.StringSliceCmd
	_, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		zs = map[string]*redis.StringSliceCmd{}
		ls = map[string]*redis.StringSliceCmd{}
		for _, z := range []string{"archived", "scheduled", "retry"} {
			zs[z] = p.ZRange(ctx, key(z), 0, -1)
		}
		for _, l := range []string{"pending", "active"} {
			ls[l] = p.LRange(ctx, key(l), 0, -1)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	where := map[string][]string{}
	for name, cmd := range zs {
		for _, id := range cmd.Val() {
			where[id] = append(where[id], name)
		}
	}
	for name, cmd := range ls {
		for _, id := range cmd.Val() {
			where[id] = append(where[id], name)
		}
	}
	lost, twice := 0, 0
	for id := range ids {
		switch len(where[id]) {
		case 0:
			lost++
			if lost <= 5 {
				t.Errorf("%s is lost", id)
			}
		case 1:
		default:
			twice++
			if twice <= 5 {
				t.Errorf("%s is in %v", id, where[id])
			}
		}
	}
	for id := range where {
		if !ids[id] {
			t.Errorf("unknown task %s", id)
		}
	}
	if lost+twice > 0 {
		t.Fatalf("%d closes lost, %d in more than one place", lost, twice)
	}
	// The hash agrees with the list (sampled: every 7th id, for speed).
	i := 0
	for id, w := range where {
		if i++; i%7 != 0 {
			continue
		}
		if st, err := rdb.HGet(ctx, key("t:"+id), "state").Result(); err != nil || st != w[0] {
			t.Errorf("%s is in %s but its state is %q (%v)", id, w[0], st, err)
		}
	}
}

func countIn(t *testing.T, rdb *redis.Client, list string) int {
	t.Helper()
	ctx := context.Background()
	key := "asynq:{" + tasks.QueueClose + "}:" + list
	var n int64
	var err error
	if list == "pending" {
		n, err = rdb.LLen(ctx, key).Result()
	} else {
		n, err = rdb.ZCard(ctx, key).Result()
	}
	if err != nil {
		t.Fatal(err)
	}
	return int(n)
}

func countArchived(t *testing.T, rdb *redis.Client) int { return countIn(t, rdb, "archived") }
