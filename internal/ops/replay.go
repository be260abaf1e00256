package ops

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/wxclose/wxclose/tasks"
)

// Defaults of ReplayOptions.
const (
	DefaultReplayAttempts   = 5
	DefaultReplayRetryDelay = 200 * time.Millisecond
)

// ReplayFilter selects archived tasks of one queue. Set filters are
// combined with AND. At least one filter, or All, is required, so that a
// forgotten flag cannot replay a whole archive.
type ReplayFilter struct {
	// Queue is the queue whose archive is replayed: tasks.QueueClose (if
	// empty) or tasks.QueueReconcile (paid orders whose webhook delivery
	// gave up; see ReplayQueues).
	Queue string
	// Code selects tasks whose failure record (tasks.CloseFailure, stored
	// by the worker with every failed attempt) carries this WeChat Pay code,
	// ignoring case. Close queue only. Tasks archived without a record (by a wxclose version
	// that stored none) never match; Replay counts them in
	// ReplaySummary.NoRecord and says how to select them.
	Code string
	// OlderThan selects tasks that last failed more than this long ago.
	OlderThan time.Duration
	// NewerThan selects tasks that last failed less than this long ago.
	NewerThan time.Duration
	// OutTradeNo and TransactionID select one order's task.
	OutTradeNo    string
	TransactionID string
	// All selects every archived task of the queue; it cannot be combined
	// with a filter.
	All bool
}

func (f ReplayFilter) any() bool {
	return f.Code != "" || f.OlderThan != 0 || f.NewerThan != 0 || f.OutTradeNo != "" || f.TransactionID != ""
}

// Validate reports a missing filter, or conflicting or negative ones, with
// an error wrapping ErrUsage.
func (f ReplayFilter) Validate() error {
	q, err := replayQueueFor(f.Queue)
	switch {
	case err != nil:
		return err
	case f.Code != "" && !q.codes:
		return fmt.Errorf("%w: --code selects by WeChat Pay code, which only %s tasks record; select %s tasks with --older-than, --newer-than, --out-trade-no, --transaction-id or --all", ErrUsage, tasks.QueueClose, q.name)
	case f.All && f.any():
		return fmt.Errorf("%w: --all replays every archived close task and cannot be combined with a filter; drop one", ErrUsage)
	case !f.All && !f.any():
		return fmt.Errorf("%w: give at least one filter (--code, --older-than, --newer-than, --out-trade-no, --transaction-id), or --all to replay every archived close task", ErrUsage)
	case f.OlderThan < 0 || f.NewerThan < 0:
		return fmt.Errorf("%w: --older-than and --newer-than must be positive durations such as 30m or 2h", ErrUsage)
	}
	return nil
}

// matchInfo applies the filters that need no payload. noRecord reports a
// task the code filter could not judge because it carries no failure
// record.
func (f ReplayFilter) matchInfo(info *asynq.TaskInfo, now time.Time) (match, noRecord bool) {
	if f.Code != "" {
		_, failure, err := tasks.DecodeCloseRecord(info.Result)
		switch {
		case failure != nil:
			if !strings.EqualFold(failure.Code, f.Code) {
				return false, false
			}
		case err == nil && len(info.Result) == 0:
			// Archived before failures were recorded: asynq's text is all
			// there is, and it is not parsed for codes.
			return false, true
		default:
			return false, false
		}
	}
	// A task archived by hand has no failure time; age filters skip it
	// rather than guess.
	if f.OlderThan > 0 && (info.LastFailedAt.IsZero() || now.Sub(info.LastFailedAt) <= f.OlderThan) {
		return false, false
	}
	if f.NewerThan > 0 && (info.LastFailedAt.IsZero() || now.Sub(info.LastFailedAt) >= f.NewerThan) {
		return false, false
	}
	return true, false
}

func (f ReplayFilter) matchOrder(p tasks.OrderRef) bool {
	if f.OutTradeNo != "" && p.OutTradeNo != f.OutTradeNo {
		return false
	}
	if f.TransactionID != "" && p.TransactionID != f.TransactionID {
		return false
	}
	return true
}

