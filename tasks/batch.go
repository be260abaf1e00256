package tasks

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/wxclose/wxclose/internal/asynqwire"
)

// BatchResult is what EnqueueClose returns, for one order of a batch.
type BatchResult struct {
	Scheduled Scheduled
	Err       error
}

// EnqueueCloses schedules the close of each order, exactly as one
// EnqueueClose call per order would (same validation, task id, queue,
// payload, header, options and duplicate handling), but sends the whole
// batch to Redis in one pipeline: one round trip (on a Cluster, one per
// node) instead of one per order. The result at index i is what EnqueueClose
// would have returned for orders[i]; one order's failure (invalid, or a
// Redis error) does not affect the others. A Redis error is wrapped as
// EnqueueClose wraps it ("enqueue close <task id>: ..."), though what
// follows is go-redis's error rather than asynq's rewording of it. A few
// hundred orders per call is a good size: the whole batch and its replies
// are held in memory.
//
// With ProducerConfig.PreviousShards or WaitReplicas set it calls
// EnqueueClose for each order in turn: correct, but no faster. Those
// settings need per-order lookups or waits the pipeline cannot carry, and
// they are transitional or special.
//
// Orders of the same task id within one batch behave as they would in
// sequence: the first is enqueued, the others are duplicates of it.
func (p *Producer) EnqueueCloses(ctx context.Context, orders []CloseOrder) []BatchResult {
	res := make([]BatchResult, len(orders))
	switch {
	case p.cfgErr != nil:
		for i := range res {
			res[i].Err = p.cfgErr
		}
		return res
	case p.cfg.PreviousShards > 0 || p.cfg.WaitReplicas > 0:
		for i, o := range orders {
			res[i].Scheduled, res[i].Err = p.EnqueueClose(ctx, o)
		}
		return res
	}
	ops := make([]batchOp, 0, len(orders))
	for i, o := range orders {
		op, err := p.prepare(o)
		if err != nil {
			res[i].Err = err
			continue
		}
		op.idx = i
		ops = append(ops, op)
	}
	if len(ops) > 0 {
		p.runBatch(ctx, ops, res)
	}
	return res
}

// batchOp is one order's task, ready to write.
type batchOp struct {
	idx       int
	id, queue string
	due       time.Time
	pending   bool // written as pending (runs now) rather than scheduled
	keys      []string
	args      []any
	cmd       *redis.Cmd
}

func (op *batchOp) script() *redis.Script {
	if op.pending {
		return pendingScript
	}
	return scheduledScript
}

// prepare does what enqueueClose and asynq's Client.EnqueueContext do
// before they reach Redis, with the same clocks: the producer's for the
// due header, the real one for asynq's choice between pending and
// scheduled and for pending_since.
func (p *Producer) prepare(o CloseOrder) (batchOp, error) {
	pl, due, err := p.Payload(o)
	if err != nil {
		return batchOp{}, err
	}
	data, err := json.Marshal(pl)
	if err != nil {
		return batchOp{}, fmt.Errorf("encode close payload: %w", err)
	}
	id := CloseTaskID(pl.Ref())
	queue := CloseQueue(id, p.cfg.Shards)
	runnable := due
	if now := p.cfg.Now(); now.After(due) {
		runnable = now
	}
	msg := asynqwire.NewTask{
		Type:    TypeClose,
		Payload: data,
		Headers: [][2]string{{HeaderDue, FormatDue(runnable)}},
		ID:      id,
		Queue:   queue,
		Retry:   p.cfg.MaxRetry,
		// asynq stores whole seconds, truncated.
		Timeout:   int64(DefaultCloseTimeout.Seconds()),
		Retention: int64(p.cfg.Retention.Seconds()),
	}
	encoded := msg.Append(make([]byte, 0, 96+len(data)+2*len(id)))
	op := batchOp{id: id, queue: queue, due: due}
	if now := time.Now(); due.After(now) {
		op.keys = []string{taskKey(queue, id), queueKey(queue, "scheduled")}
		op.args = []any{encoded, due.Unix(), id}
	} else {
		op.pending = true
		op.keys = []string{taskKey(queue, id), queueKey(queue, "pending")}
		op.args = []any{encoded, id, now.UnixNano()}
	}
	return op, nil
}

