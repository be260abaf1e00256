package ops

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/wxclose/wxclose/tasks"
)

const (
	errSystem = "wechat: transient: code=SYSTEM_ERROR status=500 request_id=r1: system busy"
	errAuth   = "wechat: permanent: code=NO_AUTH status=403 request_id=r2: no permission"
)

// archive is a test archive: tasks that spent their retries.
type archive struct {
	old, recent, auth, corrupt string // task ids
	oldP, recentP              tasks.ClosePayload
	oldRaw                     []byte
}

func (e *env) fillArchive(t *testing.T) archive {
	t.Helper()
	w := e.startWorker(t)
	var a archive
	// Created long ago: due at once when replayed.
	a.oldP, a.old = order("R-OLD", time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	a.oldRaw = mustJSON(t, a.oldP)
	e.archived(t, w, a.old, a.oldRaw, 2, errSystem)
	// Created a minute ago (the test worker ignores the 5-minute rule): a
	// replay must wait until creation + 5 minutes.
	a.recentP, a.recent = order("R-RECENT", time.Now().Add(-time.Minute))
	e.archived(t, w, a.recent, mustJSON(t, a.recentP), 1, errSystem)
	authP, authID := order("R-AUTH", time.Now().Add(-time.Hour))
	a.auth = authID
	e.archived(t, w, a.auth, mustJSON(t, authP), 0, errAuth)
	a.corrupt = "close:_:out_trade_no:R-CORRUPT"
	e.archived(t, w, a.corrupt, []byte(`{"out_trade_no":"R-CORRUPT","created_at":"yesterday"}`), 0, errSystem)
	// Stop the worker, or it would run the replayed tasks.
	w.srv.Shutdown()
	return a
}

func (e *env) archivedIDs(t *testing.T) []string {
	t.Helper()
	infos, err := e.ins.ListArchivedTasks(tasks.QueueClose, asynq.PageSize(1000))
	if err != nil && !errors.Is(err, asynq.ErrQueueNotFound) {
		t.Fatal(err)
	}
	var ids []string
	for _, i := range infos {
		ids = append(ids, i.ID)
	}
	slices.Sort(ids)
	return ids
}

func TestReplay(t *testing.T) {
	e := newEnv(t)
	a := e.fillArchive(t)
	ctx := context.Background()
	before := time.Now()

	var out, errw bytes.Buffer
	sum, err := e.c.Replay(ctx, ReplayOptions{Filter: ReplayFilter{Code: "SYSTEM_ERROR"}, Out: &out, Err: &errw})
	if err != nil {
		t.Fatal(err)
	}
	want := ReplaySummary{Scanned: 4, Matched: 2, Replayed: 2, Skipped: 1}
	if sum != want || !sum.OK() {
		t.Errorf("summary = %+v, want %+v", sum, want)
	}
	if !strings.Contains(errw.String(), "skipped "+a.corrupt+": payload is corrupt") || !strings.Contains(errw.String(), "left in the archive") {
		t.Errorf("Err = %q", errw.String())
	}
	for _, id := range []string{a.old, a.recent} {
		if !strings.Contains(out.String(), "replayed "+id+" due ") {
			t.Errorf("Out lacks the replay of %s: %q", id, out.String())
		}
	}

	// A fresh retry budget, the same payload, and the 5-minute rule.
	old := e.info(t, a.old)
	if old.State != asynq.TaskStatePending || old.Retried != 0 || old.MaxRetry != tasks.DefaultMaxRetry ||
		old.LastErr != "" || !bytes.Equal(old.Payload, a.oldRaw) || old.Type != tasks.TypeClose {
		t.Errorf("replayed old task = state %s retried %d/%d lasterr %q payload %s", old.State, old.Retried, old.MaxRetry, old.LastErr, old.Payload)
	}
	recent := e.info(t, a.recent)
	wantDue := tasks.DueAt(a.recentP.CreatedAt, time.Time{}, tasks.DefaultCloseMargin)
	if recent.State != asynq.TaskStateScheduled || recent.Retried != 0 || recent.MaxRetry != tasks.DefaultMaxRetry ||
		!recent.NextProcessAt.Equal(wantDue) || recent.NextProcessAt.Before(a.recentP.CreatedAt.Add(tasks.MinCloseAge)) {
		t.Errorf("replayed recent task = state %s retried %d/%d next %v, want scheduled at %v", recent.State, recent.Retried, recent.MaxRetry, recent.NextProcessAt, wantDue)
	}
	if recent.Headers[tasks.HeaderDueAt] != wantDue.UTC().Format(time.RFC3339) {
		t.Errorf("due header = %q", recent.Headers[tasks.HeaderDueAt])
	}
	// Not selected, or corrupt: still archived.
	if got, want := e.archivedIDs(t), []string{a.auth, a.corrupt}; !slices.Equal(got, want) {
		t.Errorf("archive = %v, want %v", got, want)
	}
	if !old.NextProcessAt.After(before.Add(-2 * time.Second)) {
		t.Errorf("old task runs at %v, want now", old.NextProcessAt)
	}

	// Replaying again finds nothing more to do.
	sum, err = e.c.Replay(ctx, ReplayOptions{Filter: ReplayFilter{Code: "SYSTEM_ERROR"}})
	if err != nil || sum != (ReplaySummary{Scanned: 2, Skipped: 1}) {
		t.Errorf("second replay = %+v, %v", sum, err)
	}
}

func TestReplayDryRun(t *testing.T) {
	e := newEnv(t)
	a := e.fillArchive(t)
	before := e.archivedIDs(t)
	var out bytes.Buffer
	sum, err := e.c.Replay(context.Background(), ReplayOptions{Filter: ReplayFilter{All: true}, DryRun: true, Out: &out})
	if err != nil {
		t.Fatal(err)
	}
	if sum != (ReplaySummary{Scanned: 4, Matched: 3, Skipped: 1}) {
		t.Errorf("summary = %+v", sum)
	}
	if got := e.archivedIDs(t); !slices.Equal(got, before) {
		t.Errorf("dry run changed the archive: %v, want %v", got, before)
	}
	for _, id := range []string{a.old, a.recent, a.auth} {
		if !strings.Contains(out.String(), "would replay "+id+" (order ") {
			t.Errorf("dry run does not list %s:\n%s", id, out.String())
		}
	}
	if !strings.Contains(out.String(), "retried 2/2") || !strings.Contains(out.String(), "code=NO_AUTH") {
		t.Errorf("dry run lines lack retries or error:\n%s", out.String())
	}
	if info := e.info(t, a.old); info.Retried != 2 || info.State != asynq.TaskStateArchived {
		t.Errorf("dry run touched %s: %+v", a.old, info)
	}
}

func TestReplayFilters(t *testing.T) {
	e := newEnv(t)
	a := e.fillArchive(t)
	later := func(d time.Duration) func() time.Time { return func() time.Time { return time.Now().Add(d) } }
	tests := []struct {
		name string
		f    ReplayFilter
		now  func() time.Time
		want []string
	}{
		{"all", ReplayFilter{All: true}, nil, []string{a.old, a.recent, a.auth}},
		{"code", ReplayFilter{Code: "NO_AUTH"}, nil, []string{a.auth}},
		{"code ignores case", ReplayFilter{Code: "system_error"}, nil, []string{a.old, a.recent}},
		{"code is a whole token", ReplayFilter{Code: "SYSTEM"}, nil, nil},
		{"code not present", ReplayFilter{Code: "ORDERNOTEXIST"}, nil, nil},
		{"out_trade_no", ReplayFilter{OutTradeNo: "R-RECENT"}, nil, []string{a.recent}},
		{"out_trade_no and code", ReplayFilter{OutTradeNo: "R-RECENT", Code: "NO_AUTH"}, nil, nil},
		{"transaction_id", ReplayFilter{TransactionID: "42"}, nil, nil},
		{"older than, failed just now", ReplayFilter{OlderThan: time.Hour}, nil, nil},
		{"older than, two hours later", ReplayFilter{OlderThan: time.Hour}, later(2 * time.Hour), []string{a.old, a.recent, a.auth}},
		{"newer than, failed just now", ReplayFilter{NewerThan: time.Hour}, nil, []string{a.old, a.recent, a.auth}},
		{"newer than, two hours later", ReplayFilter{NewerThan: time.Hour}, later(2 * time.Hour), nil},
		{"window", ReplayFilter{OlderThan: time.Hour, NewerThan: 3 * time.Hour, Code: "SYSTEM_ERROR"}, later(2 * time.Hour), []string{a.old, a.recent}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := *e.c
			if tt.now != nil {
				c.now = tt.now
			}
			var sum ReplaySummary
			cands, err := c.collectArchived(context.Background(), tt.f, &sum, io.Discard, nil)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, cd := range cands {
				got = append(got, cd.id)
			}
			slices.Sort(got)
			want := slices.Sorted(slices.Values(tt.want))
			if !slices.Equal(got, want) {
				t.Errorf("selected %v, want %v", got, want)
			}
		})
	}
}