// ReplayOptions configures Replay. Only Filter is required.
type ReplayOptions struct {
	Filter ReplayFilter
	// DryRun lists the tasks that would be replayed and changes nothing.
	DryRun bool
	// Concurrency is the number of tasks replayed at once. If zero,
	// DefaultConcurrency.
	Concurrency int
	// Out receives one line per replayed task (or, with DryRun, per task
	// that would be). If nil, discarded.
	Out io.Writer
	// Err receives skipped and failed tasks. If nil, discarded; set it.
	Err io.Writer
	// Progress, if not nil, receives a self-overwriting progress line; set
	// it only when it is a terminal.
	Progress io.Writer
	// Attempts is how many times one task's replay is tried when Redis
	// fails. If zero, DefaultReplayAttempts.
	Attempts int
	// RetryDelay is the pause before the second attempt, doubled after
	// each. If zero, DefaultReplayRetryDelay.
	RetryDelay time.Duration
}

// ReplaySummary counts what Replay did.
type ReplaySummary struct {
	// Scanned is the number of archived close tasks examined.
	Scanned int `json:"scanned"`
	// Matched is the number selected by the filter (with DryRun, the
	// number that would be replayed).
	Matched int `json:"matched"`
	// Replayed were moved from the archive to the scheduled or pending
	// tasks with a fresh retry budget.
	Replayed int `json:"replayed"`
	// Skipped were left alone: corrupt payload, not a close task, or no
	// longer archived when their turn came.
	Skipped int `json:"skipped"`
	// Failed could not be replayed and are still archived.
	Failed int `json:"failed"`
	// NoRecord counts archived tasks a Code filter could not judge: they
	// carry no failure record (archived by a wxclose version that stored
	// none). They stay archived; select them with another filter.
	NoRecord int `json:"no_record,omitempty"`
}

// OK reports whether nothing failed.
func (s ReplaySummary) OK() bool { return s.Failed == 0 }

func (s ReplaySummary) String() string {
	str := fmt.Sprintf("%d archived scanned, %d matched, %d replayed, %d skipped, %d failed",
		s.Scanned, s.Matched, s.Replayed, s.Skipped, s.Failed)
	if s.NoRecord > 0 {
		str += fmt.Sprintf(", %d without a failure record", s.NoRecord)
	}
	return str
}

// candidate is an archived task selected in the collect phase.
type candidate struct {
	id   string
	ref  tasks.OrderRef
	info *asynq.TaskInfo
}

type replayOutcome int

const (
	replayed replayOutcome = iota
	replaySkipped
	replayFailed
)

type replayResult struct {
	outcome replayOutcome
	// out goes to Out, msg to Err.
	out, msg string
}

