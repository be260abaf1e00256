// Command enqueue schedules, cancels, inspects and replays the close-order
// tasks of wxclose. Producers that are not written in Go use it to enqueue
// orders (one, or a JSON Lines file of many); operators use it to see where a
// close stands and to put archived closes back to work.
//
//	enqueue [close] --out-trade-no N [--created-at T] ...   enqueue one order
//	enqueue [close] --file orders.jsonl                     enqueue many
//	enqueue cancel  --out-trade-no N                        the order was paid
//	enqueue status  --out-trade-no N [--json]               where its close stands
//	enqueue list    [--queue Q] [--state S] [--json]        tasks of a queue
//	enqueue replay  --code SYSTEM_ERROR [--dry-run]         retry archived closes
//	enqueue replay  --queue reconciliation --all            resend archived paid-order webhooks
//
// Redis comes from REDIS_URL (default redis://127.0.0.1:6379/0) or --redis;
// the merchant of task ids from WECHATPAY_MCHID or --mchid. Run any command
// with --help for its flags and examples.
//
// Exit codes:
//
//	0  success (an order that was already scheduled counts as success)
//	1  some orders were rejected or failed, or an operation failed
//	2  usage error: bad flags or flag values
//	3  not found: the order has no close task (status, cancel)
//	4  the close is in progress and cannot be cancelled (cancel)
//	5  the close already completed (cancel)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/redis/go-redis/v9"

	"github.com/wxclose/wxclose/internal/ops"
	"github.com/wxclose/wxclose/tasks"
)

// Exit codes; see the package documentation.
const (
	exitOK         = 0
	exitFailed     = 1
	exitUsage      = 2
	exitNotFound   = 3
	exitInProgress = 4
	exitCompleted  = 5
)

const defaultRedisURL = "redis://127.0.0.1:6379/0"

// Limits of the producer, for the help texts.
var (
	maxCloseDelay     = humanDuration(tasks.MaxCloseDelay)
	maxCreatedAtAhead = humanDuration(tasks.MaxCreatedAtAhead)
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run executes one command and returns its exit code.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	// go-redis logs every failed dial on its own; the command reports
	// connection errors itself, once.
	quietRedis.Do(func() { redis.SetLogger(quietLogger{}) })
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr}
	name, err := e.dispatch(ctx, args)
	report(stderr, name, err)
	return exitCode(err)
}

// dispatch runs the command args name and returns its full name
// ("enqueue cancel") for messages.
func (e *env) dispatch(ctx context.Context, args []string) (string, error) {
	name, rest := "close", args
	if len(args) > 0 {
		switch args[0] {
		case "close", "cancel", "status", "list", "replay", "merchants":
			name, rest = args[0], args[1:]
		case "help":
			_, err := fmt.Fprint(e.stdout, overview)
			return "enqueue", err
		}
	}
	cmds := map[string]func(context.Context, []string) error{
		"close": e.close, "cancel": e.cancel, "status": e.status, "list": e.list, "replay": e.replay,
		"merchants": e.merchants,
	}
	return "enqueue " + name, cmds[name](ctx, rest)
}

// errIncomplete is returned by a command that processed many items and
// already printed a summary counting the rejected or failed ones.
var errIncomplete = errors.New("some items were rejected or failed")

// exitCode is the one place where errors become the documented exit codes.
func exitCode(err error) int {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.Is(err, ops.ErrUsage), errors.Is(err, tasks.ErrInvalidPayload):
		return exitUsage
	case errors.Is(err, tasks.ErrNoClose):
		return exitNotFound
	case errors.Is(err, tasks.ErrCloseInProgress):
		return exitInProgress
	case errors.Is(err, tasks.ErrCloseFinished):
		return exitCompleted
	}
	return exitFailed
}

// report prints the error a command returned, once, with a pointer to the
// help for usage errors.
func report(w io.Writer, name string, err error) {
	if err == nil || errors.Is(err, flag.ErrHelp) || errors.Is(err, errIncomplete) {
		return
	}
	fmt.Fprintf(w, "%s: %s\n", name, ops.Message(err))
	if errors.Is(err, ops.ErrUsage) {
		fmt.Fprintf(w, "Run '%s --help' for usage.\n", name)
	}
}

// usageError returns an error that exits with the usage code.
func usageError(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ops.ErrUsage, fmt.Sprintf(format, args...))
}

type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}

