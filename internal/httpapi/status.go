package httpapi

import (
	"time"

	"github.com/hibiken/asynq"

	"github.com/wxclose/wxclose/tasks"
)

// closeStatus is the answer to GET /v1/closes/{task_id} (schema
// CloseStatus).
type closeStatus struct {
	TaskID      string              `json:"task_id"`
	State       string              `json:"state"`
	DueAt       time.Time           `json:"due_at,omitzero"`
	NextRunAt   time.Time           `json:"next_run_at,omitzero"`
	Retried     int                 `json:"retried"`
	MaxRetry    int                 `json:"max_retry"`
	LastError   *lastError          `json:"last_error,omitempty"`
	CompletedAt time.Time           `json:"completed_at,omitzero"`
	Result      *tasks.CloseResult  `json:"result,omitempty"`
	Order       *tasks.ClosePayload `json:"order,omitempty"`
	OrderError  string              `json:"order_error,omitempty"`
}

// lastError is the last attempt that did not end the close (schema
// LastError): asynq's text of the error, and the worker's record of it
// (tasks.CloseFailure) as data.
type lastError struct {
	Message    string    `json:"message"`
	Outcome    string    `json:"outcome,omitempty"`
	Class      string    `json:"class,omitempty"`
	Code       string    `json:"code,omitempty"`
	HTTPStatus int       `json:"http_status,omitempty"`
	RequestID  string    `json:"request_id,omitempty"`
	Attempt    int       `json:"attempt,omitempty"`
	FailedAt   time.Time `json:"failed_at,omitzero"`
}

func statusOf(info *asynq.TaskInfo) closeStatus {
	s := closeStatus{
		TaskID: info.ID, State: info.State.String(),
		NextRunAt: info.NextProcessAt, CompletedAt: info.CompletedAt,
		Retried: info.Retried, MaxRetry: info.MaxRetry,
	}
	if info.State == asynq.TaskStateActive || info.State == asynq.TaskStateCompleted || info.State == asynq.TaskStateArchived {
		s.NextRunAt = time.Time{}
	}
	s.DueAt, _ = tasks.DueFromHeaders(info.Headers)
	if p, err := tasks.DecodeClosePayload(info.Payload); err != nil {
		s.OrderError = err.Error()
	} else {
		s.Order = &p
	}
	// An unreadable record (written by something else) is left out: the
	// state and asynq's error text still say where the close stands.
	result, failure, _ := tasks.ReadCloseRecord(info)
	if info.State == asynq.TaskStateCompleted {
		s.Result = result
	}
	if failure != nil || info.LastErr != "" {
		le := &lastError{Message: info.LastErr, FailedAt: info.LastFailedAt}
		if failure != nil {
			le.Outcome, le.Class, le.Code = failure.Outcome, failure.Class, failure.Code
			le.HTTPStatus, le.RequestID, le.Attempt = failure.HTTPStatus, failure.RequestID, failure.Attempt
			if le.Message == "" {
				le.Message = failure.Message
			}
			if !failure.At.IsZero() {
				le.FailedAt = failure.At
			}
		}
		s.LastError = le
	}
	return s
}