// Replay puts archived close tasks back to work with a fresh retry budget.
// asynq's own Inspector.RunTask keeps the spent retry count, so a task that
// had exhausted its retries would get one attempt. Replay instead moves
// each task, under the same id and with the same payload, from the archive
// to the scheduled tasks (or the pending ones when it is due) in one atomic
// Redis script, resetting its retry count and last error: at every instant
// the close exists in Redis, archived or waiting to run, whenever the
// process or Redis connection dies. The due time is computed from the
// payload's created_at and close_at as the producer computes it, so the
// 5-minute rule and the merchant's deadline still hold.
//
// Replay first collects the ids of every matching task, paging through the
// archive, and only then acts: moving tasks while paging would shift later
// pages. Each task is read again just before it is moved, and the move only
// happens if the task is still archived with exactly the message read
// (compare and swap); tasks that changed meanwhile are read again. Tasks
// whose payload does not decode are skipped and stay archived.
func (c *Client) Replay(ctx context.Context, opt ReplayOptions) (ReplaySummary, error) {
	if err := opt.Filter.Validate(); err != nil {
		return ReplaySummary{}, err
	}
	q, _ := replayQueueFor(opt.Filter.Queue) // checked by Validate
	workers := opt.Concurrency
	if workers <= 0 {
		workers = DefaultConcurrency
	}
	out, errw := orDiscard(opt.Out), orDiscard(opt.Err)
	prog := newProgress(opt.Progress)

	var sum ReplaySummary
	cands, err := c.collectShards(ctx, q, opt.Filter, &sum, errw, prog)
	prog.clear()
	if err != nil {
		return sum, err
	}
	if sum.NoRecord > 0 {
		fmt.Fprintf(errw, "note: %d archived close tasks carry no failure record (archived by an older wxclose), so --code cannot select them; "+
			"\"enqueue list --state archived\" shows their last errors, and --older-than, --newer-than, --out-trade-no, --transaction-id or --all select them\n", sum.NoRecord)
	}
	sum.Matched = len(cands)
	if opt.DryRun {
		for _, cd := range cands {
			if _, err := fmt.Fprintln(out, describeCandidate("would replay", cd)); err != nil {
				return sum, fmt.Errorf("write output: %w", err)
			}
		}
		return sum, nil
	}

	jobs := make(chan candidate)
	results := make(chan replayResult)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for cd := range jobs {
				results <- c.replayOne(ctx, q.in(cd.info.Queue), cd, opt)
			}
		})
	}
	go func() {
		defer close(jobs)
		for _, cd := range cands {
			select {
			case jobs <- cd:
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() {
		wg.Wait()
		close(results)
	}()
	done := 0
	for r := range results {
		done++
		switch r.outcome {
		case replayed:
			sum.Replayed++
		case replaySkipped:
			sum.Skipped++
		case replayFailed:
			sum.Failed++
		}
		if r.out != "" {
			prog.clear()
			fmt.Fprintln(out, r.out)
		}
		if r.msg != "" {
			prog.clear()
			fmt.Fprintln(errw, r.msg)
		}
		prog.update(false, "replayed %d of %d (%d failed)", done, len(cands), sum.Failed)
	}
	prog.clear()
	return sum, ctx.Err()
}

// collectArchived pages through the archive of q and returns the matching
// tasks.
func (c *Client) collectArchived(ctx context.Context, q replayQueue, f ReplayFilter, sum *ReplaySummary, errw io.Writer, prog *progress) ([]candidate, error) {
	now := c.now()
	seen := make(map[string]bool)
	var cands []candidate
	for page := 1; ; page++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		infos, err := c.inspector.ListArchivedTasks(q.name, asynq.PageSize(listPageSize), asynq.Page(page))
		if errors.Is(err, asynq.ErrQueueNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("list archived %s tasks (page %d): %w", q.name, page, err)
		}
		for _, info := range infos {
			// Tasks archived while we page shift the list; an id seen twice
			// is counted once.
			if seen[info.ID] {
				continue
			}
			seen[info.ID] = true
			sum.Scanned++
			match, noRecord := f.matchInfo(info, now)
			if noRecord {
				sum.NoRecord++
			}
			if !match {
				continue
			}
			if info.Type != q.taskType {
				sum.Skipped++
				prog.clear()
				fmt.Fprintf(errw, "skipped %s: type %q is not %s; left in the archive\n", info.ID, info.Type, q.taskType)
				continue
			}
			ref, _, err := q.order(info.Payload)
			if err != nil {
				// A filter on the order number cannot match a payload
				// without one; others report it, so it is not forgotten.
				if f.OutTradeNo == "" && f.TransactionID == "" {
					sum.Skipped++
					prog.clear()
					fmt.Fprintf(errw, "skipped %s: payload is corrupt (%s); left in the archive\n", info.ID, Message(err))
				}
				continue
			}
			if !f.matchOrder(ref) {
				continue
			}
			cands = append(cands, candidate{id: info.ID, ref: ref, info: info})
		}
		prog.update(false, "scanning the archive: %d tasks, %d match", sum.Scanned, len(cands))
		if len(infos) < listPageSize {
			return cands, nil
		}
	}
}

func describeCandidate(verb string, cd candidate) string {
	last := oneLine(cd.info.LastErr)
	if _, f, _ := tasks.DecodeCloseRecord(cd.info.Result); f != nil {
		last = describeFailure(*f)
	}
	return fmt.Sprintf("%s %s (order %s, retried %d/%d, last failed %s): %s",
		verb, cd.id, cd.ref.Number(), cd.info.Retried, cd.info.MaxRetry,
		formatTime(cd.info.LastFailedAt), truncate(last, 200))
}

// replayScript moves one archived task back to work. It mirrors what
// asynq v0.26.0's own scripts write: scheduleCmd (hash fields msg and
// state=scheduled, ZADD to the scheduled set scored by the Unix second) or
// enqueueCmd (msg, state=pending, pending_since in Unix nanoseconds, LPUSH
// to the pending list), after removing the id from the archived set. The
// worker's failure record (the hash's result field) goes with the retry
// count and the last error: a replayed task starts afresh, as a new one
// would, with no field asynq's Client would not write. Every check comes
// before the first write: a Lua script is atomic but not rolled back on
// error.
//
// KEYS[1] asynq:{q}:t:<id>   KEYS[2] asynq:{q}:archived
// KEYS[3] asynq:{q}:scheduled   KEYS[4] asynq:{q}:pending
// ARGV[1] task id   ARGV[2] msg as read   ARGV[3] rewritten msg
// ARGV[4] "scheduled" or "pending"   ARGV[5] process_at, Unix seconds
// ARGV[6] now, Unix nanoseconds
//
// Returns 1 when moved; 2 when the task already carries the rewritten msg
// outside the archive (an earlier try whose answer was lost did it); 0 when
// it is no longer archived; -1 when its msg changed since it was read; -2
// when it is marked archived but missing from the archived set.
var replayScript = redis.NewScript(`
local state, msg = unpack(redis.call("HMGET", KEYS[1], "state", "msg"))
if state ~= "archived" then
	if msg == ARGV[3] then
		return 2
	end
	return 0
end
if msg ~= ARGV[2] then
	return -1
end
if redis.call("ZREM", KEYS[2], ARGV[1]) == 0 then
	return -2
end
redis.call("HDEL", KEYS[1], "result")
if ARGV[4] == "pending" then
	redis.call("HSET", KEYS[1], "msg", ARGV[3], "state", "pending", "pending_since", ARGV[6])
	redis.call("LPUSH", KEYS[4], ARGV[1])
else
	redis.call("HSET", KEYS[1], "msg", ARGV[3], "state", "scheduled")
	redis.call("HDEL", KEYS[1], "pending_since")
	redis.call("ZADD", KEYS[3], ARGV[5], ARGV[1])
end
return 1
`)

// asynqKey returns the key of a close-queue structure (see queueKey).
func asynqKey(suffix string) string { return queueKey(tasks.QueueClose, suffix) }

// maxReplayReads bounds how often a task that keeps changing under replay
// is read again.
const maxReplayReads = 3

// replayOne moves one archived task back to work; see Replay.
func (c *Client) replayOne(ctx context.Context, q replayQueue, cd candidate, opt ReplayOptions) replayResult {
	attempts := opt.Attempts
	if attempts <= 0 {
		attempts = DefaultReplayAttempts
	}
	delay := opt.RetryDelay
	if delay <= 0 {
		delay = DefaultReplayRetryDelay
	}
	// Once a task is picked, its replay finishes even if the operator
	// interrupts: a script whose answer is lost is settled by trying again.
	ctx = context.WithoutCancel(ctx)
	for range maxReplayReads {
		mv, res := c.prepareReplay(ctx, q, cd.id)
		if res != nil {
			return *res
		}
		var n int64
		var err error
		for i := range attempts {
			if i > 0 {
				time.Sleep(delay)
				delay *= 2
			}
			sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			n, err = replayScript.Run(sctx, c.rdb, mv.keys(cd.id), mv.args(cd.id)...).Int64()
			cancel()
			if err == nil {
				break
			}
		}
		switch {
		case err != nil:
			return replayResult{outcome: replayFailed, msg: fmt.Sprintf("failed %s: %v; it is still archived unless the last try went through: check with \"enqueue status\" or run replay again", cd.id, err)}
		case n == 1 || n == 2:
			return replayResult{outcome: replayed, out: fmt.Sprintf("replayed %s %s", cd.id, describeDue(mv.due, c.now()))}
		case n == 0:
			return c.notArchived(ctx, q, cd.id)
		case n == -2:
			return replayResult{outcome: replayFailed, msg: fmt.Sprintf("failed %s: marked archived but missing from the archive list; inspect it with \"enqueue status\"", cd.id)}
		}
		// n == -1: the task changed since it was read; read it again.
	}
	return replayResult{outcome: replayFailed, msg: fmt.Sprintf("failed %s: it kept changing while being replayed; still archived, run replay again", cd.id)}
}

// replayMove is one prepared replay: the message read, its rewrite, and
// where the task goes.
type replayMove struct {
	queue    string
	old, new []byte
	due      time.Time
	pending  bool
	now      time.Time
}

func (m replayMove) keys(id string) []string {
	return []string{queueKey(m.queue, "t:"+id), queueKey(m.queue, "archived"), queueKey(m.queue, "scheduled"), queueKey(m.queue, "pending")}
}

func (m replayMove) args(id string) []any {
	target := "scheduled"
	if m.pending {
		target = "pending"
	}
	return []any{id, m.old, m.new, target, m.due.Unix(), m.now.UnixNano()}
}

// prepareReplay reads an archived task of q and computes its replay, or
// returns the result that ends its turn.
func (c *Client) prepareReplay(ctx context.Context, q replayQueue, id string) (replayMove, *replayResult) {
	skip := func(format string, args ...any) (replayMove, *replayResult) {
		return replayMove{}, &replayResult{outcome: replaySkipped, msg: fmt.Sprintf("skipped %s: ", id) + fmt.Sprintf(format, args...)}
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	vals, err := c.rdb.HMGet(rctx, queueKey(q.name, "t:"+id), "state", "msg").Result()
	cancel()
	if err != nil {
		return replayMove{}, &replayResult{outcome: replayFailed, msg: fmt.Sprintf("failed %s: read it: %v; still archived, run replay again", id, err)}
	}
	state, _ := vals[0].(string)
	raw, _ := vals[1].(string)
	switch {
	case state == "":
		return skip("no longer exists")
	case state != "archived":
		return skip("no longer archived (now %s)", state)
	}
	m, err := decodeTaskMsg([]byte(raw))
	if err != nil {
		return skip("%v; left in the archive", err)
	}
	switch {
	case m.ID != id || m.Queue != q.name:
		return skip("its stored message names task %q of queue %q; left in the archive", m.ID, m.Queue)
	case m.Type != q.taskType:
		return skip("type %q is not %s; left in the archive", m.Type, q.taskType)
	case m.GroupKey != "" || m.UniqueKey != "":
		// wxclose never sets these; moving such a task would need asynq's
		// group or uniqueness bookkeeping too.
		return skip("it uses asynq groups or unique locks, which wxclose tasks never do; left in the archive")
	}
	_, want, err := q.order(m.Payload)
	if err != nil {
		return skip("payload is corrupt (%s); left in the archive", Message(err))
	}
	if want != id {
		return skip("its payload belongs to task %s; left in the archive", want)
	}
	now := c.now()
	due, header, err := q.due(c, m.Payload, now)
	if err != nil {
		return skip("%s; left in the archive", Message(err))
	}
	if due.IsZero() {
		due = now
	}
	return replayMove{
		queue:   q.name,
		old:     []byte(raw),
		new:     m.rewriteForReplay(tasks.HeaderDue, header),
		due:     due,
		pending: !due.After(now), // asynq's Client: ProcessAt after now schedules, else enqueues
		now:     now,
	}, nil
}

// replayDue is when a replayed close runs: exactly what the producer
// computes for a new enqueue of the same order (creation + 5 minutes +
// margin, the payload's close_at, rounded up to a whole second). It fails
// for a payload the producer would refuse.
func (c *Client) replayDue(p tasks.ClosePayload) (time.Time, error) {
	_, due, err := c.producer.Payload(tasks.CloseOrder{
		OutTradeNo: p.OutTradeNo, TransactionID: p.TransactionID,
		MchID: p.MchID, SubMchID: p.SubMchID, SubAppID: p.SubAppID,
		CreatedAt: p.CreatedAt, CloseAt: p.CloseAt,
	})
	return due, err
}

// notArchived explains why the script found the task out of the archive.
func (c *Client) notArchived(ctx context.Context, q replayQueue, id string) replayResult {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	state, err := c.rdb.HGet(rctx, queueKey(q.name, "t:"+id), "state").Result()
	switch {
	case errors.Is(err, redis.Nil):
		return replayResult{outcome: replaySkipped, msg: fmt.Sprintf("skipped %s: no longer exists", id)}
	case err != nil:
		return replayResult{outcome: replaySkipped, msg: fmt.Sprintf("skipped %s: no longer archived", id)}
	}
	return replayResult{outcome: replaySkipped, msg: fmt.Sprintf("skipped %s: no longer archived (now %s)", id, state)}
}