func TestReplayFilterValidate(t *testing.T) {
	tests := []struct {
		f       ReplayFilter
		wantErr string
	}{
		{ReplayFilter{}, "give at least one filter"},
		{ReplayFilter{All: true, Code: "X"}, "cannot be combined"},
		{ReplayFilter{OlderThan: -time.Hour}, "must be positive"},
		{ReplayFilter{All: true}, ""},
		{ReplayFilter{NewerThan: time.Minute}, ""},
	}
	for _, tt := range tests {
		err := tt.f.Validate()
		if tt.wantErr == "" {
			if err != nil {
				t.Errorf("%+v: %v", tt.f, err)
			}
			continue
		}
		if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%+v: err = %v, want ErrUsage with %q", tt.f, err, tt.wantErr)
		}
	}
	e := newEnv(t)
	if _, err := e.c.Replay(context.Background(), ReplayOptions{}); !errors.Is(err, ErrUsage) {
		t.Errorf("Replay without filter: err = %v, want ErrUsage", err)
	}
}

// TestReplayPaging replays more tasks than fit in a page, with small pages:
// deleting while paging would skip every other page.
func TestReplayPaging(t *testing.T) {
	defer func(old int) { listPageSize = old }(listPageSize)
	listPageSize = 3
	e := newEnv(t)
	w := e.startWorker(t)
	const n = 11
	for i := range n {
		p, id := order(fmt.Sprintf("P-%d", i), time.Now().Add(-time.Hour))
		e.archived(t, w, id, mustJSON(t, p), 0, errSystem)
	}
	w.srv.Shutdown()
	sum, err := e.c.Replay(context.Background(), ReplayOptions{Filter: ReplayFilter{All: true}, Concurrency: 4})
	if err != nil {
		t.Fatal(err)
	}
	if sum != (ReplaySummary{Scanned: n, Matched: n, Replayed: n}) {
		t.Errorf("summary = %+v", sum)
	}
	if ids := e.archivedIDs(t); len(ids) != 0 {
		t.Errorf("still archived: %v", ids)
	}
}

