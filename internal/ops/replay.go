package ops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"

	"github.com/wxclose/wxclose/tasks"
)

// Defaults of ReplayOptions.
const (
	DefaultReplayAttempts   = 5
	DefaultReplayRetryDelay = 200 * time.Millisecond
)

// ReplayFilter selects archived close tasks. Set filters are combined with
// AND. At least one filter, or All, is required, so that a forgotten flag
// cannot replay a whole archive.
type ReplayFilter struct {
	// Code selects tasks whose last error carries this WeChat Pay code
	// ("code=SYSTEM_ERROR" in the handler's errors), ignoring case.
	Code string
	// OlderThan selects tasks that last failed more than this long ago.
	OlderThan time.Duration
	// NewerThan selects tasks that last failed less than this long ago.
	NewerThan time.Duration
	// OutTradeNo and TransactionID select one order's task.
	OutTradeNo    string
	TransactionID string
	// All selects every archived close task; it cannot be combined with a
	// filter.
	All bool
}

func (f ReplayFilter) any() bool {
	return f.Code != "" || f.OlderThan != 0 || f.NewerThan != 0 || f.OutTradeNo != "" || f.TransactionID != ""
}

// Validate reports a missing filter, or conflicting or negative ones, with
// an error wrapping ErrUsage.
func (f ReplayFilter) Validate() error {
	switch {
	case f.All && f.any():
		return fmt.Errorf("%w: --all replays every archived close task and cannot be combined with a filter; drop one", ErrUsage)
	case !f.All && !f.any():
		return fmt.Errorf("%w: give at least one filter (--code, --older-than, --newer-than, --out-trade-no, --transaction-id), or --all to replay every archived close task", ErrUsage)
	case f.OlderThan < 0 || f.NewerThan < 0:
		return fmt.Errorf("%w: --older-than and --newer-than must be positive durations such as 30m or 2h", ErrUsage)
	}
	return nil
}

var codeRE = regexp.MustCompile(`\bcode=([A-Za-z0-9_.\-]+)`)

