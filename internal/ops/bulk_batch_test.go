package ops

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/wxclose/wxclose/internal/redistest"
	"github.com/wxclose/wxclose/tasks"
)

// bulkFile is a JSON Lines file of n lines: mostly new orders, some due at
// once, some with close_at or both order numbers, and interleaved repeats of
// earlier lines, rejected lines and blank lines.
func bulkFile(n int, now time.Time) string {
	recent := now.Add(-time.Minute).UTC().Format(time.RFC3339)
	old := now.Add(-time.Hour).UTC().Format(time.RFC3339)
	closeAt := now.Add(2 * time.Hour).UTC().Format(time.RFC3339)
	lines := make([]string, 0, n)
	for i := range n {
		var l string
		switch {
		case i%97 == 50:
			l = `{"out_trade_no":"BAD ` + fmt.Sprint(i) + `","created_at":"` + recent + `"}`
		case i%101 == 7:
			l = `{"out_trade_no":"CUT-` + fmt.Sprint(i)
		case i%89 == 3:
			l = ``
		case i%13 == 12:
			l = lines[i-7] // a repeat (or a repeated bad or blank line)
		case i%11 == 0:
			l = `{"out_trade_no":"OLD-` + fmt.Sprint(i) + `","created_at":"` + old + `"}`
		case i%17 == 0:
			l = `{"out_trade_no":"AT-` + fmt.Sprint(i) + `","created_at":"` + recent + `","close_at":"` + closeAt + `"}`
		case i%29 == 0:
			l = `{"out_trade_no":"BOTH-` + fmt.Sprint(i) + `","transaction_id":"42000` + fmt.Sprint(i) + `","mchid":"1230000109","created_at":"` + recent + `"}`
		default:
			l = `{"out_trade_no":"N-` + fmt.Sprint(i) + `","created_at":"` + recent + `"}`
		}
		lines = append(lines, l)
	}
	return strings.Join(lines, "\n") + "\n"
}

// jsonRecords runs EnqueueBulk with JSON output and returns the records by
// line.
func jsonRecords(t *testing.T, c *Client, input string, opt BulkOptions) (BulkSummary, map[int]EnqueueRecord) {
	t.Helper()
	var out bytes.Buffer
	opt.JSON, opt.Out = true, &out
	sum, err := c.EnqueueBulk(context.Background(), strings.NewReader(input), opt)
	if err != nil {
		t.Fatal(err)
	}
	return sum, recordsByLine(t, &out)
}

// recordsByLine parses EnqueueBulk's JSON Lines output, one record per
// input line.
func recordsByLine(t *testing.T, out io.Reader) map[int]EnqueueRecord {
	t.Helper()
	recs := map[int]EnqueueRecord{}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		var r EnqueueRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("record %q: %v", sc.Text(), err)
		}
		if _, dup := recs[r.Line]; dup {
			t.Fatalf("two records for line %d", r.Line)
		}
		recs[r.Line] = r
	}
	return recs
}

// sameRecords compares the records of two runs line by line. With
// racing, the records of the lines that repeat one order may swap which
// of them was enqueued and which found it already scheduled; each order is
// then checked to be enqueued once.
func sameRecords(t *testing.T, name string, got, want map[int]EnqueueRecord, racing bool) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d records, want %d", name, len(got), len(want))
	}
	enqueued := map[string]int{}
	for line, w := range want {
		g, ok := got[line]
		if !ok {
			t.Errorf("%s: no record for line %d (%+v)", name, line, w)
			continue
		}
		if g.Status == StatusEnqueued {
			enqueued[g.TaskID]++
		}
		// asynq reports a pending task's next run as the time it is read.
		if g.State == "pending" && w.State == "pending" && !g.DueAt.IsZero() && (w.Status == StatusAlreadyScheduled || g.Status == StatusAlreadyScheduled) {
			g.DueAt = w.DueAt
		}
		if racing && g.Status != w.Status && (g.Status == StatusEnqueued || g.Status == StatusAlreadyScheduled) {
			g.Status = w.Status
		}
		if g.Line != w.Line || g.Status != w.Status || g.TaskID != w.TaskID || g.State != w.State ||
			!g.DueAt.Equal(w.DueAt) || g.Error != w.Error || g.Note != w.Note {
			t.Errorf("%s, line %d:\nbatched    %+v\none by one %+v", name, line, g, w)
		}
	}
	for id, n := range enqueued {
		if n != 1 {
			t.Errorf("%s: %s enqueued %d times", name, id, n)
		}
	}
}

