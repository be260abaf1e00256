package httpapi

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wxclose/wxclose/tasks"
	"github.com/wxclose/wxclose/tasks/taskstest"
)

// TestPostCloseIsIdempotent: a new order is scheduled (201) no sooner than
// creation + 5 minutes; the same order again is a duplicate (200) with the
// existing task's state and nothing changes.
func TestPostCloseIsIdempotent(t *testing.T) {
	e := newEnv(t)
	created := time.Now().Add(-time.Minute).Truncate(time.Second)
	body := jsonBody(t, order("ORDER-1", created))

	first := e.do(req{method: "POST", path: "/v1/closes", body: body})
	if first.status != http.StatusCreated {
		t.Fatalf("first POST: %d %s", first.status, first.body)
	}
	var s scheduled
	first.decode(t, &s)
	wantID := "close:1900000109:out_trade_no:ORDER-1"
	if s.TaskID != wantID || s.Duplicate || s.State != "scheduled" {
		t.Fatalf("first POST = %+v, want new scheduled task %s", s, wantID)
	}
	// The 5-minute rule: creation + 5 min + the default 1 s margin.
	if want := created.Add(tasks.MinCloseAge + tasks.DefaultCloseMargin); !s.DueAt.Equal(want) {
		t.Fatalf("due_at = %s, want %s", s.DueAt, want)
	}
	if loc := first.header.Get("Location"); loc != taskURL(wantID) {
		t.Fatalf("Location = %q, want %q", loc, taskURL(wantID))
	}
	c := taskstest.RequireClose(t, e.redis.ConnOpt(), tasks.OrderRef{OutTradeNo: "ORDER-1", MchID: "1900000109"})
	if !c.Payload.CreatedAt.Equal(created) {
		t.Fatalf("stored created_at = %s, want %s", c.Payload.CreatedAt, created)
	}

	// A retry by the checkout service, even with another created_at, is a
	// duplicate and leaves the task alone.
	again := e.do(req{method: "POST", path: "/v1/closes", body: jsonBody(t, order("ORDER-1", created.Add(time.Minute)))})
	if again.status != http.StatusOK {
		t.Fatalf("second POST: %d %s", again.status, again.body)
	}
	var d scheduled
	again.decode(t, &d)
	if !d.Duplicate || d.TaskID != wantID || d.State != "scheduled" || !d.DueAt.Equal(s.DueAt) {
		t.Fatalf("second POST = %+v, want the existing task %+v as a duplicate", d, s)
	}
	if loc := again.header.Get("Location"); loc != taskURL(wantID) {
		t.Fatalf("Location = %q", loc)
	}
	c = taskstest.RequireClose(t, e.redis.ConnOpt(), tasks.OrderRef{OutTradeNo: "ORDER-1", MchID: "1900000109"})
	if !c.Payload.CreatedAt.Equal(created) {
		t.Fatalf("the duplicate changed the stored order: created_at = %s", c.Payload.CreatedAt)
	}
}

