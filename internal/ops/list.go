package ops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hibiken/asynq"

	"github.com/wxclose/wxclose/tasks"
)

// DefaultListLimit is the number of tasks List returns when
// ListOptions.Limit is zero.
const DefaultListLimit = 100

// listPageSize is the page size used to walk asynq's lists (a variable so
// that tests can exercise paging with a few tasks).
var listPageSize = 500

// States are the task states List accepts, in the order List walks them
// when no state is given.
var States = []string{"active", "pending", "scheduled", "retry", "archived", "completed"}

// ListOptions selects the tasks List returns.
type ListOptions struct {
	// Queue is tasks.QueueClose (every close queue, shards merged), one
	// shard (close_order:<n>) or tasks.QueueReconcile. If empty,
	// tasks.QueueClose.
	Queue string
	// State is one of States. If empty, every state, in the order of
	// States.
	State string
	// Limit is the maximum number of tasks. If zero, DefaultListLimit.
	Limit int
}

// ListedTask is one task as List reports it.
type ListedTask struct {
	ID    string `json:"id"`
	Queue string `json:"queue"`
	Type  string `json:"type"`
	State string `json:"state"`
	// OrderNo is the out_trade_no, else the transaction_id, of the payload.
	OrderNo   string    `json:"order_no,omitempty"`
	MchID     string    `json:"mchid,omitempty"`
	SubMchID  string    `json:"sub_mchid,omitempty"`
	CreatedAt time.Time `json:"created_at,omitzero"`
	// NextRunAt is when a scheduled, pending or retry task runs next.
	NextRunAt    time.Time `json:"next_run_at,omitzero"`
	LastFailedAt time.Time `json:"last_failed_at,omitzero"`
	CompletedAt  time.Time `json:"completed_at,omitzero"`
	Retried      int       `json:"retried"`
	MaxRetry     int       `json:"max_retry"`
	// LastError is asynq's text of the last failed attempt's error.
	LastError string `json:"last_error,omitempty"`
	// Failure is the handler's record of the last failed attempt of a
	// close that has not completed (see Status.Failure); nil without one.
	Failure *tasks.CloseFailure `json:"failure,omitempty"`
	// PayloadError is set when the payload is not a JSON object.
	PayloadError string `json:"payload_error,omitempty"`
}

// List returns up to opt.Limit tasks of a queue, walking asynq's lists page
// by page. A queue that never held a task is empty, not an error.
//
// close_order is the logical close queue: List merges every close queue
// Redis holds (close_order and its shards close_order:<n>, of any
// WXCLOSE_SHARDS), state by state, each state's tasks ordered by time (next
// run, last failure or completion). A shard's own name lists that shard
// alone.
func (c *Client) List(ctx context.Context, opt ListOptions) ([]ListedTask, error) {
	queue := opt.Queue
	if queue == "" {
		queue = tasks.QueueClose
	}
	if !tasks.IsCloseQueue(queue) && queue != tasks.QueueReconcile {
		return nil, fmt.Errorf("%w: queue %q is not a wxclose queue; use %s (or one of its shards, %s:N) or %s", ErrUsage, queue, tasks.QueueClose, tasks.QueueClose, tasks.QueueReconcile)
	}
	states := States
	if opt.State != "" {
		if !isState(opt.State) {
			return nil, fmt.Errorf("%w: state %q is not one of %s", ErrUsage, opt.State, strings.Join(States, ", "))
		}
		states = []string{opt.State}
	}
	limit := opt.Limit
	if limit <= 0 {
		limit = DefaultListLimit
	}
	physical := []string{queue}
	if queue == tasks.QueueClose {
		var err error
		if physical, err = tasks.ExistingCloseQueues(c.inspector); err != nil {
			return nil, err
		}
	}
	pageSize := min(limit, listPageSize)
	var out []ListedTask
	for _, state := range states {
		var batch []ListedTask
		for _, q := range physical {
			// Up to the remaining limit from each queue; the merge below
			// keeps the earliest.
			got := 0
			for page := 1; got < limit-len(out); page++ {
				if err := ctx.Err(); err != nil {
					return out, err
				}
				infos, err := c.listPage(q, state, asynq.PageSize(pageSize), asynq.Page(page))
				if errors.Is(err, asynq.ErrQueueNotFound) {
					break
				}
				if err != nil {
					return out, fmt.Errorf("list %s tasks of %s: %w", state, q, err)
				}
				for _, info := range infos[:min(len(infos), limit-len(out)-got)] {
					batch = append(batch, listed(info))
					got++
				}
				if len(infos) < pageSize {
					break
				}
			}
		}
		if len(physical) > 1 {
			slices.SortStableFunc(batch, func(a, b ListedTask) int { return a.listTime().Compare(b.listTime()) })
		}
		out = append(out, batch[:min(len(batch), limit-len(out))]...)
	}
	return out, nil
}