const overview = `enqueue: schedule, cancel, inspect and replay wxclose close-order tasks.

Commands:
  enqueue [close]  enqueue one order, or a JSON Lines file of orders
  enqueue cancel   remove the pending close of an order that was paid
  enqueue status   show where one order's close stands
  enqueue list     list the tasks of a queue
  enqueue replay   put archived tasks (closes, or paid-order webhooks) back to work with a fresh retry budget
  enqueue merchants  list the merchants with their rate limit and the rate in force now

Run "enqueue COMMAND --help" for flags and examples.
` + envHelp + exitHelp

const envHelp = `
Environment:
  REDIS_URL        Redis to use (default redis://127.0.0.1:6379/0); --redis overrides it
  WECHATPAY_MCHID  merchant id used in task ids when an order names none; --mchid overrides it
` + layoutHelp

const exitHelp = `
Exit codes:
  0  success (an order already scheduled counts as success)
  1  some orders were rejected or failed, or an operation failed
  2  usage error: bad flags or flag values
  3  not found: the order has no close task (status, cancel)
  4  the close is in progress and cannot be cancelled (cancel)
  5  the close already completed (cancel)
`

// command is one subcommand's flag set with its help text.
type command struct {
	fs     *flag.FlagSet
	usage  string
	redis  string
	mchID  string
	layout layoutFlags
}

func newCommand(name, usage string) *command {
	c := &command{fs: flag.NewFlagSet("enqueue "+name, flag.ContinueOnError), usage: usage}
	// Defaults are resolved after parsing, so that --help never prints a
	// password from REDIS_URL.
	c.fs.StringVar(&c.redis, "redis", "", "Redis `URL` (default: $REDIS_URL, else "+defaultRedisURL+")")
	c.layout.register(c.fs)
	return c
}

func (c *command) withMchID() {
	c.fs.StringVar(&c.mchID, "mchid", "", "merchant `id` for the task id (default: $WECHATPAY_MCHID)")
}

// parse parses args. It returns flag.ErrHelp after printing the help.
func (c *command) parse(e *env, args []string) error {
	c.fs.SetOutput(io.Discard)
	c.fs.Usage = func() {}
	err := c.fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(e.stdout, c.usage)
		fmt.Fprintln(e.stdout, "\nFlags:")
		c.fs.SetOutput(e.stdout)
		c.fs.PrintDefaults()
		fmt.Fprint(e.stdout, envHelp+exitHelp)
		return err
	case err != nil:
		return usageError("%v", err)
	case c.fs.NArg() > 0:
		return usageError("unexpected argument %q", c.fs.Arg(0))
	}
	if c.redis == "" {
		c.redis = orDefault(os.Getenv("REDIS_URL"), defaultRedisURL)
	}
	if c.mchID == "" {
		c.mchID = os.Getenv("WECHATPAY_MCHID")
	}
	return c.layout.resolve()
}

func (c *command) dial(ctx context.Context) (*ops.Client, error) {
	return ops.Dial(ctx, c.redis, c.layout.producer(c.mchID))
}

// refFlags are the flags that name one order.
type refFlags struct {
	outTradeNo, transactionID, subMchID string
}

func (r *refFlags) register(c *command) {
	c.fs.StringVar(&r.outTradeNo, "out-trade-no", "", "merchant order `number`")
	c.fs.StringVar(&r.transactionID, "transaction-id", "", "WeChat Pay order `number` (instead of --out-trade-no)")
	c.fs.StringVar(&r.subMchID, "sub-mchid", "", "sub-merchant `id` (institutional mode)")
	c.withMchID()
}

func (r *refFlags) ref(c *command) tasks.OrderRef {
	return tasks.OrderRef{OutTradeNo: r.outTradeNo, TransactionID: r.transactionID, MchID: c.mchID, SubMchID: r.subMchID}
}

func (r *refFlags) check() error {
	switch {
	case r.outTradeNo == "" && r.transactionID == "":
		return usageError("name the order with --out-trade-no or --transaction-id")
	case r.outTradeNo != "" && r.transactionID != "":
		return usageError("give only one of --out-trade-no and --transaction-id")
	}
	return nil
}

