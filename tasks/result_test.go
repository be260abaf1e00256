package tasks

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestDecodeCloseRecord(t *testing.T) {
	at := time.Date(2026, 11, 22, 10, 5, 2, 0, time.UTC)
	tests := []struct {
		name        string
		data        string
		wantResult  *CloseResult
		wantFailure *CloseFailure
		wantErr     string
	}{
		{"no record", ``, nil, nil, ""},
		{"completed close",
			`{"outcome":"closed","http_status":204,"request_id":"r1","finished_at":"2026-11-22T10:05:02Z"}`,
			&CloseResult{Outcome: OutcomeClosed, HTTPStatus: 204, RequestID: "r1", FinishedAt: at}, nil, ""},
		{"paid, confirmed by query",
			`{"outcome":"paid","code":"ORDERPAID","finished_at":"2026-11-22T10:05:02Z","confirmed_by_query":true,"trade_state":"SUCCESS"}`,
			&CloseResult{Outcome: OutcomePaid, Code: "ORDERPAID", FinishedAt: at, ConfirmedByQuery: true, TradeState: "SUCCESS"}, nil, ""},
		{"retried failure",
			`{"outcome":"retry","code":"SYSTEM_ERROR","class":"retryable","message":"busy","http_status":500,"request_id":"r2","attempt":2,"at":"2026-11-22T10:05:02Z"}`,
			nil, &CloseFailure{Outcome: OutcomeRetry, Code: "SYSTEM_ERROR", Class: ClassRetryable, Message: "busy", HTTPStatus: 500, RequestID: "r2", Attempt: 2, At: at}, ""},
		{"archived failure",
			`{"outcome":"permanent","code":"NO_AUTH","class":"permanent","at":"2026-11-22T10:05:02Z"}`,
			nil, &CloseFailure{Outcome: OutcomePermanent, Code: "NO_AUTH", Class: ClassPermanent, At: at}, ""},
		{"postponed early start has no class",
			`{"outcome":"postponed","message":"not yet due","at":"2026-11-22T10:05:02Z"}`,
			nil, &CloseFailure{Outcome: OutcomePostponed, Message: "not yet due", At: at}, ""},
		{"not JSON", `closed`, nil, nil, "not a close result"},
		{"no outcome", `{"code":"X"}`, nil, nil, "no outcome"},
		{"wrong type", `{"outcome":"retry","attempt":"two"}`, nil, nil, "not a close failure"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, f, err := DecodeCloseRecord([]byte(tt.data))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || r != nil || f != nil {
					t.Fatalf("DecodeCloseRecord = %+v, %+v, %v; want error %q", r, f, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (r == nil) != (tt.wantResult == nil) || (r != nil && *r != *tt.wantResult) {
				t.Errorf("result = %+v, want %+v", r, tt.wantResult)
			}
			if (f == nil) != (tt.wantFailure == nil) || (f != nil && *f != *tt.wantFailure) {
				t.Errorf("failure = %+v, want %+v", f, tt.wantFailure)
			}
		})
	}
}

// TestRecordRoundTrip: every outcome is stored as the type its finality
// calls for and reads back unchanged.
func TestRecordRoundTrip(t *testing.T) {
	at := time.Date(2026, 11, 22, 10, 5, 2, 0, time.UTC)
	for _, o := range []string{OutcomeClosed, OutcomeAlreadyClosed, OutcomeNotFound, OutcomePaid} {
		data, _ := json.Marshal(CloseResult{Outcome: o, FinishedAt: at})
		if r, f, err := DecodeCloseRecord(data); err != nil || f != nil || r == nil || r.Outcome != o {
			t.Errorf("%s: %+v %+v %v", o, r, f, err)
		}
	}
	for _, o := range []string{OutcomeRetry, OutcomeRateLimited, OutcomePermanent, OutcomeExhausted,
		OutcomePostponed, OutcomeInvalidPayload, OutcomePossiblyEarly} {
		if FinalOutcome(o) {
			t.Errorf("%s is final", o)
		}
		data, _ := json.Marshal(CloseFailure{Outcome: o, Class: ClassPermanent, At: at})
		if r, f, err := DecodeCloseRecord(data); err != nil || r != nil || f == nil || f.Outcome != o {
			t.Errorf("%s: %+v %+v %v", o, r, f, err)
		}
	}
}