// matchInfo applies the filters that need no payload.
func (f ReplayFilter) matchInfo(info *asynq.TaskInfo, now time.Time) bool {
	if f.Code != "" {
		found := false
		for _, m := range codeRE.FindAllStringSubmatch(info.LastErr, -1) {
			if strings.EqualFold(m[1], f.Code) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	// A task archived by hand has no failure time; age filters skip it
	// rather than guess.
	if f.OlderThan > 0 && (info.LastFailedAt.IsZero() || now.Sub(info.LastFailedAt) <= f.OlderThan) {
		return false
	}
	if f.NewerThan > 0 && (info.LastFailedAt.IsZero() || now.Sub(info.LastFailedAt) >= f.NewerThan) {
		return false
	}
	return true
}

func (f ReplayFilter) matchPayload(p tasks.ClosePayload) bool {
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
	// Err receives skipped tasks, failures, and the payloads of tasks that
	// could not be re-enqueued. If nil, discarded; set it.
	Err io.Writer
	// Progress, if not nil, receives a self-overwriting progress line; set
	// it only when it is a terminal.
	Progress io.Writer
	// Attempts is how many times a deleted task's re-enqueue is tried. If
	// zero, DefaultReplayAttempts.
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
	// Replayed were deleted from the archive and enqueued again.
	Replayed int `json:"replayed"`
	// AlreadyScheduled were deleted, but the order already had another
	// close task again (enqueued meanwhile); nothing is lost.
	AlreadyScheduled int `json:"already_scheduled"`
	// Skipped were left alone: corrupt payload, not a close task, or no
	// longer archived when their turn came.
	Skipped int `json:"skipped"`
	// Failed could not be replayed and are still archived.
	Failed int `json:"failed"`
	// Lost were deleted from the archive but could not be enqueued again;
	// their payloads were printed on ReplayOptions.Err.
	Lost int `json:"lost"`
}

// OK reports whether nothing failed or was lost.
func (s ReplaySummary) OK() bool { return s.Failed == 0 && s.Lost == 0 }

func (s ReplaySummary) String() string {
	return fmt.Sprintf("%d archived scanned, %d matched, %d replayed, %d already scheduled, %d skipped, %d failed, %d lost",
		s.Scanned, s.Matched, s.Replayed, s.AlreadyScheduled, s.Skipped, s.Failed, s.Lost)
}

// candidate is an archived task selected in the collect phase.
type candidate struct {
	id      string
	payload tasks.ClosePayload
	info    *asynq.TaskInfo
}

type replayOutcome int

const (
	replayed replayOutcome = iota
	replayedDup
	replaySkipped
	replayFailed
	replayLost
)

type replayResult struct {
	outcome replayOutcome
	// out goes to Out, msg to Err.
	out, msg string
}

// Replay puts archived close tasks back to work with a fresh retry budget.
// asynq's own Inspector.RunTask keeps the spent retry count, so a task that
// had exhausted its retries would get one attempt; Replay instead deletes
// the archived task and enqueues its payload again under the same id with
// tasks.Producer.RequeueClose, which recomputes the due time from
// created_at (the 5-minute rule still holds) and stores the producer's
// retry budget.
//
// Replay first collects the ids of every matching task, paging through the
// archive, and only then acts: deleting while paging would shift later
// pages. Each task is read again just before it is deleted, and left alone
// if it is no longer archived. Tasks whose payload does not decode are
// skipped and stay archived.
//
// Money safety: a deleted task must be enqueued again. Its re-enqueue is
// tried opt.Attempts times, ignoring the cancellation of ctx (an operator's
// Ctrl-C stops new work, not a task between delete and enqueue); if it still
// fails, the payload is written to opt.Err as a JSON line that
// "enqueue --file -" accepts, and the task counts as Lost.
func (c *Client) Replay(ctx context.Context, opt ReplayOptions) (ReplaySummary, error) {
	if err := opt.Filter.Validate(); err != nil {
		return ReplaySummary{}, err
	}
	workers := opt.Concurrency
	if workers <= 0 {
		workers = DefaultConcurrency
	}
	out, errw := orDiscard(opt.Out), orDiscard(opt.Err)
	prog := newProgress(opt.Progress)

	var sum ReplaySummary
	cands, err := c.collectArchived(ctx, opt.Filter, &sum, errw, prog)
	prog.clear()
	if err != nil {
		return sum, err
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
				results <- c.replayOne(ctx, cd, opt)
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
		case replayedDup:
			sum.AlreadyScheduled++
		case replaySkipped:
			sum.Skipped++
		case replayFailed:
			sum.Failed++
		case replayLost:
			sum.Lost++
		}
		if r.out != "" {
			prog.clear()
			fmt.Fprintln(out, r.out)
		}
		if r.msg != "" {
			prog.clear()
			fmt.Fprintln(errw, r.msg)
		}
		prog.update(false, "replayed %d of %d (%d failed, %d lost)", done, len(cands), sum.Failed, sum.Lost)
	}
	prog.clear()
	return sum, ctx.Err()
}

// collectArchived pages through the archive and returns the matching tasks.
func (c *Client) collectArchived(ctx context.Context, f ReplayFilter, sum *ReplaySummary, errw io.Writer, prog *progress) ([]candidate, error) {
	now := c.now()
	seen := make(map[string]bool)
	var cands []candidate
	for page := 1; ; page++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		infos, err := c.inspector.ListArchivedTasks(tasks.QueueClose, asynq.PageSize(listPageSize), asynq.Page(page))
		if errors.Is(err, asynq.ErrQueueNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("list archived close tasks (page %d): %w", page, err)
		}
		for _, info := range infos {
			// Tasks archived while we page shift the list; an id seen twice
			// is counted once.
			if seen[info.ID] {
				continue
			}
			seen[info.ID] = true
			sum.Scanned++
			if !f.matchInfo(info, now) {
				continue
			}
			if info.Type != tasks.TypeClose {
				sum.Skipped++
				prog.clear()
				fmt.Fprintf(errw, "skipped %s: type %q is not %s; left in the archive\n", info.ID, info.Type, tasks.TypeClose)
				continue
			}
			p, err := tasks.DecodeClosePayload(info.Payload)
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
			if !f.matchPayload(p) {
				continue
			}
			cands = append(cands, candidate{id: info.ID, payload: p, info: info})
		}
		prog.update(false, "scanning the archive: %d tasks, %d match", sum.Scanned, len(cands))
		if len(infos) < listPageSize {
			return cands, nil
		}
	}
}