// TestPostCloseSchedule checks the due time the API reports, and stores,
// against the producer's rule for each kind of order.
func TestPostCloseSchedule(t *testing.T) {
	e := newEnv(t)
	now := time.Now().Truncate(time.Second)
	tests := []struct {
		name      string
		body      map[string]any
		wantState string
		wantDue   time.Time // zero: "now or a moment ago" (pending)
		wantID    string
	}{
		{"fresh order waits 5 minutes", order("FRESH", now), "scheduled", now.Add(5*time.Minute + time.Second), "close:1900000109:out_trade_no:FRESH"},
		{"old order is due at once", order("OLD", now.Add(-time.Hour)), "pending", time.Time{}, "close:1900000109:out_trade_no:OLD"},
		{"close_at later than 5 minutes wins", map[string]any{
			"out_trade_no": "DEADLINE", "created_at": now.Format(time.RFC3339), "close_at": now.Add(15 * time.Minute).Format(time.RFC3339),
		}, "scheduled", now.Add(15 * time.Minute), "close:1900000109:out_trade_no:DEADLINE"},
		{"close_at sooner than 5 minutes loses", map[string]any{
			"out_trade_no": "SOON", "created_at": now.Format(time.RFC3339), "close_at": now.Add(time.Minute).Format(time.RFC3339),
		}, "scheduled", now.Add(5*time.Minute + time.Second), "close:1900000109:out_trade_no:SOON"},
		{"institutional order by transaction id", map[string]any{
			"transaction_id": "4200000001", "mchid": "1900000100", "sub_mchid": "1900000200", "sub_appid": "wx_sub", "created_at": now.Format(time.RFC3339),
		}, "scheduled", now.Add(5*time.Minute + time.Second), "close:1900000100.1900000200:transaction_id:4200000001"},
		{"zone offsets are honoured", map[string]any{
			"out_trade_no": "ZONE", "created_at": now.In(time.FixedZone("CST", 8*3600)).Format(time.RFC3339),
		}, "scheduled", now.Add(5*time.Minute + time.Second), "close:1900000109:out_trade_no:ZONE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := e.doT(t, req{method: "POST", path: "/v1/closes", body: jsonBody(t, tt.body)})
			if a.status != http.StatusCreated {
				t.Fatalf("%d %s", a.status, a.body)
			}
			var s scheduled
			a.decode(t, &s)
			if s.TaskID != tt.wantID || s.State != tt.wantState {
				t.Fatalf("got %+v, want id %s state %s", s, tt.wantID, tt.wantState)
			}
			if !tt.wantDue.IsZero() && !s.DueAt.Equal(tt.wantDue) {
				t.Fatalf("due_at = %s, want %s", s.DueAt, tt.wantDue)
			}
			p, err := tasks.DecodeClosePayload(mustTaskPayload(t, e, s.TaskID))
			if err != nil {
				t.Fatal(err)
			}
			if s.DueAt.Before(p.NotBefore()) {
				t.Fatalf("due_at %s is before creation + 5 minutes / close_at (%s)", s.DueAt, p.NotBefore())
			}
		})
	}
}

func mustTaskPayload(t *testing.T, e *env, id string) []byte {
	t.Helper()
	info, err := e.api.inspector.GetTaskInfo(tasks.QueueClose, id)
	if err != nil {
		t.Fatalf("task %s: %v", id, err)
	}
	return info.Payload
}

// TestPostCloseRejects: each kind of bad request gets 400 (or 415) with
// the code and the field at fault, and nothing is stored. docRejects
// records whether the document can say so too (rules on time, and
// duplicate keys, are beyond JSON Schema).
func TestPostCloseRejects(t *testing.T) {
	e := newEnv(t)
	now := time.Now().Format(time.RFC3339)
	tests := []struct {
		name        string
		body        string
		contentType string
		status      int
		code, field string
		docRejects  bool
	}{
		{"unknown field", `{"out_trade_no":"A1","created_at":"` + now + `","closeAt":"` + now + `"}`, "", 400, CodeUnknownField, "closeAt", true},
		{"wrong case", `{"OUT_TRADE_NO":"A1","created_at":"` + now + `"}`, "", 400, CodeUnknownField, "OUT_TRADE_NO", true},
		{"duplicate field", `{"out_trade_no":"A1","out_trade_no":"A2","created_at":"` + now + `"}`, "", 400, CodeDuplicateField, "out_trade_no", false},
		{"no order number", `{"mchid":"1900000109","created_at":"` + now + `"}`, "", 400, CodeMissingField, "out_trade_no", true},
		{"no created_at", `{"out_trade_no":"A1"}`, "", 400, CodeMissingField, "created_at", true},
		{"bad order number", `{"out_trade_no":"ORDER#1","created_at":"` + now + `"}`, "", 400, CodeInvalidField, "out_trade_no", true},
		{"number is not a string", `{"out_trade_no":123,"created_at":"` + now + `"}`, "", 400, CodeInvalidField, "out_trade_no", true},
		{"bad mchid", `{"out_trade_no":"A1","mchid":"19x","created_at":"` + now + `"}`, "", 400, CodeInvalidField, "mchid", true},
		{"bad created_at", `{"out_trade_no":"A1","created_at":"2026-11-22 10:00"}`, "", 400, CodeInvalidField, "created_at", true},
		{"created_at without zone", `{"out_trade_no":"A1","created_at":"2026-11-22T10:00:00"}`, "", 400, CodeInvalidField, "created_at", true},
		{"created_at far in the future", `{"out_trade_no":"A1","created_at":"` + time.Now().Add(2*time.Hour).Format(time.RFC3339) + `"}`, "", 400, CodeInvalidField, "created_at", false},
		{"close_at before created_at", `{"out_trade_no":"A1","created_at":"` + now + `","close_at":"` + time.Now().Add(-time.Hour).Format(time.RFC3339) + `"}`, "", 400, CodeInvalidField, "close_at", false},
		{"close_at too late", `{"out_trade_no":"A1","created_at":"` + now + `","close_at":"` + time.Now().Add(8*24*time.Hour).Format(time.RFC3339) + `"}`, "", 400, CodeInvalidField, "close_at", false},
		{"not JSON", `{"out_trade_no":`, "", 400, CodeInvalidJSON, "", true},
		{"an array", `[{"out_trade_no":"A1","created_at":"` + now + `"}]`, "", 400, CodeInvalidJSON, "", true},
		{"trailing data", `{"out_trade_no":"A1","created_at":"` + now + `"} {}`, "", 400, CodeInvalidJSON, "", false},
		{"form content type", `out_trade_no=A1`, "application/x-www-form-urlencoded", 415, CodeUnsupportedMediaType, "Content-Type", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := e.doT(t, req{method: "POST", path: "/v1/closes", body: []byte(tt.body), contentType: tt.contentType, docRejects: tt.docRejects})
			wantProblem(t, a, tt.status, tt.code, tt.field)
		})
	}
	if n := countTasks(t, e); n != 0 {
		t.Fatalf("%d tasks stored by rejected requests", n)
	}
}

