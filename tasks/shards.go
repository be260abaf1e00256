package tasks

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// MaxShards bounds the number of close queues (WXCLOSE_SHARDS). A Redis
// Cluster has 16,384 hash slots and each shard is one of them; a thousand
// shards is far more than any cluster has masters.
const MaxShards = 1024

// Sharded close queues. asynq keeps every key of a queue under one Redis
// Cluster hash slot ("asynq:{close_order}:..."), so one queue lives on one
// node. To spread closes over a cluster they can be spread over shards
// queues, close_order:0 ... close_order:<shards-1>; each order's close goes
// to the shard CloseShard gives its task id, so a second enqueue of the same
// order meets its first task (asynq recognises a task id only within one
// queue). With one shard (the default) the only close queue is close_order,
// exactly as before sharding existed.
//
// The shard is FNV-1a (32 bits) of the task id, modulo the number of
// shards. Every producer must use the same number of shards; see the
// README for changing it on a live system.

// CloseShard returns the shard of the close task with the given id among
// shards shards: FNV-1a-32(taskID) mod shards, or 0 when shards is 1 or
// less.
func CloseShard(taskID string, shards int) int {
	if shards <= 1 {
		return 0
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(taskID)) // hash.Hash never fails
	return int(h.Sum32() % uint32(shards))
}

// CloseQueue returns the queue of the close task with the given id when
// close tasks are spread over shards queues: QueueClose when shards is 1 or
// less, else "close_order:<CloseShard(taskID, shards)>".
func CloseQueue(taskID string, shards int) string {
	if shards <= 1 {
		return QueueClose
	}
	return ShardQueue(CloseShard(taskID, shards))
}

// ShardQueue returns the name of close shard n: "close_order:<n>".
func ShardQueue(n int) string { return QueueClose + ":" + strconv.Itoa(n) }

// CloseQueues returns every close queue of a layout of shards queues, in
// shard order: [close_order] for 1 (or less), else close_order:0 ...
// close_order:<shards-1>.
func CloseQueues(shards int) []string {
	if shards <= 1 {
		return []string{QueueClose}
	}
	qs := make([]string, shards)
	for i := range qs {
		qs[i] = ShardQueue(i)
	}
	return qs
}

// IsCloseQueue reports whether name is a close queue of some layout:
// close_order, or close_order:<n> with n a shard number written without
// leading zeros and below MaxShards.
func IsCloseQueue(name string) bool {
	if name == QueueClose {
		return true
	}
	n, ok := strings.CutPrefix(name, QueueClose+":")
	if !ok || n == "" || len(n) > 1 && n[0] == '0' {
		return false
	}
	i, err := strconv.Atoi(n)
	return err == nil && i >= 0 && i < MaxShards && strconv.Itoa(i) == n
}

// ValidateShards reports a number of shards outside 1..MaxShards. name is
// the setting, for the message (WXCLOSE_SHARDS, --shards).
func ValidateShards(name string, n int) error {
	if n < 1 || n > MaxShards {
		return fmt.Errorf("%s must be a whole number from 1 to %d, not %d", name, MaxShards, n)
	}
	return nil
}

// ExistingCloseQueues returns the close queues asynq's queue set names (a
// queue enters it with its first task and stays until deleted), sorted.
func ExistingCloseQueues(insp *asynq.Inspector) ([]string, error) {
	all, err := insp.Queues()
	if err != nil {
		return nil, fmt.Errorf("list asynq queues: %w", err)
	}
	var qs []string
	for _, q := range all {
		if IsCloseQueue(q) {
			qs = append(qs, q)
		}
	}
	slices.Sort(qs)
	return qs, nil
}

// closeLocator finds the copies of a close task across shard layouts. It
// is the one lookup the producer (cancel), the operator commands (status)
// and the HTTP API (GET and DELETE) share.
type closeLocator struct {
	insp             *asynq.Inspector
	rdb              redis.UniversalClient
	shards, previous int
}