// closeUsage quotes the limits tasks defines, so the help cannot drift
// from them.
var closeUsage = `Usage:
  enqueue [close] --out-trade-no N | --transaction-id N [--mchid M] [--sub-mchid S]
                  [--sub-appid A] [--created-at RFC3339] [--close-at RFC3339] [--json]
  enqueue [close] --file PATH|- [--mchid M] [--concurrency N] [--quiet] [--json]

Schedules the close of unpaid orders. A close runs at the later of --close-at
and creation + 5 minutes (WeChat Pay refuses earlier closes). Enqueuing an
order that already has a close task is not an error: it prints "already
scheduled" and changes nothing.

Limits: created_at at most ` + maxCreatedAtAhead + ` in the future; close_at not before
created_at and at most ` + maxCloseDelay + ` after it. Times are RFC 3339 with a zone:
Z or an offset from -23:59 to +23:59.

With --file, reads JSON Lines (- is stdin; a UTF-8 byte order mark at the
start is skipped): one object per line with the fields out_trade_no or
transaction_id, created_at (required), and optionally mchid, sub_mchid,
sub_appid, close_at. Field names are exact and lower case; unknown,
wrong-case and repeated fields reject the line. A line with both
out_trade_no and transaction_id is accepted and closed by its out_trade_no
(the output says so). Blank lines are skipped. --mchid is the merchant of
lines without one. Orders are enqueued concurrently, so output lines come in
no particular order: each starts with its input line number. Bad lines are
reported on stderr and the rest carry on; a summary is printed on stderr at
the end, and the exit code is 1 if any line was rejected or failed.

Examples:
  enqueue --out-trade-no ORDER-1 --created-at 2026-11-22T10:00:00+08:00
  enqueue close --transaction-id 4200000001202611220000000001 --mchid 1900000109
  enqueue --file orders.jsonl --quiet
  printf '{"out_trade_no":"ORDER-2","created_at":"2026-11-22T10:00:00Z"}\n' | enqueue --file -
  enqueue --file orders.jsonl --json > results.jsonl

Other commands: cancel, status, list, replay; run "enqueue help" for an overview.
`

func (e *env) close(ctx context.Context, args []string) error {
	c := newCommand("close", closeUsage)
	var (
		r                  refFlags
		subAppID           string
		createdAt, closeAt string
		file               string
		concurrency        int
		quiet, asJSON      bool
	)
	r.register(c)
	c.fs.StringVar(&subAppID, "sub-appid", "", "sub-merchant app `id` (v2 institutional mode)")
	c.fs.StringVar(&createdAt, "created-at", "", "when the order was created, `RFC3339` (default: now)")
	c.fs.StringVar(&closeAt, "close-at", "", "close no earlier than this `RFC3339` time (default: as early as allowed; at most "+maxCloseDelay+" after creation)")
	c.fs.StringVar(&file, "file", "", "enqueue the JSON Lines orders of `PATH` (- for stdin)")
	c.fs.IntVar(&concurrency, "concurrency", ops.DefaultConcurrency, "batches of orders (up to 256 each) in flight with --file")
	c.fs.BoolVar(&quiet, "quiet", false, "with --file, print no line per enqueued order (errors and the summary still print)")
	c.fs.BoolVar(&asJSON, "json", false, "print one JSON object per order on stdout (with --file, rejected and failed lines too)")
	if err := c.parse(e, args); err != nil {
		return err
	}
	if file != "" {
		if r.outTradeNo != "" || r.transactionID != "" || r.subMchID != "" || subAppID != "" || createdAt != "" || closeAt != "" {
			return usageError("--file reads the orders from the file; do not combine it with --out-trade-no, --transaction-id, --sub-mchid, --sub-appid, --created-at or --close-at")
		}
		if concurrency < 1 {
			return usageError("--concurrency must be at least 1")
		}
		return e.bulk(ctx, c, file, ops.BulkOptions{Concurrency: concurrency, Quiet: quiet, JSON: asJSON})
	}
	if err := r.check(); err != nil {
		return err
	}
	o := tasks.CloseOrder{
		OutTradeNo: r.outTradeNo, TransactionID: r.transactionID,
		MchID: c.mchID, SubMchID: r.subMchID, SubAppID: subAppID,
	}
	var err error
	if createdAt != "" {
		if o.CreatedAt, err = ops.ParseTime("--created-at", createdAt); err != nil {
			return err
		}
	}
	if closeAt != "" {
		if o.CloseAt, err = ops.ParseTime("--close-at", closeAt); err != nil {
			return err
		}
	}
	cl, err := c.dial(ctx)
	if err != nil {
		return err
	}
	defer cl.Close()
	s, err := cl.Enqueue(ctx, o)
	if err != nil {
		return err
	}
	return ops.WriteRecord(e.stdout, ops.RecordOf(0, o, s, nil), asJSON, time.Now())
}

