package tasks

import (
	"testing"
	"time"

	"github.com/hibiken/asynq"
)

// TestNeedsRecord is the writer's half of the plain-close rule: only a
// plain close (closed, from a signed close answer) goes unstored.
func TestNeedsRecord(t *testing.T) {
	tests := []struct {
		r    CloseResult
		want bool
	}{
		{CloseResult{Outcome: OutcomeClosed, HTTPStatus: 204, RequestID: "r"}, false},
		{CloseResult{Outcome: OutcomeClosed, Code: "SUCCESS", Message: "OK"}, false},
		{CloseResult{Outcome: OutcomeClosed, ConfirmedByQuery: true, TradeState: "CLOSED"}, true},
		{CloseResult{Outcome: OutcomeAlreadyClosed, Code: "ORDERCLOSED"}, true},
		{CloseResult{Outcome: OutcomeNotFound, Code: "ORDER_NOT_EXIST"}, true},
		{CloseResult{Outcome: OutcomePaid, Code: "ORDERPAID"}, true},
	}
	for _, tt := range tests {
		if got := tt.r.NeedsRecord(); got != tt.want {
			t.Errorf("%+v.NeedsRecord() = %t, want %t", tt.r, got, tt.want)
		}
	}
}

// TestReadCloseRecord is the readers' half: a completed close task without
// a CloseResult (no record, or a failure left by an earlier attempt) was a
// plain close; any other state reads the record as stored.
func TestReadCloseRecord(t *testing.T) {
	completed := time.Date(2026, 11, 22, 10, 5, 3, 0, time.UTC)
	at := time.Date(2026, 11, 22, 10, 5, 2, 0, time.UTC)
	const (
		paid    = `{"outcome":"paid","code":"ORDERPAID","finished_at":"2026-11-22T10:05:02Z"}`
		failure = `{"outcome":"retry","code":"SYSTEM_ERROR","class":"retryable","attempt":1,"at":"2026-11-22T10:05:02Z"}`
	)
	plain := &CloseResult{Outcome: OutcomeClosed, FinishedAt: completed}
	retried := &CloseFailure{Outcome: OutcomeRetry, Code: "SYSTEM_ERROR", Class: ClassRetryable, Attempt: 1, At: at}
	tests := []struct {
		name        string
		state       asynq.TaskState
		record      string
		wantResult  *CloseResult
		wantFailure *CloseFailure
		wantErr     bool
	}{
		{"completed, no record: plain close", asynq.TaskStateCompleted, ``, plain, nil, false},
		{"completed, stale failure: plain close", asynq.TaskStateCompleted, failure, plain, nil, false},
		{"completed, stored result", asynq.TaskStateCompleted, paid,
			&CloseResult{Outcome: OutcomePaid, Code: "ORDERPAID", FinishedAt: at}, nil, false},
		{"completed, stored plain result (older worker)", asynq.TaskStateCompleted,
			`{"outcome":"closed","http_status":204,"request_id":"r1","finished_at":"2026-11-22T10:05:02Z"}`,
			&CloseResult{Outcome: OutcomeClosed, HTTPStatus: 204, RequestID: "r1", FinishedAt: at}, nil, false},
		{"completed, unreadable record", asynq.TaskStateCompleted, `not json`, nil, nil, true},
		{"completed, failure with an unknown outcome", asynq.TaskStateCompleted, `{"outcome":"pwned"}`, nil, nil, true},
		{"retry, failure", asynq.TaskStateRetry, failure, nil, retried, false},
		{"archived, failure", asynq.TaskStateArchived, failure, nil, retried, false},
		{"archived, no record", asynq.TaskStateArchived, ``, nil, nil, false},
		{"scheduled, no record", asynq.TaskStateScheduled, ``, nil, nil, false},
		{"pending, no record", asynq.TaskStatePending, ``, nil, nil, false},
		{"active, stale failure", asynq.TaskStateActive, failure, nil, retried, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info := &asynq.TaskInfo{State: tt.state, Result: []byte(tt.record)}
			if tt.state == asynq.TaskStateCompleted {
				info.CompletedAt = completed
			}
			r, f, err := ReadCloseRecord(info)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %t", err, tt.wantErr)
			}
			if !equalPtr(r, tt.wantResult) || !equalPtr(f, tt.wantFailure) {
				t.Errorf("ReadCloseRecord = %+v, %+v; want %+v, %+v", r, f, tt.wantResult, tt.wantFailure)
			}
			if tt.state == asynq.TaskStateCompleted && err == nil && (r == nil || f != nil) {
				t.Errorf("a completed close must read as a result and never as a failure")
			}
		})
	}
}

// TestPlainCloseRoundTrip ties the two halves: a result the worker does not
// store reads back, from a completed task, as the same outcome.
func TestPlainCloseRoundTrip(t *testing.T) {
	for _, o := range []string{OutcomeClosed, OutcomeAlreadyClosed, OutcomeNotFound, OutcomePaid} {
		for _, confirmed := range []bool{false, true} {
			r := CloseResult{Outcome: o, ConfirmedByQuery: confirmed}
			if r.NeedsRecord() {
				continue
			}
			got, err := CompletedCloseResult(nil, time.Time{})
			if err != nil || got.Outcome != r.Outcome || got.ConfirmedByQuery != r.ConfirmedByQuery {
				t.Errorf("unstored %+v reads back as %+v, %v", r, got, err)
			}
		}
	}
}

func equalPtr[T comparable](a, b *T) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}
