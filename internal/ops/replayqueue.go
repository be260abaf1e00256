package ops

import (
	"fmt"
	"time"

	"github.com/wxclose/wxclose/tasks"
)

// replayQueue is what Replay needs to know about the tasks of one queue:
// their type, how to read the order a payload names, and when a replayed
// task runs. Everything else (collecting, the atomic move, its retries) is
// the same for every queue, in replay.go.
type replayQueue struct {
	name     string // the asynq queue
	taskType string
	// codes reports whether the queue's archived tasks carry failure
	// records with WeChat Pay codes (ReplayFilter.Code).
	codes bool
	// order decodes a payload and returns the order it names and the id
	// that order's task has. An error means the payload is corrupt.
	order func(payload []byte) (ref tasks.OrderRef, id string, err error)
	// due returns when the replayed task runs (zero: now) and the
	// tasks.HeaderDue header to store with it ("" for none). It fails for
	// a payload that must not run again as it is.
	due func(c *Client, payload []byte, now time.Time) (due time.Time, header string, err error)
}

// closeReplay replays closes: the due time is recomputed from the payload
// exactly as the producer computes it, so the 5-minute rule and the
// merchant's deadline hold for a replayed close too.
var closeReplay = replayQueue{
	name: tasks.QueueClose, taskType: tasks.TypeClose, codes: true,
	order: func(payload []byte) (tasks.OrderRef, string, error) {
		p, err := tasks.DecodeClosePayload(payload)
		if err != nil {
			return tasks.OrderRef{}, "", err
		}
		return p.Ref(), tasks.CloseTaskID(p.Ref()), nil
	},
	due: func(c *Client, payload []byte, now time.Time) (time.Time, string, error) {
		p, err := tasks.DecodeClosePayload(payload)
		if err != nil {
			return time.Time{}, "", err
		}
		due, err := c.replayDue(p)
		if err != nil {
			return time.Time{}, "", err
		}
		// The header records when the task became runnable, as the
		// producer writes it: the worker measures a first run's lateness
		// from it.
		runnable := due
		if now.After(due) {
			runnable = now
		}
		return due, tasks.FormatDue(runnable), nil
	},
}

// reconcileReplay replays paid-order hand-offs (the reconciliation queue,
// delivered by the worker's webhook when one is configured). They run at
// once, under the same task id, so a redelivered webhook carries the same
// webhook-id and the receiver recognises a duplicate.
var reconcileReplay = replayQueue{
	name: tasks.QueueReconcile, taskType: tasks.TypeReconcile,
	order: func(payload []byte) (tasks.OrderRef, string, error) {
		p, err := tasks.DecodeReconcilePayload(payload)
		if err != nil {
			return tasks.OrderRef{}, "", err
		}
		ref := tasks.OrderRef{OutTradeNo: p.OutTradeNo, TransactionID: p.TransactionID, MchID: p.MchID, SubMchID: p.SubMchID}
		return ref, tasks.ReconcileTaskID(ref), nil
	},
	due: func(*Client, []byte, time.Time) (time.Time, string, error) { return time.Time{}, "", nil },
}

// ReplayQueues are the queues Replay works on (ReplayFilter.Queue).
var ReplayQueues = []string{tasks.QueueClose, tasks.QueueReconcile}

// replayQueueFor returns the description of a queue Replay works on; ""
// is the close queue.
func replayQueueFor(name string) (replayQueue, error) {
	switch name {
	case "", tasks.QueueClose:
		return closeReplay, nil
	case tasks.QueueReconcile:
		return reconcileReplay, nil
	}
	return replayQueue{}, fmt.Errorf("%w: replay works on the %s and %s queues, not %q", ErrUsage, tasks.QueueClose, tasks.QueueReconcile, name)
}

// queueKey returns the key of a queue structure in asynq v0.26.0's layout
// ("asynq:{reconciliation}:archived", "asynq:{close_order}:t:<id>").
func queueKey(queue, suffix string) string { return "asynq:{" + queue + "}:" + suffix }
