package ops

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/wxclose/wxclose/tasks"
)

func TestParseOrderLine(t *testing.T) {
	created := time.Date(2026, 11, 22, 10, 0, 0, 0, time.FixedZone("CST", 8*3600))
	tests := []struct {
		name    string
		line    string
		want    tasks.CloseOrder
		wantErr string
	}{
		{"minimal", `{"out_trade_no":"A1","created_at":"2026-11-22T10:00:00+08:00"}`,
			tasks.CloseOrder{OutTradeNo: "A1", CreatedAt: created}, ""},
		{"all fields", `{"transaction_id":"42","mchid":"1","sub_mchid":"2","sub_appid":"wx1","created_at":"2026-11-22T10:00:00+08:00","close_at":"2026-11-22T10:30:00+08:00"}`,
			tasks.CloseOrder{TransactionID: "42", MchID: "1", SubMchID: "2", SubAppID: "wx1", CreatedAt: created, CloseAt: created.Add(30 * time.Minute)}, ""},
		{"offset +23:59", `{"out_trade_no":"A1","created_at":"2026-11-22T10:00:00+23:59"}`,
			tasks.CloseOrder{OutTradeNo: "A1", CreatedAt: time.Date(2026, 11, 22, 10, 0, 0, 0, time.FixedZone("", 23*3600+59*60))}, ""},
		{"offset -12:00", `{"out_trade_no":"A1","created_at":"2026-11-22T10:00:00-12:00","close_at":"2026-11-23T00:00:00Z"}`,
			tasks.CloseOrder{OutTradeNo: "A1", CreatedAt: time.Date(2026, 11, 22, 22, 0, 0, 0, time.UTC), CloseAt: time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)}, ""},
		{"both numbers", `{"out_trade_no":"A1","transaction_id":"42","created_at":"2026-11-22T10:00:00+08:00"}`,
			tasks.CloseOrder{OutTradeNo: "A1", TransactionID: "42", CreatedAt: created}, ""},
		{"surrounding space", "  {\"out_trade_no\":\"A1\",\"created_at\":\"2026-11-22T10:00:00+08:00\"}\t",
			tasks.CloseOrder{OutTradeNo: "A1", CreatedAt: created}, ""},
		{"not an object", `["A1"]`, tasks.CloseOrder{}, "not a JSON object"},
		{"null", `null`, tasks.CloseOrder{}, "not a JSON object"},
		{"syntax", `{"out_trade_no":"A1",}`, tasks.CloseOrder{}, "not valid JSON at byte"},
		{"cut short", `{"out_trade_no":"A1"`, tasks.CloseOrder{}, "cut short"},
		{"wrong type", `{"out_trade_no":"A1","mchid":1900000109,"created_at":"2026-11-22T10:00:00Z"}`, tasks.CloseOrder{}, "mchid must be a JSON string, not a number"},
		{"unknown field", `{"out_trade_no":"A1","closeAt":"2026-11-22T10:00:00Z","created_at":"2026-11-22T10:00:00Z"}`, tasks.CloseOrder{}, `unknown field "closeAt"`},
		{"unknown field of another type", `{"out_trade_no":"A1","created_at":"2026-11-22T10:00:00Z","priority":1}`, tasks.CloseOrder{}, `unknown field "priority"`},
		{"wrong case", `{"OUT_TRADE_NO":"A1","created_at":"2026-11-22T10:00:00Z"}`, tasks.CloseOrder{}, `field "OUT_TRADE_NO" must be spelt "out_trade_no"`},
		{"wrong case, second key", `{"out_trade_no":"A1","Created_At":"2026-11-22T10:00:00Z"}`, tasks.CloseOrder{}, `field "Created_At"`},
		{"duplicate", `{"out_trade_no":"A1","created_at":"2026-11-22T10:00:00Z","close_at":"2026-11-22T10:30:00Z","close_at":"2026-11-22T10:06:00Z"}`, tasks.CloseOrder{}, `field "close_at" appears more than once`},
		{"duplicate in other case", `{"out_trade_no":"A1","Out_Trade_No":"A2","created_at":"2026-11-22T10:00:00Z"}`, tasks.CloseOrder{}, `field "Out_Trade_No"`},
		{"offset +24:00", `{"out_trade_no":"A1","created_at":"2026-11-22T10:00:00+24:00"}`, tasks.CloseOrder{}, `created_at "2026-11-22T10:00:00+24:00" has a zone offset out of range`},
		{"offset minutes 60", `{"out_trade_no":"A1","created_at":"2026-11-22T10:00:00Z","close_at":"2026-11-22T10:00:00+00:60"}`, tasks.CloseOrder{}, `close_at "2026-11-22T10:00:00+00:60" has a zone offset out of range`},
		{"offset +23:60", `{"out_trade_no":"A1","created_at":"2026-11-22T10:00:00-23:60"}`, tasks.CloseOrder{}, `created_at "2026-11-22T10:00:00-23:60" has a zone offset out of range`},
		{"offset hour 99", `{"out_trade_no":"A1","created_at":"2026-11-22T10:00:00+99:00"}`, tasks.CloseOrder{}, `created_at "2026-11-22T10:00:00+99:00" is not an RFC 3339 time`},
		{"BOM inside", "\ufeff" + `{"out_trade_no":"A1","created_at":"2026-11-22T10:00:00Z"}`, tasks.CloseOrder{}, "not a JSON object"},
		{"trailing data", `{"out_trade_no":"A1","created_at":"2026-11-22T10:00:00Z"} {}`, tasks.CloseOrder{}, "trailing data"},
		{"missing created_at", `{"out_trade_no":"A1"}`, tasks.CloseOrder{}, "created_at is required"},
		{"bad created_at", `{"out_trade_no":"A1","created_at":"2026-11-22 10:00"}`, tasks.CloseOrder{}, `created_at "2026-11-22 10:00" is not an RFC 3339 time`},
		{"no zone", `{"out_trade_no":"A1","created_at":"2026-11-22T10:00:00"}`, tasks.CloseOrder{}, `is not an RFC 3339 time`},
		{"bad close_at", `{"out_trade_no":"A1","created_at":"2026-11-22T10:00:00Z","close_at":"soon"}`, tasks.CloseOrder{}, `close_at "soon"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseOrderLine([]byte(tt.line))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, tasks.ErrInvalidPayload) {
					t.Fatalf("err = %v, want ErrInvalidPayload containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !got.CreatedAt.Equal(tt.want.CreatedAt) || !got.CloseAt.Equal(tt.want.CloseAt) {
				t.Errorf("times = %v, %v; want %v, %v", got.CreatedAt, got.CloseAt, tt.want.CreatedAt, tt.want.CloseAt)
			}
			got.CreatedAt, got.CloseAt, tt.want.CreatedAt, tt.want.CloseAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestEnqueueBulkEdgeCases: inputs that used to fail confusingly or pass
// silently. Each bad line is rejected (not failed) with a reason naming the
// field, and the others carry on.
func TestEnqueueBulkEdgeCases(t *testing.T) {
	e := newEnv(t)
	created := time.Now().Add(-time.Minute).UTC().Truncate(time.Second)
	c := created.Format(time.RFC3339)
	input := "\ufeff" + strings.Join([]string{ // a UTF-8 byte order mark, as Notepad writes
		/* 1 */ `{"out_trade_no":"E-1","created_at":"` + c + `"}`,
		/* 2 */ `{"out_trade_no":"E-2","created_at":"2026-11-22T10:00:00+24:00"}`,
		/* 3 */ `{"out_trade_no":"E-3","created_at":"` + c + `","close_at":"` + created.Add(tasks.MaxCloseDelay+time.Second).Format(time.RFC3339) + `"}`,
		/* 4 */ `{"out_trade_no":"E-4","created_at":"` + c + `","close_at":"` + created.Add(tasks.MaxCloseDelay).Format(time.RFC3339) + `"}`,
		/* 5 */ `{"out_trade_no":"E-5","transaction_id":"4200000005","created_at":"` + c + `"}`,
		/* 6 */ `{"out_trade_no":"E-6","closeAt":"` + c + `","created_at":"` + c + `"}`,
		/* 7 */ `{"OUT_TRADE_NO":"E-7","created_at":"` + c + `"}`,
		/* 8 */ `{"out_trade_no":"E-8","created_at":"` + c + `","close_at":"` + c + `","close_at":"` + c + `"}`,
	}, "\n") + "\n"
	var out, errw bytes.Buffer
	sum, err := e.c.EnqueueBulk(context.Background(), strings.NewReader(input), BulkOptions{Out: &out, Err: &errw, Concurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	if want := (BulkSummary{Lines: 8, Enqueued: 3, Rejected: 5}); sum != want {
		t.Errorf("summary = %+v, want %+v\nstderr:\n%s", sum, want, errw.String())
	}
	for _, want := range []string{
		`line 2: created_at "2026-11-22T10:00:00+24:00" has a zone offset out of range`,
		`line 3: close_at `,
		`line 6: unknown field "closeAt"`,
		`line 7: field "OUT_TRADE_NO" must be spelt "out_trade_no"`,
		`line 8: field "close_at" appears more than once`,
	} {
		if !strings.Contains(errw.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, errw.String())
		}
	}
	if !strings.Contains(errw.String(), "more than "+formatDays(tasks.MaxCloseDelay)+" after created_at") {
		t.Errorf("the close_at rejection does not state the limit:\n%s", errw.String())
	}
	if strings.Contains(errw.String(), "line 1:") {
		t.Errorf("the byte order mark made line 1 fail:\n%s", errw.String())
	}
	// Both numbers: accepted, closed by out_trade_no, and the output says so.
	wantNote := "line 5: enqueued close:" + testMchID + ":out_trade_no:E-5 "
	var line5 string
	for _, l := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(l, wantNote) {
			line5 = l
		}
	}
	if !strings.Contains(line5, "the close uses out_trade_no E-5") || !strings.Contains(line5, "transaction_id 4200000005") {
		t.Errorf("line 5 does not say out_trade_no wins: %q\nstdout:\n%s", line5, out.String())
	}
	info := e.info(t, "close:"+testMchID+":out_trade_no:E-5")
	if info == nil {
		t.Fatal("line 5 was not enqueued under its out_trade_no")
	}
	if p, err := tasks.DecodeClosePayload(info.Payload); err != nil || p.OutTradeNo != "E-5" {
		t.Errorf("stored payload %s: %v", info.Payload, err)
	}
	// The note shows with --quiet too, and in JSON.
	out.Reset()
	errw.Reset()
	in := `{"out_trade_no":"E-9","transaction_id":"4200000009","created_at":"` + c + `"}` + "\n"
	if _, err := e.c.EnqueueBulk(context.Background(), strings.NewReader(in), BulkOptions{Quiet: true, Out: &out, Err: &errw}); err != nil {
		t.Fatal(err)
	}
	if out.Len() != 0 || !strings.Contains(errw.String(), "line 1: enqueued ") || !strings.Contains(errw.String(), "the close uses out_trade_no E-9") {
		t.Errorf("quiet: stdout %q stderr %q", out.String(), errw.String())
	}
	out.Reset()
	if _, err := e.c.EnqueueBulk(context.Background(), strings.NewReader(in), BulkOptions{JSON: true, Out: &out}); err != nil {
		t.Fatal(err)
	}
	var r EnqueueRecord
	if err := json.Unmarshal(out.Bytes(), &r); err != nil || !strings.Contains(r.Note, "the close uses out_trade_no E-9") {
		t.Errorf("JSON record %s: %v", out.String(), err)
	}
}

// formatDays writes a whole number of days as tasks' messages do.
func formatDays(d time.Duration) string {
	if d == 24*time.Hour {
		return "1 day"
	}
	return fmt.Sprintf("%d days", d/(24*time.Hour))
}

func TestLineReader(t *testing.T) {
	long := strings.Repeat("x", 300)
	tests := []struct {
		name  string
		in    string
		max   int
		lines []string // "!" marks a too-long line
	}{
		{"empty", "", 100, nil},
		{"no final newline", "a\nb", 100, []string{"a", "b"}},
		{"crlf", "a\r\nb\r\n", 100, []string{"a", "b"}},
		{"blank lines kept for numbering", "a\n\n\nb\n", 100, []string{"a", "", "", "b"}},
		{"exactly max", "abcd\n", 4, []string{"abcd"}},
		{"too long then fine", long + "\nok\n", 100, []string{"!", "ok"}},
		{"too long at eof", "ok\n" + long, 100, []string{"ok", "!"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A tiny bufio size would be clamped to 16; use the real reader
			// over long input instead.
			lr := newLineReader(strings.NewReader(tt.in), tt.max)
			var got []string
			for {
				line, num, tooLong, err := lr.next()
				if err != nil {
					break
				}
				if num != len(got)+1 {
					t.Fatalf("line number %d, want %d", num, len(got)+1)
				}
				if tooLong {
					got = append(got, "!")
				} else {
					got = append(got, string(line))
				}
			}
			if !slices.Equal(got, tt.lines) {
				t.Errorf("lines = %q, want %q", got, tt.lines)
			}
		})
	}
}

func TestEnqueueBulk(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second)
	created := now.Add(-time.Minute).Format(time.RFC3339)
	old := now.Add(-time.Hour).Format(time.RFC3339)

	// An order enqueued before the file is read counts as already scheduled.
	if _, err := e.c.Enqueue(ctx, tasks.CloseOrder{OutTradeNo: "PRE-1", CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	bigPad := strings.Repeat(" ", 900<<10) // a valid line of ~900 KiB
	input := strings.Join([]string{
		/* 1 */ `{"out_trade_no":"B-1","created_at":"` + created + `"}`,
		/* 2 */ ``,
		/* 3 */ `{"out_trade_no":"B-2","created_at":"` + old + `","mchid":"1230000109"}`,
		/* 4 */ `{"out_trade_no":"B-1","created_at":"` + created + `"}`, // duplicate of line 1
		/* 5 */ `{"out_trade_no":"B-3",`, // malformed
		/* 6 */ `{"out_trade_no":"bad order!","created_at":"` + created + `"}`,
		/* 7 */ `{"out_trade_no":"PRE-1","created_at":"` + created + `"}`,
		/* 8 */ `{"out_trade_no":"B-4"}`,
		/* 9 */ `{"transaction_id":"4200000001","created_at":"` + created + `","close_at":"` + now.Add(time.Hour).Format(time.RFC3339) + `"}`,
		/* 10 */ `{"out_trade_no":"B-5",` + bigPad + `"created_at":"` + created + `"}`,
		/* 11 */ `{"out_trade_no":"B-6","created_at":"` + created + `"}` + strings.Repeat(" ", 2<<20), // over 1 MiB
		/* 12 */ `   `,
		/* 13 */ `{"out_trade_no":"B-7","created_at":"` + now.Add(3*time.Hour).Format(time.RFC3339) + `"}`, // far future
	}, "\n") + "\r\n"

	for _, conc := range []int{1, 8} {
		t.Run(fmt.Sprintf("concurrency %d", conc), func(t *testing.T) {
			var out, errw bytes.Buffer
			sum, err := e.c.EnqueueBulk(ctx, strings.NewReader(input), BulkOptions{Concurrency: conc, Out: &out, Err: &errw})
			if err != nil {
				t.Fatal(err)
			}
			// The second run finds every good order already scheduled.
			want := BulkSummary{Lines: 11, Enqueued: 4, AlreadyScheduled: 2, Rejected: 5}
			if conc == 8 {
				want.Enqueued, want.AlreadyScheduled = 0, 6
			}
			if sum != want {
				t.Errorf("summary = %+v, want %+v", sum, want)
			}
			if sum.OK() {
				t.Error("OK() = true with rejected lines")
			}
			errLines := sortedLines(errw.String())
			// The far-future message goes on with the limit and the time.
			for i, l := range errLines {
				if before, _, ok := strings.Cut(l, " is more than "); ok {
					errLines[i] = before + " is more than"
				}
			}
			wantErr := []string{
				`line 11: line is longer than 1048576 bytes; is this a JSON Lines file?`,
				`line 13: created_at ` + now.Add(3*time.Hour).Format(time.RFC3339) + ` is more than`,
				`line 5: not valid JSON: the object is cut short`,
				`line 6: out_trade_no "bad order!" must be 1 to 32 characters of letters, digits and _ - | * @`,
				`line 8: created_at is required (RFC 3339, e.g. 2026-11-22T10:00:00+08:00)`,
			}
			if !slices.Equal(errLines, wantErr) {
				t.Errorf("stderr lines:\n%s\nwant:\n%s", strings.Join(errLines, "\n"), strings.Join(wantErr, "\n"))
			}
			outLines := sortedLines(out.String())
			if len(outLines) != 6 {
				t.Fatalf("stdout has %d lines, want 6:\n%s", len(outLines), out.String())
			}
			for _, l := range outLines {
				if !strings.HasPrefix(l, "line ") || !strings.Contains(l, " close:") || !strings.Contains(l, " due ") {
					t.Errorf("stdout line %q lacks line number, task id or due time", l)
				}
			}
		})
	}

	// What is in Redis: 4 orders from the file plus PRE-1.
	for _, c := range []struct {
		id    string
		state asynq.TaskState
		due   time.Time
	}{
		{"close:" + testMchID + ":out_trade_no:B-1", asynq.TaskStateScheduled, tasks.DueAt(now.Add(-time.Minute), time.Time{}, time.Second)},
		{"close:1230000109:out_trade_no:B-2", asynq.TaskStatePending, time.Time{}},
		{"close:" + testMchID + ":transaction_id:4200000001", asynq.TaskStateScheduled, now.Add(time.Hour)},
		{"close:" + testMchID + ":out_trade_no:B-5", asynq.TaskStateScheduled, tasks.DueAt(now.Add(-time.Minute), time.Time{}, time.Second)},
	} {
		info := e.info(t, c.id)
		if info == nil {
			t.Errorf("%s missing", c.id)
			continue
		}
		if info.State != c.state {
			t.Errorf("%s state %s, want %s", c.id, info.State, c.state)
		}
		if !c.due.IsZero() && !info.NextProcessAt.Equal(c.due) {
			t.Errorf("%s runs at %v, want %v", c.id, info.NextProcessAt, c.due)
		}
	}
	if info := e.info(t, "close:"+testMchID+":out_trade_no:B-7"); info != nil {
		t.Errorf("far-future order was enqueued: %+v", info)
	}
}

func TestEnqueueBulkJSONAndQuiet(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	created := time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
	input := `{"out_trade_no":"J-1","created_at":"` + created + `"}
{"out_trade_no":"J-1","created_at":"` + created + `"}
{"out_trade_no":"J-2"}
`
	var out, errw bytes.Buffer
	sum, err := e.c.EnqueueBulk(ctx, strings.NewReader(input), BulkOptions{JSON: true, Out: &out, Err: &errw, Concurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	if sum != (BulkSummary{Lines: 3, Enqueued: 1, AlreadyScheduled: 1, Rejected: 1}) {
		t.Errorf("summary = %+v", sum)
	}
	if errw.Len() != 0 {
		t.Errorf("with JSON, rejected lines go to Out; Err got %q", errw.String())
	}
	byLine := recordsByLine(t, &out)
	id := "close:" + testMchID + ":out_trade_no:J-1"
	if r := byLine[1]; r.Status != StatusEnqueued || r.TaskID != id || r.State != "scheduled" || r.DueAt.IsZero() {
		t.Errorf("line 1 = %+v", r)
	}
	if r := byLine[2]; r.Status != StatusAlreadyScheduled || r.TaskID != id || r.DueAt.IsZero() {
		t.Errorf("line 2 = %+v", r)
	}
	if r := byLine[3]; r.Status != StatusRejected || !strings.HasPrefix(r.Error, "created_at is required") {
		t.Errorf("line 3 = %+v", r)
	}

	out.Reset()
	sum, err = e.c.EnqueueBulk(ctx, strings.NewReader(input), BulkOptions{Quiet: true, Out: &out, Err: &errw})
	if err != nil || sum.AlreadyScheduled != 2 {
		t.Fatalf("quiet run: %+v, %v", sum, err)
	}
	if out.Len() != 0 {
		t.Errorf("Quiet still printed %q", out.String())
	}
	if !strings.Contains(errw.String(), "line 3: created_at is required") {
		t.Errorf("Quiet must still report rejected lines; Err = %q", errw.String())
	}
}

// TestEnqueueBulkMany checks that concurrent workers lose and duplicate
// nothing: every order of a larger file ends up scheduled exactly once.
func TestEnqueueBulkMany(t *testing.T) {
	e := newEnv(t)
	const n = 2000
	var sum BulkSummary
	var err error
	created := time.Now().UTC().Format(time.RFC3339)
	var in bytes.Buffer
	for i := range n {
		fmt.Fprintf(&in, `{"out_trade_no":"M-%d","created_at":"%s"}`+"\n", i%(n/2), created) // each order twice
	}
	sum, err = e.c.EnqueueBulk(context.Background(), &in, BulkOptions{Concurrency: 32})
	if err != nil {
		t.Fatal(err)
	}
	if sum != (BulkSummary{Lines: n, Enqueued: n / 2, AlreadyScheduled: n / 2}) || !sum.OK() {
		t.Errorf("summary = %+v", sum)
	}
	qi, err := e.ins.GetQueueInfo(tasks.QueueClose)
	if err != nil {
		t.Fatal(err)
	}
	if qi.Scheduled != n/2 || qi.Size != n/2 {
		t.Errorf("queue holds %d scheduled of %d tasks, want %d", qi.Scheduled, qi.Size, n/2)
	}
}

func TestEnqueueBulkCancelled(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	in := strings.NewReader(`{"out_trade_no":"C-1","created_at":"2026-01-01T00:00:00Z"}` + "\n")
	sum, err := e.c.EnqueueBulk(ctx, in, BulkOptions{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if sum.Enqueued != 0 || sum.OK() != (sum.Lines == 0) {
		t.Errorf("summary = %+v", sum)
	}
}

func TestEnqueueBulkRedisDown(t *testing.T) {
	e := newEnv(t)
	// A real connection to a port nobody listens on.
	down := New(e.srv.Client(), tasks.ProducerConfig{})
	down.producer = tasks.NewProducer(asynq.RedisClientOpt{Addr: "127.0.0.1:1", DialTimeout: time.Second}, tasks.ProducerConfig{})
	t.Cleanup(func() { down.producer.Close() })
	var errw bytes.Buffer
	in := strings.NewReader(`{"out_trade_no":"D-1","created_at":"2026-01-01T00:00:00Z"}` + "\n")
	sum, err := down.EnqueueBulk(context.Background(), in, BulkOptions{Err: &errw})
	if err != nil {
		t.Fatal(err)
	}
	if sum != (BulkSummary{Lines: 1, Failed: 1}) {
		t.Errorf("summary = %+v", sum)
	}
	if !strings.HasPrefix(errw.String(), "line 1: enqueue close close:_:out_trade_no:D-1: ") {
		t.Errorf("Err = %q", errw.String())
	}
}

func sortedLines(s string) []string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) == 1 && lines[0] == "" {
		return nil
	}
	slices.Sort(lines)
	return lines
}