func countTasks(t *testing.T, e *env) int {
	t.Helper()
	keys, err := e.redis.Client().Keys(t.Context(), "asynq:{close_order}:t:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	return len(keys)
}

// TestBatch: items are handled one by one, results come in input order,
// and bad items do not stop good ones; in both body formats.
func TestBatch(t *testing.T) {
	e := newEnv(t)
	now := time.Now().Format(time.RFC3339)
	// One order is already scheduled, so its item is a duplicate.
	if a := e.do(req{method: "POST", path: "/v1/closes", body: []byte(`{"out_trade_no":"B-DUP","created_at":"` + now + `"}`)}); a.status != 201 {
		t.Fatalf("setup: %d %s", a.status, a.body)
	}

	t.Run("json array", func(t *testing.T) {
		body := `[
			{"out_trade_no":"B-1","created_at":"` + now + `"},
			{"out_trade_no":"B-BAD#","created_at":"` + now + `"},
			{"out_trade_no":"B-DUP","created_at":"` + now + `"},
			42,
			{"out_trade_no":"B-2","created_at":"` + now + `","closeAt":"` + now + `"},
			{"transaction_id":"4200000002","created_at":"` + now + `"}
		]`
		a := e.doT(t, req{method: "POST", path: "/v1/closes/batch", body: []byte(body), docRejects: true})
		if a.status != 200 {
			t.Fatalf("%d %s", a.status, a.body)
		}
		var resp batchResponse
		a.decode(t, &resp)
		want := []struct {
			status int
			id     string
			code   string
			field  string
		}{
			{201, "close:1900000109:out_trade_no:B-1", "", ""},
			{400, "", CodeInvalidField, "out_trade_no"},
			{200, "close:1900000109:out_trade_no:B-DUP", "", ""},
			{400, "", CodeInvalidJSON, ""},
			{400, "", CodeUnknownField, "closeAt"},
			{201, "close:1900000109:transaction_id:4200000002", "", ""},
		}
		if len(resp.Results) != len(want) {
			t.Fatalf("%d results, want %d: %s", len(resp.Results), len(want), a.body)
		}
		for i, w := range want {
			r := resp.Results[i]
			if r.Index != i || r.Status != w.status || r.TaskID != w.id {
				t.Errorf("result %d = %+v, want status %d id %q", i, r, w.status, w.id)
			}
			if w.code != "" && (r.Error == nil || r.Error.Code != w.code || r.Error.Field != w.field) {
				t.Errorf("result %d error = %+v, want code %s field %q", i, r.Error, w.code, w.field)
			}
			if w.code == "" && (r.Duplicate == nil || *r.Duplicate != (w.status == 200) || r.State != "scheduled") {
				t.Errorf("result %d = %+v, want duplicate=%v state scheduled", i, r, w.status == 200)
			}
		}
		if resp.Summary != (batchSummary{Scheduled: 2, Duplicates: 1, Rejected: 3}) {
			t.Errorf("summary = %+v", resp.Summary)
		}
	})

	t.Run("ndjson", func(t *testing.T) {
		body := `{"out_trade_no":"N-1","created_at":"` + now + `"}` + "\n" +
			"\n" + // blank lines are skipped
			`{"out_trade_no":"N-2","created_at":` + "\n" + // a broken line is that item's error
			`{"out_trade_no":"N-3","created_at":"` + now + `"}` + "\r\n"
		a := e.doT(t, req{method: "POST", path: "/v1/closes/batch", body: []byte(body), contentType: "application/x-ndjson", docRejects: true})
		if a.status != 200 {
			t.Fatalf("%d %s", a.status, a.body)
		}
		var resp batchResponse
		a.decode(t, &resp)
		if len(resp.Results) != 3 {
			t.Fatalf("results: %s", a.body)
		}
		for i, w := range []struct{ line, status int }{{1, 201}, {3, 400}, {4, 201}} {
			if r := resp.Results[i]; r.Index != i || r.Line != w.line || r.Status != w.status {
				t.Errorf("result %d = %+v, want line %d status %d", i, r, w.line, w.status)
			}
		}
		if e := resp.Results[1].Error; e == nil || e.Code != CodeInvalidJSON {
			t.Errorf("broken line error = %+v, want invalid_json", e)
		}
	})

	t.Run("valid ndjson", func(t *testing.T) {
		body := `{"out_trade_no":"V-1","created_at":"` + now + `"}` + "\n" + `{"out_trade_no":"V-2","created_at":"` + now + `"}` + "\n"
		a := e.doT(t, req{method: "POST", path: "/v1/closes/batch", body: []byte(body), contentType: "application/x-ndjson"})
		var resp batchResponse
		a.decode(t, &resp)
		if a.status != 200 || resp.Summary.Scheduled != 2 {
			t.Fatalf("%d %s", a.status, a.body)
		}
	})

	t.Run("empty", func(t *testing.T) {
		a := e.doT(t, req{method: "POST", path: "/v1/closes/batch", body: []byte(`[]`)})
		var resp batchResponse
		a.decode(t, &resp)
		if a.status != 200 || len(resp.Results) != 0 {
			t.Fatalf("%d %s", a.status, a.body)
		}
	})

	t.Run("1000 items", func(t *testing.T) {
		var b strings.Builder
		b.WriteString("[")
		for i := range MaxBatchItems {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, `{"out_trade_no":"MAX-%d","created_at":"%s"}`, i, now)
		}
		b.WriteString("]")
		a := e.doT(t, req{method: "POST", path: "/v1/closes/batch", body: []byte(b.String())})
		var resp batchResponse
		a.decode(t, &resp)
		if a.status != 200 || resp.Summary.Scheduled != MaxBatchItems {
			t.Fatalf("%d summary %+v", a.status, resp.Summary)
		}
		for i, r := range resp.Results {
			if r.Index != i || r.TaskID != fmt.Sprintf("close:1900000109:out_trade_no:MAX-%d", i) {
				t.Fatalf("result %d out of order: %+v", i, r)
			}
		}
	})

	t.Run("1001 items", func(t *testing.T) {
		items := bytes.Repeat([]byte(`{"out_trade_no":"X","created_at":"`+now+`"},`), MaxBatchItems+1)
		body := append(append([]byte("["), items[:len(items)-1]...), ']')
		a := e.doT(t, req{method: "POST", path: "/v1/closes/batch", body: body, docRejects: true})
		wantProblem(t, a, 400, CodeTooManyItems, "")
		lines := bytes.Repeat([]byte(`{"out_trade_no":"X","created_at":"`+now+`"}`+"\n"), MaxBatchItems+1)
		a = e.doT(t, req{method: "POST", path: "/v1/closes/batch", body: lines, contentType: "application/x-ndjson", docRejects: true})
		wantProblem(t, a, 400, CodeTooManyItems, "")
	})

	t.Run("not an array", func(t *testing.T) {
		a := e.doT(t, req{method: "POST", path: "/v1/closes/batch", body: []byte(`{"out_trade_no":"X"}`), docRejects: true})
		wantProblem(t, a, 400, CodeInvalidJSON, "")
		a = e.doT(t, req{method: "POST", path: "/v1/closes/batch", body: []byte(`[{"out_trade_no":"X"`), docRejects: true})
		wantProblem(t, a, 400, CodeInvalidJSON, "")
	})

	t.Run("wrong content type", func(t *testing.T) {
		a := e.doT(t, req{method: "POST", path: "/v1/closes/batch", body: []byte(`[]`), contentType: "text/csv", docRejects: true})
		wantProblem(t, a, 415, CodeUnsupportedMediaType, "Content-Type")
	})
}