func describeCandidate(verb string, cd candidate) string {
	return fmt.Sprintf("%s %s (order %s, retried %d/%d, last failed %s): %s",
		verb, cd.id, cd.payload.Ref().Number(), cd.info.Retried, cd.info.MaxRetry,
		formatTime(cd.info.LastFailedAt), truncate(oneLine(cd.info.LastErr), 200))
}

// replayOne deletes one archived task and enqueues it again.
func (c *Client) replayOne(ctx context.Context, cd candidate, opt ReplayOptions) replayResult {
	// Read it again: a worker, another operator or asynq's trimming may
	// have changed it since the collect phase.
	info, err := c.inspector.GetTaskInfo(tasks.QueueClose, cd.id)
	switch {
	case errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound):
		return replayResult{outcome: replaySkipped, msg: fmt.Sprintf("skipped %s: no longer exists", cd.id)}
	case err != nil:
		return replayResult{outcome: replayFailed, msg: fmt.Sprintf("failed %s: look up: %v; still archived, run replay again", cd.id, err)}
	case info.State != asynq.TaskStateArchived:
		return replayResult{outcome: replaySkipped, msg: fmt.Sprintf("skipped %s: no longer archived (now %s)", cd.id, info.State)}
	}
	p, err := tasks.DecodeClosePayload(info.Payload)
	if err != nil {
		return replayResult{outcome: replaySkipped, msg: fmt.Sprintf("skipped %s: payload is corrupt (%s); left in the archive", cd.id, Message(err))}
	}
	if err := c.inspector.DeleteTask(tasks.QueueClose, cd.id); err != nil {
		if errors.Is(err, asynq.ErrTaskNotFound) {
			return replayResult{outcome: replaySkipped, msg: fmt.Sprintf("skipped %s: no longer exists", cd.id)}
		}
		// The delete may or may not have happened (a timeout, say). The
		// re-enqueue below settles it: if the archived copy is still there,
		// its id blocks the enqueue and we report a failure, not a loss.
	}
	return c.requeue(ctx, cd.id, p, opt)
}

func (c *Client) requeue(ctx context.Context, id string, p tasks.ClosePayload, opt ReplayOptions) replayResult {
	attempts := opt.Attempts
	if attempts <= 0 {
		attempts = DefaultReplayAttempts
	}
	delay := opt.RetryDelay
	if delay <= 0 {
		delay = DefaultReplayRetryDelay
	}
	// The task is out of the archive now: finish even if the operator
	// interrupts, within a bound.
	ctx = context.WithoutCancel(ctx)
	var lastErr error
	for i := range attempts {
		if i > 0 {
			time.Sleep(delay)
			delay *= 2
		}
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		s, err := c.producer.RequeueClose(actx, p)
		cancel()
		if err != nil {
			lastErr = err
			if errors.Is(err, tasks.ErrInvalidPayload) {
				break // decoded fine a moment ago; retrying cannot help
			}
			continue
		}
		switch {
		case !s.Duplicate:
			return replayResult{outcome: replayed, out: fmt.Sprintf("replayed %s %s", id, describeDue(s.DueAt, c.now()))}
		case s.State == asynq.TaskStateArchived.String():
			return replayResult{outcome: replayFailed, msg: fmt.Sprintf("failed %s: could not delete it from the archive; still archived, run replay again", id)}
		default:
			return replayResult{outcome: replayedDup, out: fmt.Sprintf("already scheduled %s (%s) %s: the order got a new close task meanwhile", id, dash(s.State), describeDue(s.DueAt, c.now()))}
		}
	}
	line, _ := json.Marshal(p)
	return replayResult{outcome: replayLost, msg: fmt.Sprintf(
		"LOST %s: deleted from the archive but NOT enqueued again after %d attempts (last error: %v).\n"+
			"Enqueue it again now by piping the next line into `enqueue --file -`:\n%s", id, attempts, lastErr, line)}
}
