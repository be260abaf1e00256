package ops

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hibiken/asynq"

	"github.com/wxclose/wxclose/tasks"
)

// Status is where the close of one order stands.
type Status struct {
	TaskID string `json:"task_id"`
	// State is asynq's state: scheduled, pending, active, retry, archived
	// or completed.
	State string `json:"state"`
	// Retried and MaxRetry are the spent and total retry budget.
	Retried  int `json:"retried"`
	MaxRetry int `json:"max_retry"`
	// LastError is asynq's text of the last failed attempt's error, if
	// any. Failure holds the same failure as data; read that.
	LastError    string    `json:"last_error,omitempty"`
	LastFailedAt time.Time `json:"last_failed_at,omitzero"`
	// NextRunAt is when the task runs next (scheduled, pending, retry).
	NextRunAt time.Time `json:"next_run_at,omitzero"`
	// DueAt is the due time the producer recorded when it enqueued the task.
	DueAt       time.Time `json:"due_at,omitzero"`
	CompletedAt time.Time `json:"completed_at,omitzero"`
	// Result is the handler's outcome of a completed close: the stored
	// record, or for a plain close (which stores none) outcome closed at
	// CompletedAt (tasks.ReadCloseRecord).
	Result *tasks.CloseResult `json:"result,omitempty"`
	// Failure is the handler's record of the last failed attempt of a close
	// that has not completed (retrying, postponed or archived): WeChat Pay's
	// code, the failure's class, message, status and request id. It is nil
	// for a task that never failed and for one archived by a wxclose
	// version that stored no failure records; LastError is all there is
	// then.
	Failure *tasks.CloseFailure `json:"failure,omitempty"`
	// ResultError says why a stored record could not be read.
	ResultError string `json:"result_error,omitempty"`
	// Payload is the stored order; nil if it could not be decoded.
	Payload *tasks.ClosePayload `json:"payload,omitempty"`
	// PayloadError says why the stored payload is invalid; the worker
	// archives such tasks without calling WeChat Pay.
	PayloadError string `json:"payload_error,omitempty"`
}

// Status returns the close task of an order. ref.MchID defaults to the
// Client's merchant. It returns an error wrapping tasks.ErrNoClose when the
// order has no close task, and tasks.ErrInvalidPayload for a malformed ref.
func (c *Client) Status(ctx context.Context, ref tasks.OrderRef) (Status, error) {
	ref = c.withMchID(ref)
	if err := ref.Validate(); err != nil {
		return Status{}, err
	}
	// The order's shard, then the previous layout's, then every close
	// queue (tasks.Producer.LookupClose), as the HTTP API's GET does.
	info, err := c.producer.LookupClose(ctx, tasks.CloseTaskID(ref))
	if err != nil {
		return Status{}, err
	}
	return statusOf(info), nil
}

func statusOf(info *asynq.TaskInfo) Status {
	s := Status{
		TaskID: info.ID, State: info.State.String(),
		Retried: info.Retried, MaxRetry: info.MaxRetry,
		LastError: info.LastErr, LastFailedAt: info.LastFailedAt,
		NextRunAt: info.NextProcessAt, CompletedAt: info.CompletedAt,
	}
	s.DueAt, _ = tasks.DueFromHeaders(info.Headers)
	if p, err := tasks.DecodeClosePayload(info.Payload); err != nil {
		s.PayloadError = Message(err)
	} else {
		s.Payload = &p
	}
	r, f, err := tasks.ReadCloseRecord(info)
	if err != nil {
		s.ResultError = err.Error()
	}
	s.Result, s.Failure = r, f
	return s
}

// WriteStatus prints s as an aligned list of fields, or as one JSON object.
func WriteStatus(w io.Writer, s Status, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(s)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	field := func(name, value string) { fmt.Fprintf(tw, "%s:\t%s\n", name, value) }
	field("task", s.TaskID)
	field("state", s.State)
	field("attempts", fmt.Sprintf("%d retried of %d allowed", s.Retried, s.MaxRetry))
	if !s.DueAt.IsZero() {
		field("due", formatTime(s.DueAt))
	}
	if !s.NextRunAt.IsZero() {
		field("next run", formatTime(s.NextRunAt))
	}
	switch {
	case s.Failure != nil:
		field("last failure", describeFailure(*s.Failure))
	case s.LastError != "" || !s.LastFailedAt.IsZero():
		// No record: archived by a wxclose version that stored none, or
		// failed outside the handler (a lost lease). asynq's text is shown
		// as it is, never parsed.
		field("last failed", formatTime(s.LastFailedAt))
		field("last error", oneLine(s.LastError))
	}
	if !s.CompletedAt.IsZero() {
		field("completed", formatTime(s.CompletedAt))
	}
	switch {
	case s.Result != nil:
		field("outcome", describeResult(*s.Result))
	case s.ResultError != "":
		field("outcome", s.ResultError)
	}
	if s.Payload != nil {
		field("order", describePayload(*s.Payload))
	} else {
		field("order", "payload is invalid: "+s.PayloadError)
	}
	return tw.Flush()
}

func describeResult(r tasks.CloseResult) string {
	parts := []string{r.Outcome}
	if r.Code != "" {
		parts = append(parts, "code="+r.Code)
	}
	if r.HTTPStatus != 0 {
		parts = append(parts, fmt.Sprintf("status=%d", r.HTTPStatus))
	}
	if r.RequestID != "" {
		parts = append(parts, "request_id="+r.RequestID)
	}
	if !r.FinishedAt.IsZero() {
		parts = append(parts, "finished "+formatTime(r.FinishedAt))
	}
	if r.Message != "" {
		parts = append(parts, fmt.Sprintf("message=%q", r.Message))
	}
	return strings.Join(parts, " ")
}

func describeFailure(f tasks.CloseFailure) string {
	parts := []string{f.Outcome}
	if f.Code != "" {
		parts = append(parts, "code="+f.Code)
	}
	if f.Class != "" {
		parts = append(parts, "class="+f.Class)
	}
	if f.HTTPStatus != 0 {
		parts = append(parts, fmt.Sprintf("status=%d", f.HTTPStatus))
	}
	if f.RequestID != "" {
		parts = append(parts, "request_id="+f.RequestID)
	}
	if f.Attempt != 0 {
		parts = append(parts, fmt.Sprintf("attempt %d", f.Attempt))
	}
	if !f.At.IsZero() {
		parts = append(parts, "at "+formatTime(f.At))
	}
	if f.Message != "" {
		parts = append(parts, fmt.Sprintf("message=%q", oneLine(f.Message)))
	}
	return strings.Join(parts, " ")
}

// summarizeFailure is the short form of f for one table cell: outcome,
// code and message.
func summarizeFailure(f tasks.CloseFailure) string {
	s := f.Outcome
	if f.Code != "" {
		s += " " + f.Code
	}
	if f.Message != "" {
		s += ": " + oneLine(f.Message)
	}
	return s
}

func describePayload(p tasks.ClosePayload) string {
	var parts []string
	add := func(k, v string) {
		if v != "" {
			parts = append(parts, k+"="+v)
		}
	}
	add("out_trade_no", p.OutTradeNo)
	add("transaction_id", p.TransactionID)
	add("mchid", p.MchID)
	add("sub_mchid", p.SubMchID)
	add("sub_appid", p.SubAppID)
	add("created_at", formatTime(p.CreatedAt))
	if !p.CloseAt.IsZero() {
		add("close_at", formatTime(p.CloseAt))
	}
	return strings.Join(parts, " ")
}

// oneLine keeps a table or field on one line whatever an error contains.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