// candidates are the queues where a task id is expected: its queue in the
// current layout, then in the previous one.
func (l closeLocator) candidates(id string) []string {
	qs := []string{CloseQueue(id, l.shards)}
	if l.previous > 0 {
		if q := CloseQueue(id, l.previous); q != qs[0] {
			qs = append(qs, q)
		}
	}
	return qs
}

// find returns every copy of the task found in the candidate queues; when
// there is none, it looks in every other close queue Redis knows and
// returns the copies there. It returns an error wrapping ErrNoClose when no
// queue holds the task, and another error when Redis failed.
func (l closeLocator) find(ctx context.Context, id string) ([]*asynq.TaskInfo, error) {
	cands := l.candidates(id)
	found, err := l.lookIn(ctx, id, cands)
	if err != nil || len(found) > 0 {
		return found, err
	}
	// Not where the layout puts it: a task enqueued under another number of
	// shards (a producer not yet switched, or PreviousShards unset after a
	// change) is still a close of this order.
	existing, err := ExistingCloseQueues(l.insp)
	if err != nil {
		return nil, fmt.Errorf("look up %s: %w", id, err)
	}
	others := slices.DeleteFunc(existing, func(q string) bool { return slices.Contains(cands, q) })
	others, err = l.holding(ctx, id, others)
	if err != nil {
		return nil, fmt.Errorf("look up %s: %w", id, err)
	}
	found, err = l.lookIn(ctx, id, others)
	if err != nil {
		return nil, err
	}
	if len(found) == 0 {
		return nil, fmt.Errorf("%s: %w", id, ErrNoClose)
	}
	return found, nil
}

// holding returns the queues among queues that hold a task with this id,
// asking them all in one pipeline (on a Cluster, one per node) rather than
// one lookup each: with many shards, a search for an order that has no
// close at all stays a couple of round trips.
func (l closeLocator) holding(ctx context.Context, id string, queues []string) ([]string, error) {
	if len(queues) == 0 {
		return nil, nil
	}
	pipe := l.rdb.Pipeline()
	cmds := make([]*redis.IntCmd, len(queues))
	for i, q := range queues {
		cmds[i] = pipe.Exists(ctx, taskKey(q, id))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, err
	}
	var out []string
	for i, c := range cmds {
		if c.Val() > 0 {
			out = append(out, queues[i])
		}
	}
	return out, nil
}

func (l closeLocator) lookIn(ctx context.Context, id string, queues []string) ([]*asynq.TaskInfo, error) {
	var found []*asynq.TaskInfo
	for _, q := range queues {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		info, err := l.insp.GetTaskInfo(q, id)
		switch {
		case err == nil:
			found = append(found, info)
		case errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound):
		default:
			return nil, fmt.Errorf("look up %s in %s: %w", id, q, err)
		}
	}
	return found, nil
}

// preferred picks the copy that says most about where the order stands:
// a running close, then one waiting to run, then a completed one. Copies
// exist only after a change of the number of shards.
func preferred(copies []*asynq.TaskInfo) *asynq.TaskInfo {
	rank := func(s asynq.TaskState) int {
		switch s {
		case asynq.TaskStateActive:
			return 0
		case asynq.TaskStatePending, asynq.TaskStateScheduled, asynq.TaskStateRetry:
			return 1
		case asynq.TaskStateCompleted:
			return 2
		}
		return 3 // archived
	}
	best := copies[0]
	for _, c := range copies[1:] {
		if rank(c.State) < rank(best.State) {
			best = c
		}
	}
	return best
}

// taskKey is the Redis key of a task's hash in asynq v0.26.0's layout
// (base.TaskKey): "asynq:{<queue>}:t:<id>".
func taskKey(queue, id string) string { return "asynq:{" + queue + "}:t:" + id }

// replicationProbeKey is a key in the same Redis Cluster hash slot as every
// key of queue (the same {queue} hash tag), so that a write to it goes to
// the node, and through the replication stream, that holds the queue.
func replicationProbeKey(queue string) string { return "wxclose:{" + queue + "}:replicated" }
