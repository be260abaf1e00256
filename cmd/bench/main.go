// Command bench measures wxclose on this machine and prints every figure
// next to a baseline measured in the same run, so that ratios, not absolute
// numbers, are compared between machines and between versions.
//
//	go run ./cmd/bench                     # everything, a few minutes
//	go run ./cmd/bench -only v3,v2         # a subset
//	go run ./cmd/bench -only v3,v2 -orders 40000 -profile /tmp/prof
//	go run ./cmd/bench -only sign,v3,minimal  # v3 against the signing bound and a minimal worker
//	go run ./cmd/bench -json               # machine-readable
//	go run ./cmd/bench -only ratelimit     # the shared rate limit: its cost, bursts at R (ratelimit.go)
//
// What runs where:
//
//   - Redis: a private redis-server on a free loopback port (never 6379),
//     without persistence, with the settings the README recommends
//     (hash-max-listpack-value 512). -redis=env uses REDIS_URL instead,
//     which must name an empty database: the bench writes asynq keys there
//     and deletes them between measurements, but never flushes.
//   - WeChat Pay: the sandbox (wechat/sandbox) inside the bench process,
//     with CacheResponseSignatures so that its RSA signing is not the
//     bottleneck (requests are still verified). In process rather than as
//     cmd/sandbox: the CPU it takes from the machine is the same either way,
//     and in process the bench registers orders, times every call and reads
//     the early-close counter directly, without exporting tens of thousands
//     of call records over HTTP while the worker runs. The bench reports the
//     CPU the sandbox process used per close, so its share is visible.
//   - The worker and the enqueue CLI: built with go build into a temporary
//     directory and run as child processes, configured through environment
//     variables as an operator would (WECHATPAY_* from key files the bench
//     writes, REDIS_URL, WXCLOSE_CONCURRENCY, WXCLOSE_HTTP_ADDR on a free
//     port), logging JSON at info level to a file.
//
// Every child process is stopped by its PID when the bench ends, also on
// Ctrl-C or an error; on Linux the kernel kills them if the bench itself is
// killed (its temporary directory, with test keys only, then stays behind).
//
// Reading the figures: every ratio divides by a baseline measured in the
// same run. A shared VM changes speed by tens of percent within a minute
// (the signing rate, sampled every second, ranged 1,056-1,686 signs/s in
// one 40 s window), so a baseline measured once before a 20 s figure can be
// off by that much: the signing bound and the bare drain are measured right
// before and right after the figures that divide by them, and their mean is
// the baseline. When the two differ by more than 20 % the ratio is marked
// unreliable instead of met or missed. The minimal section (minimal.go)
// adds a second baseline for v3 and v2, measured the same way: a close
// worker that does nothing but the signed call (cmd/bench/minimalworker),
// a process of its own like the worker. Both sides of that ratio sign and
// call, so it says what wxclose's handler costs on top of the bare
// minimum, and the machine's speed moves it much less.
//
// On a shared machine a figure and its baseline may also see different
// loads from other processes. The
// OTHER CPUS column says how many CPUs other processes used, on average,
// during each measurement; the details under the table give the CPU time
// each process (worker, sandbox, Redis) spent per close, which does not
// depend on the share of the machine the bench got, the Redis commands per
// close, and a CPU-normalized v3 ratio (CPU per signature over CPU per
// close in all processes).
//
// -worker-env KEY=VALUE (repeatable) passes extra variables to every
// worker, to try a runtime or configuration change without editing code;
// -aof runs the private Redis with append-only persistence, as
// docker-compose does.
//
// -profile DIR builds the worker with an extra file, added through
// go build -overlay (the source tree is not changed), that serves
// net/http/pprof on a private port, and writes CPU and allocation profiles
// of the worker under the v3 and v2 loads into DIR.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal, a second one kills the bench at once;
		// the kernel then kills its children (see childAttr).
		<-ctx.Done()
		stop()
	}()
	os.Exit(run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// sections in the order they run; -only selects among them.
var sections = []string{"sign", "drain", "v3", "v2", "minimal", "burst", "latency", "bulk", "memory", "rss", "ratelimit", "capacity", "api", "webhook"}

// options are the command's flags.
type options struct {
	orders         int
	concurrency    int
	burst          int
	memoryCloses   int
	latencySamples int
	rssConcurrency int
	signFor        time.Duration
	only           map[string]bool
	json           bool
	redisMode      string
	profileDir     string
	profileFor     time.Duration
	keep           bool
	workerEnv      []string
	aof            bool
	// The ratelimit section (ratelimit.go).
	rlOrders, rlRate, rlLow int
	// The api and webhook sections (api.go, webhook.go).
	apiOrders, webhookOrders int
}

func (o options) runs(section string) bool { return o.only == nil || o.only[section] }

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.orders, "orders", 20000, "orders per throughput run (bare drain, v3, v2, rss) and per bulk/sequential enqueue run")
	fs.IntVar(&o.concurrency, "concurrency", 50, "WXCLOSE_CONCURRENCY of the v3, v2 and burst runs, and of the bare asynq server")
	fs.IntVar(&o.burst, "burst", 5000, "orders due in the same second in the burst run")
	fs.IntVar(&o.memoryCloses, "memory-closes", 50000, "scheduled closes enqueued to measure Redis bytes per close")
	fs.IntVar(&o.latencySamples, "latency-samples", 5000, "sequential EnqueueClose calls timed")
	fs.IntVar(&o.rssConcurrency, "rss-concurrency", 100, "WXCLOSE_CONCURRENCY of the peak RSS run")
	fs.DurationVar(&o.signFor, "sign-for", 3*time.Second, "how long to measure the RSA-2048 signing bound")
	fs.IntVar(&o.rlOrders, "ratelimit-orders", 30000, "orders due at once in the ratelimit section's bursts")
	fs.IntVar(&o.rlRate, "ratelimit-rate", 500, "the merchant's rate limit R (closes/s) in the ratelimit section; the sandbox enforces it in the first burst")
	fs.IntVar(&o.rlLow, "ratelimit-low", 300, "what the sandbox enforces in the ratelimit section's second burst (below R: the limit adapts)")
	fs.IntVar(&o.apiOrders, "api-orders", 20000, "orders posted to POST /v1/closes in the api section, and enqueued sequentially by its Go producer baseline")
	fs.IntVar(&o.webhookOrders, "webhook-orders", 10000, "paid orders delivered by the webhook in the webhook section")
	only := fs.String("only", "", "comma-separated sections to run (default all): "+strings.Join(sections, ","))
	fs.BoolVar(&o.json, "json", false, "print the results as JSON instead of a table")
	fs.StringVar(&o.redisMode, "redis", "private", `"private": start a private redis-server; "env": use REDIS_URL, which must name an empty database`)
	fs.BoolVar(&o.aof, "aof", false, "run the private Redis with appendonly yes, appendfsync everysec, as docker-compose does (default: no persistence)")
	fs.StringVar(&o.profileDir, "profile", "", "write CPU and allocation profiles of the worker under the v3 and v2 loads into `DIR`")
	fs.DurationVar(&o.profileFor, "profile-for", 10*time.Second, "length of the CPU profile; choose -orders so that a run lasts longer")
	fs.Func("worker-env", "extra `KEY=VALUE` for every worker, to try a runtime or configuration change (GODEBUG, GOGC, WXCLOSE_LOG_LEVEL...); repeatable", func(v string) error {
		if k, _, ok := strings.Cut(v, "="); !ok || k == "" {
			return errors.New("want KEY=VALUE")
		}
		o.workerEnv = append(o.workerEnv, v)
		return nil
	})
	fs.BoolVar(&o.keep, "keep", false, "keep the temporary directory (binaries, keys, logs) and print its path")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: go run ./cmd/bench [flags]\n\nMeasures wxclose against baselines measured in the same run; see the package documentation.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	err := fs.Parse(args)
	if err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for _, p := range []struct {
		name string
		v    int
	}{{"orders", o.orders}, {"concurrency", o.concurrency}, {"burst", o.burst}, {"memory-closes", o.memoryCloses},
		{"latency-samples", o.latencySamples}, {"rss-concurrency", o.rssConcurrency},
		{"ratelimit-orders", o.rlOrders}, {"ratelimit-rate", o.rlRate}, {"ratelimit-low", o.rlLow},
		{"api-orders", o.apiOrders}, {"webhook-orders", o.webhookOrders}} {
		if p.v < 2 {
			return o, fmt.Errorf("-%s must be at least 2, got %d", p.name, p.v)
		}
	}
	if o.signFor <= 0 || o.profileFor <= 0 {
		return o, errors.New("-sign-for and -profile-for must be positive")
	}
	if *only != "" {
		o.only = map[string]bool{}
		for s := range strings.SplitSeq(*only, ",") {
			s = strings.TrimSpace(s)
			if !slices.Contains(sections, s) {
				return o, fmt.Errorf("-only: unknown section %q (sections: %s)", s, strings.Join(sections, ","))
			}
			o.only[s] = true
		}
	}
	if o.profileDir != "" {
		if o.profileDir, err = filepath.Abs(o.profileDir); err != nil {
			return o, err
		}
	}
	if o.redisMode != "private" && o.redisMode != "env" {
		return o, fmt.Errorf(`-redis must be "private" or "env", not %q`, o.redisMode)
	}
	return o, nil
}

// run parses args, measures and prints the report. It returns the exit
// code: 0 when every figure was measured (targets met or not), 1 on a
// failure, 2 on bad flags.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 2
	}
	b, err := newBench(ctx, o, getenv, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 1
	}
	err = b.measure(ctx)
	b.close()
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		// What was measured before the failure is still worth printing.
	}
	if o.json {
		err2 := b.report.writeJSON(stdout)
		err = errors.Join(err, err2)
	} else {
		b.report.writeTable(stdout)
	}
	if err != nil {
		return 1
	}
	return 0
}

// loadavg returns the 1, 5 and 15 minute load averages.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "unknown"
}

// machine describes where the figures were measured.
func machine() map[string]string {
	m := map[string]string{
		"go":         runtime.Version(),
		"os_arch":    runtime.GOOS + "/" + runtime.GOARCH,
		"cpus":       fmt.Sprint(runtime.NumCPU()),
		"gomaxprocs": fmt.Sprint(runtime.GOMAXPROCS(0)),
		"started":    time.Now().Format(time.RFC3339),
	}
	m["loadavg_at_start"] = loadavg()
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				m["cpu"] = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	return m
}
