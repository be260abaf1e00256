package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// recommendedRedis are the Redis settings the bench runs with and the
// README recommends for memory: asynq keeps each task as a hash whose msg
// field (the encoded task, about 300 bytes for a close) is longer than
// Redis' default listpack limit of 64 bytes, which turns every task hash
// into a real hash table. See the memory section for the measured effect.
var recommendedRedis = []string{"hash-max-listpack-value", "512"}

// redisServer is the Redis a bench run uses: a private redis-server (owned)
// or the database REDIS_URL names.
type redisServer struct {
	url   string
	owned bool   // private: the bench may FLUSHALL it
	proc  *child // nil unless owned
	opt   asynq.RedisConnOpt
	rdb   redis.UniversalClient
}

// startRedis starts a private redis-server on a free loopback port (never
// 6379), without persistence, with the given extra settings (name, value
// pairs), and waits until it answers.
func startRedis(ctx context.Context, ps *procs, dir, name string, settings []string) (*redisServer, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, errors.New("redis-server is not on PATH: install it (Debian: apt-get install redis-server), or pass -redis=env with REDIS_URL naming an empty database you can throw away")
	}
	var lastErr error
	for range 5 {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		// Settings later on the command line win, so settings may turn
		// persistence on.
		args := []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
			"--dir", dir, "--daemonize", "no", "--logfile", ""}
		for i := 0; i+1 < len(settings); i += 2 {
			args = append(args, "--"+settings[i], settings[i+1])
		}
		c, err := ps.start(name, exec.Command(bin, args...), filepath.Join(dir, fmt.Sprintf("%s-%d.log", name, port)))
		if err != nil {
			return nil, err
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		r := &redisServer{url: "redis://" + addr + "/0", owned: true, proc: c, opt: asynq.RedisClientOpt{Addr: addr}}
		if lastErr = r.await(ctx, c); lastErr == nil {
			r.rdb = redis.NewClient(&redis.Options{Addr: addr, PoolSize: 64})
			return r, nil
		}
		c.kill()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	return nil, fmt.Errorf("redis-server did not start: %w", lastErr)
}

// await waits until the server on r answers and is the process c (another
// Redis may have taken the port in between).
func (r *redisServer) await(ctx context.Context, c *child) error {
	addr := r.opt.(asynq.RedisClientOpt).Addr
	probe := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second})
	defer probe.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if !c.running() {
			return fmt.Errorf("redis-server exited: %s", c.logTail())
		}
		info, err := probe.Info(ctx, "server").Result()
		if err == nil {
			if infoField(info, "process_id") != strconv.Itoa(c.pid()) {
				return errors.New("another server took the port")
			}
			return nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("redis-server on %s did not answer: %v", addr, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// useRedisURL connects to the database url names. It must be empty: the
// bench writes asynq keys there and deletes them between measurements, and
// a worker it starts would otherwise close someone else's orders.
func useRedisURL(ctx context.Context, url string) (*redisServer, error) {
	if url == "" {
		return nil, errors.New("-redis=env needs REDIS_URL")
	}
	opt, err := asynq.ParseRedisURI(url)
	if err != nil {
		return nil, fmt.Errorf("REDIS_URL is not a Redis URL: %v", err)
	}
	rdb, ok := opt.MakeRedisClient().(redis.UniversalClient)
	if !ok {
		return nil, fmt.Errorf("REDIS_URL: unsupported connection type %T", opt)
	}
	n, err := rdb.DBSize(ctx).Result()
	if err != nil {
		rdb.Close()
		return nil, fmt.Errorf("REDIS_URL: %v", err)
	}
	if n != 0 {
		rdb.Close()
		return nil, fmt.Errorf("REDIS_URL names a database with %d keys; the bench needs an empty database it may fill and empty (it never flushes)", n)
	}
	return &redisServer{url: url, opt: opt, rdb: rdb}, nil
}

// reset removes every key the previous measurement left. A private server
// is flushed; in a REDIS_URL database (empty when the bench started) the
// bench deletes the asynq keys it created, and nothing else.
func (r *redisServer) reset(ctx context.Context) error {
	if r.owned {
		return r.rdb.FlushAll(ctx).Err()
	}
	iter := r.rdb.Scan(ctx, 0, "asynq:*", 1000).Iterator()
	var batch []string
	for iter.Next(ctx) {
		if batch = append(batch, iter.Val()); len(batch) == 500 {
			if err := r.rdb.Unlink(ctx, batch...).Err(); err != nil {
				return err
			}
			batch = batch[:0]
		}
	}
	if err := iter.Err(); err != nil {
		return err
	}
	if len(batch) > 0 {
		return r.rdb.Unlink(ctx, batch...).Err()
	}
	return nil
}

func (r *redisServer) info(ctx context.Context, section, field string) (string, error) {
	info, err := r.rdb.Info(ctx, section).Result()
	if err != nil {
		return "", err
	}
	v := infoField(info, field)
	if v == "" {
		return "", fmt.Errorf("INFO %s has no %s", section, field)
	}
	return v, nil
}

func (r *redisServer) usedMemory(ctx context.Context) (int64, error) {
	v, err := r.info(ctx, "memory", "used_memory")
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(v, 10, 64)
}

// cpu returns the CPU time the server has used (INFO cpu), so that its
// share of a measurement can be reported.
func (r *redisServer) cpu(ctx context.Context) (time.Duration, error) {
	info, err := r.rdb.Info(ctx, "cpu").Result()
	if err != nil {
		return 0, err
	}
	var total float64
	for _, f := range []string{"used_cpu_sys", "used_cpu_user"} {
		v, err := strconv.ParseFloat(infoField(info, f), 64)
		if err != nil {
			return 0, fmt.Errorf("INFO cpu %s: %v", f, err)
		}
		total += v
	}
	return time.Duration(total * float64(time.Second)), nil
}

// commandCalls returns INFO commandstats' call counts by command. Redis
// counts the commands asynq's Lua scripts run as well; evalsha is the
// number of script round trips.
func (r *redisServer) commandCalls(ctx context.Context) (map[string]int64, error) {
	info, err := r.rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		return nil, err
	}
	m := map[string]int64{}
	for line := range strings.SplitSeq(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimPrefix(strings.TrimSpace(line), "cmdstat_"), ":calls=")
		if !ok {
			continue
		}
		calls, _, _ := strings.Cut(rest, ",")
		if n, err := strconv.ParseInt(calls, 10, 64); err == nil {
			m[name] = n
		}
	}
	return m, nil
}

// commandsPer describes the commands Redis ran between two commandCalls
// snapshots, per operation, leaving out those below 0.05 per operation
// and the bench's own INFO calls.
func commandsPer(a, z map[string]int64, n int) string {
	type kv struct {
		name string
		per  float64
	}
	var l []kv
	for name, calls := range z {
		if per := float64(calls-a[name]) / float64(n); per >= 0.05 && name != "info" {
			l = append(l, kv{name, per})
		}
	}
	slices.SortFunc(l, func(x, y kv) int { return cmp.Compare(y.per, x.per) })
	var b strings.Builder
	for i, x := range l {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %.2f", x.name, x.per)
	}
	return b.String()
}

func (r *redisServer) close() {
	if r.rdb != nil {
		r.rdb.Close()
	}
	if r.proc != nil {
		r.proc.kill()
	}
}

// freePort returns a loopback TCP port that was free a moment ago, never
// 6379.
func freePort() (int, error) {
	for range 10 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("finding a free loopback port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if port != 6379 {
			return port, nil
		}
	}
	return 0, errors.New("finding a free loopback port: only 6379 was offered")
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