// TestBodyLimits: 64 KiB for one close, 1 MiB for a batch, whether the
// client announces the length or not.
func TestBodyLimits(t *testing.T) {
	e := newEnv(t)
	pad := func(n int) []byte {
		// Valid JSON of exactly n bytes, so only the size is wrong.
		prefix := `{"out_trade_no":"A1","created_at":"` + time.Now().Format(time.RFC3339) + `","x":"`
		return []byte(prefix + strings.Repeat("a", n-len(prefix)-2) + `"}`)
	}
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("chunked=%v", chunked), func(t *testing.T) {
			a := e.doT(t, req{method: "POST", path: "/v1/closes", body: pad(MaxBodyBytes + 1), chunked: chunked, docRejects: true})
			wantProblem(t, a, 413, CodeBodyTooLarge, "")
			// At the limit the body is read and judged on its content.
			a = e.doT(t, req{method: "POST", path: "/v1/closes", body: pad(MaxBodyBytes), chunked: chunked, docRejects: true})
			wantProblem(t, a, 400, CodeUnknownField, "x")

			batch := append([]byte("["), pad(MaxBatchBodyBytes)...)
			batch = append(batch, ']')
			a = e.doT(t, req{method: "POST", path: "/v1/closes/batch", body: batch, chunked: chunked, docRejects: true})
			wantProblem(t, a, 413, CodeBodyTooLarge, "")
		})
	}
}