// listTime orders the tasks of one state merged from several shards: the
// next run of a waiting task, else the completion, else the last failure.
func (t ListedTask) listTime() time.Time {
	switch {
	case !t.NextRunAt.IsZero():
		return t.NextRunAt
	case !t.CompletedAt.IsZero():
		return t.CompletedAt
	}
	return t.LastFailedAt
}

func isState(s string) bool {
	for _, v := range States {
		if v == s {
			return true
		}
	}
	return false
}

func (c *Client) listPage(queue, state string, opts ...asynq.ListOption) ([]*asynq.TaskInfo, error) {
	switch state {
	case "active":
		return c.inspector.ListActiveTasks(queue, opts...)
	case "pending":
		return c.inspector.ListPendingTasks(queue, opts...)
	case "scheduled":
		return c.inspector.ListScheduledTasks(queue, opts...)
	case "retry":
		return c.inspector.ListRetryTasks(queue, opts...)
	case "archived":
		return c.inspector.ListArchivedTasks(queue, opts...)
	case "completed":
		return c.inspector.ListCompletedTasks(queue, opts...)
	}
	return nil, fmt.Errorf("%w: unknown state %q", ErrUsage, state)
}

// listPayload reads the fields close and reconcile payloads share. It is
// lenient on purpose: List shows what is stored, valid or not.
type listPayload struct {
	OutTradeNo    string    `json:"out_trade_no"`
	TransactionID string    `json:"transaction_id"`
	MchID         string    `json:"mchid"`
	SubMchID      string    `json:"sub_mchid"`
	CreatedAt     time.Time `json:"created_at"`
}

func listed(info *asynq.TaskInfo) ListedTask {
	t := ListedTask{
		ID: info.ID, Queue: info.Queue, Type: info.Type, State: info.State.String(),
		NextRunAt: info.NextProcessAt, LastFailedAt: info.LastFailedAt, CompletedAt: info.CompletedAt,
		Retried: info.Retried, MaxRetry: info.MaxRetry, LastError: info.LastErr,
	}
	if info.Type == tasks.TypeClose {
		// An unreadable record is left out: the list shows asynq's text.
		_, t.Failure, _ = tasks.ReadCloseRecord(info)
	}
	var p listPayload
	if err := json.Unmarshal(info.Payload, &p); err != nil {
		t.PayloadError = "payload is not a JSON order: " + err.Error()
		return t
	}
	t.OrderNo = tasks.OrderRef{OutTradeNo: p.OutTradeNo, TransactionID: p.TransactionID}.Number()
	t.MchID, t.SubMchID, t.CreatedAt = p.MchID, p.SubMchID, p.CreatedAt
	return t
}

// maxTableError is the width of the last-error column of WriteTable.
const maxTableError = 60

// lastError is the last-error column: the failure record when there is
// one, else asynq's text (tasks archived before records were stored, or
// failures outside the handler).
func (t ListedTask) lastError() string {
	if t.Failure != nil {
		return summarizeFailure(*t.Failure)
	}
	return oneLine(t.LastError)
}

// WriteTable prints tasks as an aligned table, one task per line.
func WriteTable(w io.Writer, ts []ListedTask) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tORDER\tMCHID\tCREATED\tNEXT RUN / LAST FAILED\tRETRIED\tLAST ERROR")
	for _, t := range ts {
		order, mch := t.OrderNo, t.MchID
		if t.PayloadError != "" {
			order = "(invalid payload)"
		}
		if t.SubMchID != "" {
			mch += "." + t.SubMchID
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d/%d\t%s\n",
			t.ID, t.State, dash(order), dash(mch), formatTime(t.CreatedAt), when(t),
			t.Retried, t.MaxRetry, dash(truncate(t.lastError(), maxTableError)))
	}
	return tw.Flush()
}

// WriteJSON prints tasks as one JSON array.
func WriteJSON(w io.Writer, ts []ListedTask) error {
	if ts == nil {
		ts = []ListedTask{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(ts)
}

func when(t ListedTask) string {
	switch {
	case !t.NextRunAt.IsZero():
		return "next " + formatTime(t.NextRunAt)
	case !t.CompletedAt.IsZero():
		return "done " + formatTime(t.CompletedAt)
	case !t.LastFailedAt.IsZero():
		return "failed " + formatTime(t.LastFailedAt)
	}
	return "-"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-3]) + "..."
}