func (e *env) bulk(ctx context.Context, c *command, file string, opt ops.BulkOptions) error {
	in := e.stdin
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return usageError("cannot read --file: %v", err)
		}
		defer f.Close()
		in = f
	}
	cl, err := c.dial(ctx)
	if err != nil {
		return err
	}
	defer cl.Close()
	opt.Out, opt.Err = e.stdout, e.stderr
	if isTerminal(e.stderr) {
		opt.Progress = e.stderr
	}
	sum, err := cl.EnqueueBulk(ctx, in, opt)
	fmt.Fprintf(e.stderr, "%s: %s\n", c.fs.Name(), sum)
	switch {
	case err != nil:
		return err
	case !sum.OK():
		return errIncomplete
	}
	return nil
}

const cancelUsage = `Usage:
  enqueue cancel --out-trade-no N | --transaction-id N [--mchid M] [--sub-mchid S]

Removes the pending close of an order whose payment was confirmed, whatever
state it waits in (scheduled, pending, retry or archived). The order must be
named exactly as it was enqueued (same mchid and sub_mchid).

Exit codes 3, 4 and 5 tell why nothing was cancelled: the order has no close
task (3), the close is running right now (4; its outcome will be known in
seconds, check with "enqueue status"), or it already completed (5).

Examples:
  enqueue cancel --out-trade-no ORDER-1
  enqueue cancel --transaction-id 4200000001202611220000000001 --mchid 1900000109
`

func (e *env) cancel(ctx context.Context, args []string) error {
	c := newCommand("cancel", cancelUsage)
	var r refFlags
	r.register(c)
	cl, err := e.dialForOrder(ctx, c, &r, args)
	if err != nil {
		return err
	}
	defer cl.Close()
	id, err := cl.Cancel(ctx, r.ref(c))
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(e.stdout, "cancelled %s\n", id)
	return err
}

// dialForOrder parses the flags of a one-order command, checks the order
// reference and connects to Redis.
func (e *env) dialForOrder(ctx context.Context, c *command, r *refFlags, args []string) (*ops.Client, error) {
	if err := c.parse(e, args); err != nil {
		return nil, err
	}
	if err := r.check(); err != nil {
		return nil, err
	}
	return c.dial(ctx)
}

const statusUsage = `Usage:
  enqueue status --out-trade-no N | --transaction-id N [--mchid M] [--sub-mchid S] [--json]

Shows where one order's close stands: its state (scheduled, pending, active,
retry, archived, completed), retries spent of the budget, the last error,
the next run, the outcome of a completed close, and the stored order.
Completed closes are kept for 24 hours by default; after that the order is
not found (exit code 3).

Examples:
  enqueue status --out-trade-no ORDER-1
  enqueue status --out-trade-no ORDER-1 --json | jq .result.outcome
`

func (e *env) status(ctx context.Context, args []string) error {
	c := newCommand("status", statusUsage)
	var r refFlags
	var asJSON bool
	r.register(c)
	c.fs.BoolVar(&asJSON, "json", false, "print a JSON object")
	cl, err := e.dialForOrder(ctx, c, &r, args)
	if err != nil {
		return err
	}
	defer cl.Close()
	s, err := cl.Status(ctx, r.ref(c))
	if err != nil {
		return err
	}
	return ops.WriteStatus(e.stdout, s, asJSON)
}

const listUsage = `Usage:
  enqueue list [--queue close_order|reconciliation]
               [--state scheduled|pending|active|retry|archived|completed] [--limit N] [--json]

Lists the tasks of a queue as a table (the last error is truncated; use
--json for all of it). Without --state, lists every state in the order
active, pending, scheduled, retry, archived, completed, up to --limit tasks.

Examples:
  enqueue list --state archived
  enqueue list --queue reconciliation --json
  enqueue list --state retry --limit 1000 --json | jq -r '.[].last_error' | sort | uniq -c
`

func (e *env) list(ctx context.Context, args []string) error {
	c := newCommand("list", listUsage)
	var opt ops.ListOptions
	var asJSON bool
	c.fs.StringVar(&opt.Queue, "queue", tasks.QueueClose, "`queue`: close_order (every shard), close_order:N (one shard) or reconciliation")
	c.fs.StringVar(&opt.State, "state", "", "only tasks in this `state` (default: all)")
	c.fs.IntVar(&opt.Limit, "limit", ops.DefaultListLimit, "list at most `N` tasks")
	c.fs.BoolVar(&asJSON, "json", false, "print a JSON array")
	if err := c.parse(e, args); err != nil {
		return err
	}
	if opt.Limit < 1 {
		return usageError("--limit must be at least 1")
	}
	cl, err := c.dial(ctx)
	if err != nil {
		return err
	}
	defer cl.Close()
	ts, err := cl.List(ctx, opt)
	if err != nil {
		return err
	}
	if asJSON {
		return ops.WriteJSON(e.stdout, ts)
	}
	return ops.WriteTable(e.stdout, ts)
}