// runBatch writes the tasks of ops in one pipeline and fills their results.
func (p *Producer) runBatch(ctx context.Context, ops []batchOp, res []BatchResult) {
	pipe := p.rdb.Pipeline()
	// asynq adds a queue to its set before the queue's first task: listings
	// (Inspector.Queues, the dashboard, ExistingCloseQueues) read the set.
	// One node runs a pipeline in order, so the SADD still comes first; on
	// a Cluster the set may live on another node than the tasks, and a
	// reader may then see a task a moment before its queue is listed.
	registering := map[string]*redis.IntCmd{}
	for i := range ops {
		q := ops[i].queue
		if _, done := p.registered.Load(q); !done && registering[q] == nil {
			registering[q] = pipe.SAdd(ctx, allQueuesKey, q)
		}
	}
	for i := range ops {
		ops[i].cmd = ops[i].script().EvalSha(ctx, pipe, ops[i].keys, ops[i].args...)
	}
	_, _ = pipe.Exec(ctx) // each command carries its own error

	// A script cache emptied by a restart or SCRIPT FLUSH (on a Cluster, of
	// one node) fails the EVALSHA of every order sent there, and none of
	// them ran. EVAL both caches the script and runs it.
	var retry []*batchOp
	for i := range ops {
		if redis.HasErrorPrefix(ops[i].cmd.Err(), "NOSCRIPT") {
			retry = append(retry, &ops[i])
		}
	}
	if len(retry) > 0 {
		pipe := p.rdb.Pipeline()
		for _, op := range retry {
			op.cmd = op.script().Eval(ctx, pipe, op.keys, op.args...)
		}
		_, _ = pipe.Exec(ctx)
	}

	for q, cmd := range registering {
		if cmd.Err() == nil {
			p.registered.Store(q, struct{}{})
		}
	}
	for i := range ops {
		op := &ops[i]
		res[op.idx].Scheduled, res[op.idx].Err = p.batchResult(op, registering[op.queue])
	}
}

// batchResult turns the replies for one order into what EnqueueClose
// returns.
func (p *Producer) batchResult(op *batchOp, registered *redis.IntCmd) (Scheduled, error) {
	n, err := op.cmd.Int64()
	if err == nil && registered != nil && registered.Err() != nil {
		// The task may have been written; enqueueing the order again is
		// harmless (a duplicate) and registers the queue.
		err = fmt.Errorf("add queue %s to %s: %w", op.queue, allQueuesKey, registered.Err())
	}
	if err != nil {
		return Scheduled{}, fmt.Errorf("enqueue close %s: %w", op.id, err)
	}
	switch n {
	case 1:
		state := asynq.TaskStateScheduled
		if op.pending {
			state = asynq.TaskStatePending
		}
		return Scheduled{TaskID: op.id, DueAt: op.due, State: state.String(), Queue: op.queue}, nil
	case 0:
		s := Scheduled{TaskID: op.id, Duplicate: true, Queue: op.queue}
		if existing, err := p.inspector.GetTaskInfo(op.queue, op.id); err == nil {
			s.DueAt, s.State = existing.NextProcessAt, existing.State.String()
		}
		return s, nil
	}
	return Scheduled{}, fmt.Errorf("enqueue close %s: unexpected reply %d from the enqueue script", op.id, n)
}

// The scripts write a new task as asynq v0.26.0's Client does (its
// enqueueCmd and scheduleCmd in internal/rdb), so that asynq's server,
// Inspector and dashboard cannot tell the difference. They return 1 when
// the task was written and 0 when a task with that id already exists in
// the queue (asynq's ErrTaskIDConflict), which is left untouched.
var (
	// KEYS[1] asynq:{q}:t:<id>   KEYS[2] asynq:{q}:pending
	// ARGV[1] msg   ARGV[2] id   ARGV[3] now, Unix nanoseconds (pending_since,
	// from which asynq measures the queue's latency)
	pendingScript = redis.NewScript(`
if redis.call("EXISTS", KEYS[1]) == 1 then return 0 end
redis.call("HSET", KEYS[1], "msg", ARGV[1], "state", "pending", "pending_since", ARGV[3])
redis.call("LPUSH", KEYS[2], ARGV[2])
return 1
`)
	// KEYS[1] asynq:{q}:t:<id>   KEYS[2] asynq:{q}:scheduled
	// ARGV[1] msg   ARGV[2] process_at, Unix seconds   ARGV[3] id
	scheduledScript = redis.NewScript(`
if redis.call("EXISTS", KEYS[1]) == 1 then return 0 end
redis.call("HSET", KEYS[1], "msg", ARGV[1], "state", "scheduled")
redis.call("ZADD", KEYS[2], ARGV[2], ARGV[3])
return 1
`)
)

// allQueuesKey is asynq v0.26.0's set of queue names (base.AllQueues).
const allQueuesKey = "asynq:queues"

// queueKey is a key of a queue's structure in asynq v0.26.0's layout
// ("asynq:{<queue>}:pending", base.PendingKey; ":scheduled",
// base.ScheduledKey). The {queue} hash tag keeps it in the slot of the
// queue's task hashes, so one script may touch both on a Cluster.
func queueKey(queue, suffix string) string { return "asynq:{" + queue + "}:" + suffix }