// TestReplayLost re-enqueues through a Redis that is down: the task has
// been deleted from the archive, so its payload must come out on Err in a
// form "enqueue --file -" takes back.
func TestReplayLost(t *testing.T) {
	e := newEnv(t)
	a := e.fillArchive(t)
	broken := *e.c
	broken.producer = tasks.NewProducer(asynq.RedisClientOpt{Addr: "127.0.0.1:1", DialTimeout: time.Second}, tasks.ProducerConfig{})
	t.Cleanup(func() { broken.producer.Close() })

	var out, errw bytes.Buffer
	sum, err := broken.Replay(context.Background(), ReplayOptions{
		Filter: ReplayFilter{OutTradeNo: "R-OLD"}, Out: &out, Err: &errw, Attempts: 2, RetryDelay: time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if sum != (ReplaySummary{Scanned: 4, Matched: 1, Lost: 1}) || sum.OK() {
		t.Errorf("summary = %+v", sum)
	}
	if e.info(t, a.old) != nil {
		t.Fatal("the task is still there; the test did not exercise a lost re-enqueue")
	}
	lines := strings.Split(strings.TrimRight(errw.String(), "\n"), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "LOST "+a.old+": deleted from the archive but NOT enqueued again after 2 attempts") ||
		!strings.Contains(lines[1], "enqueue --file -") {
		t.Fatalf("Err = %q", errw.String())
	}
	if lines[2] != string(a.oldRaw) {
		t.Errorf("payload line = %s, want %s", lines[2], a.oldRaw)
	}

	// The operator follows the message.
	bsum, err := e.c.EnqueueBulk(context.Background(), strings.NewReader(lines[2]+"\n"), BulkOptions{})
	if err != nil || bsum.Enqueued != 1 {
		t.Fatalf("re-enqueue of the printed line: %+v, %v", bsum, err)
	}
	info := e.info(t, a.old)
	if info == nil || info.State != asynq.TaskStatePending || !bytes.Equal(info.Payload, a.oldRaw) {
		t.Errorf("recovered task = %+v", info)
	}
}

// TestReplayStateChanged covers tasks that change between the collect phase
// and their turn, and re-enqueues that meet another task with the same id.
func TestReplayStateChanged(t *testing.T) {
	e := newEnv(t)
	a := e.fillArchive(t)
	// Someone ran the task with asynq's own tools after it was collected.
	var sum ReplaySummary
	cands, err := e.c.collectArchived(context.Background(), ReplayFilter{OutTradeNo: "R-AUTH"}, &sum, io.Discard, nil)
	if err != nil || len(cands) != 1 {
		t.Fatal(cands, err)
	}
	if err := e.ins.RunTask(tasks.QueueClose, a.auth); err != nil {
		t.Fatal(err)
	}
	r := e.c.replayOne(context.Background(), cands[0], ReplayOptions{})
	if r.outcome != replaySkipped || !strings.Contains(r.msg, "no longer archived (now pending)") {
		t.Errorf("result = %+v", r)
	}
	if err := e.ins.DeleteTask(tasks.QueueClose, a.auth); err != nil {
		t.Fatal(err)
	}
	r = e.c.replayOne(context.Background(), cands[0], ReplayOptions{})
	if r.outcome != replaySkipped || !strings.Contains(r.msg, "no longer exists") {
		t.Errorf("result = %+v", r)
	}

	// The archived copy is still there (its delete failed): the re-enqueue
	// is refused by the task id, and the task is reported as failed, not lost.
	p, err := tasks.DecodeClosePayload(e.info(t, a.old).Payload)
	if err != nil {
		t.Fatal(err)
	}
	r = e.c.requeue(context.Background(), a.old, p, ReplayOptions{})
	if r.outcome != replayFailed || !strings.Contains(r.msg, "still archived") {
		t.Errorf("requeue over the archived copy = %+v", r)
	}
	// The order got a new close task between delete and re-enqueue (the
	// checkout service enqueued it again): nothing is lost.
	if err := e.ins.DeleteTask(tasks.QueueClose, a.old); err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.Enqueue(context.Background(), tasks.CloseOrder{OutTradeNo: "R-OLD", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	r = e.c.requeue(context.Background(), a.old, p, ReplayOptions{})
	if r.outcome != replayedDup || !strings.HasPrefix(r.out, "already scheduled "+a.old+" (scheduled) due ") {
		t.Errorf("requeue over a new task = %+v", r)
	}
}