// TestTaskIDInPath: an order number with the characters the contract
// allows (| * @ - _) makes a task id that survives the trip through the
// Location header and back into GET and DELETE.
func TestTaskIDInPath(t *testing.T) {
	e := newEnv(t)
	a := e.do(req{method: "POST", path: "/v1/closes", body: jsonBody(t, order("A|B*C@D-1_2", time.Now()))})
	if a.status != 201 {
		t.Fatalf("%d %s", a.status, a.body)
	}
	loc := a.header.Get("Location")
	if loc != "/v1/closes/close:1900000109:out_trade_no:A%7CB%2AC@D-1_2" && loc != "/v1/closes/close:1900000109:out_trade_no:A%7CB*C@D-1_2" {
		t.Fatalf("Location = %q", loc)
	}
	g := e.do(req{method: "GET", path: loc})
	var st closeStatus
	g.decode(t, &st)
	if g.status != 200 || st.TaskID != "close:1900000109:out_trade_no:A|B*C@D-1_2" {
		t.Fatalf("GET %s: %d %s", loc, g.status, g.body)
	}
	// encodeURIComponent (JavaScript) escapes ':' and '@' too.
	if g := e.do(req{method: "GET", path: "/v1/closes/close%3A1900000109%3Aout_trade_no%3AA%7CB*C%40D-1_2"}); g.status != 200 {
		t.Fatalf("GET fully escaped: %d %s", g.status, g.body)
	}
	// Clients that do not escape '|' reach the same task.
	if d := e.do(req{method: "DELETE", path: "/v1/closes/close:1900000109:out_trade_no:A|B*C@D-1_2"}); d.status != 204 {
		t.Fatalf("DELETE: %d %s", d.status, d.body)
	}
}