// TestEnqueueBulkBatchedSameAsOneByOne runs a file of several thousand
// lines order by order (BatchSize 1: Producer.EnqueueClose, the path
// before batching) and in batches, each into its own Redis: the summaries
// and every line's record agree, also when run again (every order already
// scheduled) and with concurrent batches, and every task is in Redis.
func TestEnqueueBulkBatchedSameAsOneByOne(t *testing.T) {
	now := time.Now()
	cfg := tasks.ProducerConfig{MchID: testMchID, Now: func() time.Time { return now }}
	const n = 3000
	input := bulkFile(n, now)
	ordered := BulkOptions{Concurrency: 1}
	oneByOne := BulkOptions{Concurrency: 1, BatchSize: 1}
	for _, tc := range []struct {
		name      string
		one, many BulkOptions
	}{
		{"in order", oneByOne, ordered},
		{"concurrent", BulkOptions{BatchSize: 1}, BulkOptions{}},
		{"small batches", BulkOptions{BatchSize: 1, Concurrency: 5}, BulkOptions{BatchSize: 7, Concurrency: 5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			oneSrv, batchSrv := redistest.Start(t), redistest.Start(t)
			one, batched := New(oneSrv.Client(), cfg), New(batchSrv.Client(), cfg)
			racing := tc.many.Concurrency != 1
			for run := range 2 {
				wantSum, want := jsonRecords(t, one, input, tc.one)
				gotSum, got := jsonRecords(t, batched, input, tc.many)
				if gotSum != wantSum {
					t.Errorf("run %d: summary %+v, one by one %+v", run, gotSum, wantSum)
				}
				if run == 0 && (wantSum.Enqueued < n/2 || wantSum.AlreadyScheduled < n/20 || wantSum.Rejected < n/100 || wantSum.Lines == n) {
					t.Fatalf("the file does not mix enough cases: %+v", wantSum)
				}
				if len(want) != wantSum.Lines {
					t.Errorf("run %d: %d records for %d lines", run, len(want), wantSum.Lines)
				}
				sameRecords(t, fmt.Sprintf("run %d", run), got, want, racing && run == 0)
			}

			// Every accepted order has its task, in both Redis, and
			// nothing else is there.
			_, recs := jsonRecords(t, batched, input, ordered)
			ids := map[string]bool{}
			for _, r := range recs {
				if r.Status == StatusAlreadyScheduled {
					ids[r.TaskID] = true
				}
			}
			for _, srv := range []*redistest.Server{oneSrv, batchSrv} {
				pipe := srv.Client().Pipeline()
				var exists []*redis.IntCmd
				for id := range ids {
					exists = append(exists, pipe.Exists(context.Background(), asynqKey("t:"+id)))
				}
				if _, err := pipe.Exec(context.Background()); err != nil {
					t.Fatal(err)
				}
				missing := 0
				for _, c := range exists {
					if c.Val() != 1 {
						missing++
					}
				}
				qi, err := asynq.NewInspectorFromRedisClient(srv.Client()).GetQueueInfo(tasks.QueueClose)
				if err != nil {
					t.Fatal(err)
				}
				if missing > 0 || qi.Size != len(ids) || qi.Pending == 0 || qi.Scheduled == 0 {
					t.Errorf("%s: %d of %d tasks missing; the queue holds %d pending and %d scheduled", srv.Addr, missing, len(ids), qi.Pending, qi.Scheduled)
				}
			}
		})
	}
}

// lineSignal passes on each write, so a test can wait for a record.
type lineSignal chan string

func (s lineSignal) Write(p []byte) (int, error) {
	s <- string(p)
	return len(p), nil
}

// TestEnqueueBulkDoesNotWaitForABatch: orders arriving one at a time (a
// terminal, a slow pipe) are each enqueued and reported before the next
// arrives; batching never holds one back to fill a batch.
func TestEnqueueBulkDoesNotWaitForABatch(t *testing.T) {
	e := newEnv(t)
	pr, pw := io.Pipe()
	records := make(lineSignal)
	done := make(chan error, 1)
	go func() {
		sum, err := e.c.EnqueueBulk(context.Background(), pr, BulkOptions{Out: records})
		if err == nil && sum != (BulkSummary{Lines: 3, Enqueued: 3}) {
			err = fmt.Errorf("summary %+v", sum)
		}
		done <- err
	}()
	created := time.Now().UTC().Format(time.RFC3339)
	for i := 1; i <= 3; i++ {
		fmt.Fprintf(pw, `{"out_trade_no":"TYPED-%d","created_at":"%s"}`+"\n", i, created)
		select {
		case rec := <-records:
			if !strings.HasPrefix(rec, fmt.Sprintf("line %d: enqueued close:%s:out_trade_no:TYPED-%d ", i, testMchID, i)) {
				t.Fatalf("record %q", rec)
			}
		case <-time.After(20 * time.Second): // bounds a broken run only
			t.Fatalf("line %d was not enqueued while the input stayed open", i)
		}
	}
	pw.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