const replayUsage = `Usage:
  enqueue replay [--queue close_order|reconciliation] [--code CODE]
                 [--older-than DUR] [--newer-than DUR]
                 [--out-trade-no N | --transaction-id N] [--all] [--dry-run] [--concurrency N]

Puts archived close tasks back to work with a fresh retry budget. Each
selected task keeps its id and payload and moves, in one atomic Redis step,
from the archive to the scheduled tasks (or the pending ones when it is due)
with its retry count and last error cleared. Its due time is recomputed from
created_at and close_at, so the 5-minute rule and the merchant's deadline
still hold (an old order runs at once). At every instant the close exists in
Redis, archived or waiting to run: interrupting replay, even with kill -9,
loses nothing; run it again to replay the rest. asynq's own "run" keeps the
spent retry count and would give the task a single attempt.

--queue reconciliation replays paid orders whose webhook delivery
(WXCLOSE_RECONCILE_WEBHOOK_URL) gave up: they are sent again at once, under
the same task id, so the receiver gets the same webhook-id and can
recognise a duplicate. --code applies to closes only.

Filters combine with AND; at least one, or --all, is required. --code
matches the WeChat Pay code in the last error (code=SYSTEM_ERROR); the age
filters compare with the time of the last failure. Tasks whose payload is
corrupt are reported and left in the archive. Use --dry-run first. The exit
code is 1 if a selected task could not be replayed (it stays archived).

Examples:
  enqueue replay --code SYSTEM_ERROR --newer-than 2h --dry-run
  enqueue replay --code SYSTEM_ERROR --newer-than 2h
  enqueue replay --out-trade-no ORDER-1
  enqueue replay --all 2> replay.log
  enqueue replay --queue reconciliation --newer-than 24h --dry-run
`

func (e *env) replay(ctx context.Context, args []string) error {
	c := newCommand("replay", replayUsage)
	var opt ops.ReplayOptions
	f := &opt.Filter
	c.fs.StringVar(&f.Queue, "queue", tasks.QueueClose, "`queue` whose archive is replayed: close_order or reconciliation")
	c.fs.StringVar(&f.Code, "code", "", "only tasks whose last error has this WeChat Pay `CODE` (close_order only)")
	c.fs.DurationVar(&f.OlderThan, "older-than", 0, "only tasks that last failed more than `DUR` ago (e.g. 30m, 2h)")
	c.fs.DurationVar(&f.NewerThan, "newer-than", 0, "only tasks that last failed less than `DUR` ago")
	c.fs.StringVar(&f.OutTradeNo, "out-trade-no", "", "only this merchant order `number`")
	c.fs.StringVar(&f.TransactionID, "transaction-id", "", "only this WeChat Pay order `number`")
	c.fs.BoolVar(&f.All, "all", false, "replay every archived task of the queue (no filter)")
	c.fs.BoolVar(&opt.DryRun, "dry-run", false, "list what would be replayed; change nothing")
	c.fs.IntVar(&opt.Concurrency, "concurrency", ops.DefaultConcurrency, "tasks replayed at once")
	if err := c.parse(e, args); err != nil {
		return err
	}
	if err := f.Validate(); err != nil {
		return err
	}
	if opt.Concurrency < 1 {
		return usageError("--concurrency must be at least 1")
	}
	cl, err := c.dial(ctx)
	if err != nil {
		return err
	}
	defer cl.Close()
	opt.Out, opt.Err = e.stdout, e.stderr
	if isTerminal(e.stderr) {
		opt.Progress = e.stderr
	}
	sum, err := cl.Replay(ctx, opt)
	fmt.Fprintf(e.stderr, "%s: %s\n", c.fs.Name(), sum)
	switch {
	case err != nil:
		return err
	case !sum.OK():
		return errIncomplete
	}
	return nil
}

// quietRedis sets go-redis's process-wide logger once.
var quietRedis sync.Once

type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}

// humanDuration prints whole days as "7 days", whole hours as "1 hour",
// and other durations as Go does.
func humanDuration(d time.Duration) string {
	unit := func(n time.Duration, name string) string {
		if n == 1 {
			return "1 " + name
		}
		return fmt.Sprintf("%d %ss", n, name)
	}
	switch {
	case d > 0 && d%(24*time.Hour) == 0:
		return unit(d/(24*time.Hour), "day")
	case d > 0 && d%time.Hour == 0:
		return unit(d/time.Hour, "hour")
	}
	return d.String()
}

func orDefault(v, def string) string {
	if v = strings.TrimSpace(v); v != "" {
		return v
	}
	return def
}
