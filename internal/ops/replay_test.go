package ops

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/wxclose/wxclose/tasks"
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
	e.archived(t, w, a.old, a.oldRaw, 2, errText, failSystem())
	// Created a minute ago (the test worker ignores the 5-minute rule): a
	// replay must wait until creation + 5 minutes.
	a.recentP, a.recent = order("R-RECENT", time.Now().Add(-time.Minute))
	e.archived(t, w, a.recent, mustJSON(t, a.recentP), 1, errText, failSystem())
	authP, authID := order("R-AUTH", time.Now().Add(-time.Hour))
	a.auth = authID
	e.archived(t, w, a.auth, mustJSON(t, authP), 0, errText, failAuth())
	a.corrupt = "close:_:out_trade_no:R-CORRUPT"
	e.archived(t, w, a.corrupt, []byte(`{"out_trade_no":"R-CORRUPT","created_at":"yesterday"}`), 0, errText, failSystem())
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

	// A fresh retry budget (the task's own), the same payload, and the
	// 5-minute rule.
	old := e.info(t, a.old)
	if old.State != asynq.TaskStatePending || old.Retried != 0 || old.MaxRetry != 2 ||
		old.LastErr != "" || !old.LastFailedAt.IsZero() || !bytes.Equal(old.Payload, a.oldRaw) || old.Type != tasks.TypeClose {
		t.Errorf("replayed old task = state %s retried %d/%d lasterr %q lastfailed %v payload %s", old.State, old.Retried, old.MaxRetry, old.LastErr, old.LastFailedAt, old.Payload)
	}
	recent := e.info(t, a.recent)
	wantDue := tasks.DueAt(a.recentP.CreatedAt, time.Time{}, tasks.DefaultCloseMargin)
	if recent.State != asynq.TaskStateScheduled || recent.Retried != 0 || recent.MaxRetry != 1 || recent.LastErr != "" ||
		!recent.NextProcessAt.Equal(wantDue) || recent.NextProcessAt.Before(a.recentP.CreatedAt.Add(tasks.MinCloseAge)) {
		t.Errorf("replayed recent task = state %s retried %d/%d next %v, want scheduled at %v", recent.State, recent.Retried, recent.MaxRetry, recent.NextProcessAt, wantDue)
	}
	if got, ok := tasks.DueFromHeaders(recent.Headers); recent.Headers[tasks.HeaderDue] != tasks.FormatDue(wantDue) || !ok || !got.Equal(wantDue) {
		t.Errorf("due header = %q (%v)", recent.Headers[tasks.HeaderDue], recent.Headers)
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

	// A real asynq server runs the replayed task, as a first attempt.
	ran := make(chan int, 1)
	e.startWorkerWith(t, map[string]behaviour{a.old: {ran: ran}})
	if n := <-ran; n != 0 {
		t.Errorf("the replayed task ran with retry count %d, want 0", n)
	}
}

// TestReplayWritesWhatAsynqWrites compares the Redis records of replayed
// tasks, field by field, with those asynq's own Client writes for a new
// pending and a new scheduled task with the same options: replay must leave
// nothing behind that asynq would not (a stale field, a wrong state) and
// miss nothing it needs (pending_since feeds the queue latency).
func TestReplayWritesWhatAsynqWrites(t *testing.T) {
	e := newEnv(t)
	a := e.fillArchive(t)
	ctx := context.Background()
	rdb := e.srv.Client()
	if _, err := e.c.Replay(ctx, ReplayOptions{Filter: ReplayFilter{Code: "SYSTEM_ERROR"}}); err != nil {
		t.Fatal(err)
	}
	cl := asynq.NewClientFromRedisClient(rdb)
	refPending, refScheduled := "close:_:out_trade_no:REF-P", "close:_:out_trade_no:REF-S"
	for id, at := range map[string]time.Time{refPending: time.Now(), refScheduled: time.Now().Add(time.Hour)} {
		if _, err := cl.Enqueue(asynq.NewTask(tasks.TypeClose, []byte(`{}`)), asynq.Queue(tasks.QueueClose), asynq.TaskID(id), asynq.ProcessAt(at)); err != nil {
			t.Fatal(err)
		}
	}
	fields := func(id string) []string {
		m, err := rdb.HGetAll(ctx, asynqKey("t:"+id)).Result()
		if err != nil {
			t.Fatal(err)
		}
		keys := slices.Sorted(maps.Keys(m))
		for i, k := range keys {
			if k == "state" {
				keys[i] += "=" + m[k]
			}
		}
		return keys
	}
	for _, c := range []struct{ replayed, ref, list string }{
		{a.old, refPending, "pending"},
		{a.recent, refScheduled, "scheduled"},
	} {
		if got, want := fields(c.replayed), fields(c.ref); !slices.Equal(got, want) {
			t.Errorf("replayed %s has fields %v; asynq writes %v", c.replayed, got, want)
		}
		// In exactly one of asynq's lists, once: the target one.
		for _, l := range []string{"pending", "active", "scheduled", "retry", "archived"} {
			want := 0
			if l == c.list {
				want = 1
			}
			if n := occurrences(t, rdb, l, c.replayed); n != want {
				t.Errorf("%s is %d times in %s, want %d", c.replayed, n, l, want)
			}
		}
	}
	ps, err := rdb.HGet(ctx, asynqKey("t:"+a.old), "pending_since").Int64()
	if err != nil || ps <= 0 {
		t.Errorf("pending_since = %d, %v", ps, err)
	}
	// The queue's figures agree.
	qi, err := e.ins.GetQueueInfo(tasks.QueueClose)
	if err != nil {
		t.Fatal(err)
	}
	if qi.Pending != 2 || qi.Scheduled != 2 || qi.Archived != 2 {
		t.Errorf("queue info: %d pending, %d scheduled, %d archived; want 2, 2, 2", qi.Pending, qi.Scheduled, qi.Archived)
	}
}

// occurrences counts id in the close queue's list or sorted set named l.
func occurrences(t testing.TB, rdb *redis.Client, l, id string) int {
	t.Helper()
	ctx := context.Background()
	if l == "pending" || l == "active" {
		ids, err := rdb.LRange(ctx, asynqKey(l), 0, -1).Result()
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, v := range ids {
			if v == id {
				n++
			}
		}
		return n
	}
	_, err := rdb.ZScore(ctx, asynqKey(l), id).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return 0
	case err != nil:
		t.Fatal(err)
	}
	return 1
}

// TestReplayHonoursCloseAt: a replayed close waits for the merchant's own
// deadline stored in the payload, not only for creation + 5 minutes. The
// old replay dropped close_at and closed an order created an hour ago at
// once, inside the merchant's payment window.
func TestReplayHonoursCloseAt(t *testing.T) {
	e := newEnv(t)
	w := e.startWorker(t)
	created := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	closeAt := time.Now().Add(10 * time.Minute).UTC().Truncate(time.Second).Add(300 * time.Millisecond)
	p, id := order("R-CLOSEAT", created)
	p.CloseAt = closeAt
	e.archived(t, w, id, mustJSON(t, p), 0, errText, failSystem())
	w.srv.Shutdown()

	sum, err := e.c.Replay(context.Background(), ReplayOptions{Filter: ReplayFilter{OutTradeNo: "R-CLOSEAT"}})
	if err != nil || sum.Replayed != 1 {
		t.Fatalf("replay = %+v, %v", sum, err)
	}
	info := e.info(t, id)
	want := closeAt.Truncate(time.Second).Add(time.Second) // rounded up to a whole second
	if info.State != asynq.TaskStateScheduled || !info.NextProcessAt.Equal(want) || info.NextProcessAt.Before(closeAt) {
		t.Errorf("replayed task: %s at %v, want scheduled at %v (close_at %v)", info.State, info.NextProcessAt, want, closeAt)
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
			cands, err := c.collectArchived(context.Background(), closeReplay, tt.f, &sum, io.Discard, nil)
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
		e.archived(t, w, id, mustJSON(t, p), 0, errText, failSystem())
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

// TestReplayRedisDown: when Redis fails mid-replay, the task is reported
// as failed and stays archived; nothing is deleted first.
func TestReplayRedisDown(t *testing.T) {
	e := newEnv(t)
	a := e.fillArchive(t)
	var sum ReplaySummary
	cands, err := e.c.collectArchived(context.Background(), closeReplay, ReplayFilter{OutTradeNo: "R-OLD"}, &sum, io.Discard, nil)
	if err != nil || len(cands) != 1 {
		t.Fatal(cands, err)
	}
	broken := *e.c
	broken.rdb = redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", DialTimeout: time.Second, MaxRetries: -1})
	t.Cleanup(func() { broken.rdb.Close() })
	r := broken.replayOne(context.Background(), closeReplay, cands[0], ReplayOptions{Attempts: 2, RetryDelay: time.Millisecond})
	if r.outcome != replayFailed || !strings.Contains(r.msg, "failed "+a.old) || !strings.Contains(r.msg, "still archived") {
		t.Errorf("result = %+v", r)
	}
	if info := e.info(t, a.old); info == nil || info.State != asynq.TaskStateArchived || info.Retried != 2 {
		t.Errorf("task after a failed replay: %+v, want archived as it was", info)
	}
}

// TestReplayStateChanged covers tasks that change between the collect phase
// and their turn.
func TestReplayStateChanged(t *testing.T) {
	e := newEnv(t)
	a := e.fillArchive(t)
	ctx := context.Background()
	collect := func(no string) candidate {
		t.Helper()
		var sum ReplaySummary
		cands, err := e.c.collectArchived(ctx, closeReplay, ReplayFilter{OutTradeNo: no}, &sum, io.Discard, nil)
		if err != nil || len(cands) != 1 {
			t.Fatal(cands, err)
		}
		return cands[0]
	}
	// Someone ran the task with asynq's own tools after it was collected.
	auth := collect("R-AUTH")
	if err := e.ins.RunTask(tasks.QueueClose, a.auth); err != nil {
		t.Fatal(err)
	}
	r := e.c.replayOne(ctx, closeReplay, auth, ReplayOptions{})
	if r.outcome != replaySkipped || !strings.Contains(r.msg, "no longer archived (now pending)") {
		t.Errorf("result = %+v", r)
	}
	if err := e.ins.DeleteTask(tasks.QueueClose, a.auth); err != nil {
		t.Fatal(err)
	}
	r = e.c.replayOne(ctx, closeReplay, auth, ReplayOptions{})
	if r.outcome != replaySkipped || !strings.Contains(r.msg, "no longer exists") {
		t.Errorf("result = %+v", r)
	}
}

// TestReplayScript drives the script's compare-and-swap directly: it moves
// a task only if it is still archived with exactly the message read, and
// a second run of the same move (an answer lost on the way back) reports
// the move as done instead of failing or moving twice.
func TestReplayScript(t *testing.T) {
	e := newEnv(t)
	a := e.fillArchive(t)
	ctx := context.Background()
	rdb := e.srv.Client()
	run := func(mv replayMove, id string) int64 {
		t.Helper()
		n, err := replayScript.Run(ctx, rdb, mv.keys(id), mv.args(id)...).Int64()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}

	mv, res := e.c.prepareReplay(ctx, closeReplay, a.old)
	if res != nil {
		t.Fatal(res)
	}
	// The task is archived again by a worker between read and move: its
	// message (error, failure time) differs.
	stale := mv
	stale.old = append([]byte(nil), mv.old...)
	stale.old[len(stale.old)-1] ^= 1
	if n := run(stale, a.old); n != -1 {
		t.Errorf("stale message: script = %d, want -1", n)
	}
	if info := e.info(t, a.old); info.State != asynq.TaskStateArchived {
		t.Fatalf("a refused move changed the task: %s", info.State)
	}
	if n := run(mv, a.old); n != 1 {
		t.Errorf("move: script = %d, want 1", n)
	}
	if n := run(mv, a.old); n != 2 {
		t.Errorf("repeated move: script = %d, want 2 (already done)", n)
	}
	if n, _ := rdb.LLen(ctx, asynqKey("pending")).Result(); n != 1 {
		t.Errorf("pending list holds %d ids after a repeated move, want 1", n)
	}
	// Marked archived but missing from the archive set: refused, untouched.
	mv2, res := e.c.prepareReplay(ctx, closeReplay, a.auth)
	if res != nil {
		t.Fatal(res)
	}
	rdb.ZRem(ctx, asynqKey("archived"), a.auth)
	if n := run(mv2, a.auth); n != -2 {
		t.Errorf("inconsistent archive: script = %d, want -2", n)
	}
	if st, _ := rdb.HGet(ctx, asynqKey("t:"+a.auth), "state").Result(); st != "archived" {
		t.Errorf("inconsistent task changed to %s", st)
	}
	// Gone: nothing to do.
	if n := run(mv2, "close:_:out_trade_no:NOPE"); n != 0 {
		t.Errorf("missing task: script = %d, want 0", n)
	}
}

// TestReplayRefusesForeignRecords: archived records replay must not move
// are reported and left in the archive.
func TestReplayRefusesForeignRecords(t *testing.T) {
	e := newEnv(t)
	w := e.startWorker(t)
	good, _ := order("F-1", time.Now().Add(-time.Hour))
	// A payload that belongs to another task id.
	e.archived(t, w, "close:_:out_trade_no:F-OTHER", mustJSON(t, good), 0, errText, failSystem())
	// A payload created far in the future: the producer would refuse it.
	future, futureID := order("F-FUTURE", time.Now().Add(3*time.Hour))
	e.archived(t, w, futureID, mustJSON(t, future), 0, errText, failSystem())
	// A close_at beyond the limit.
	far, farID := order("F-FAR", time.Now().Add(-time.Hour))
	far.CloseAt = far.CreatedAt.Add(tasks.MaxCloseDelay + time.Hour)
	e.archived(t, w, farID, mustJSON(t, far), 0, errText, failSystem())
	w.srv.Shutdown()
	// A stored message that is not protobuf.
	rdb := e.srv.Client()
	ctx := context.Background()
	badID := "close:_:out_trade_no:F-BAD"
	rdb.HSet(ctx, asynqKey("t:"+badID), "msg", "\xff\xff\xff", "state", "archived")
	for _, id := range []string{badID} {
		mv, res := e.c.prepareReplay(ctx, closeReplay, id)
		if res == nil || res.outcome != replaySkipped || !strings.Contains(res.msg, "not an asynq") {
			t.Errorf("%s: prepare = %+v, %+v", id, mv, res)
		}
	}

	var errw bytes.Buffer
	sum, err := e.c.Replay(ctx, ReplayOptions{Filter: ReplayFilter{All: true}, Err: &errw})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Replayed != 0 || sum.Failed != 0 || sum.Skipped != 3 {
		t.Errorf("summary = %+v, want 3 skipped", sum)
	}
	for _, want := range []string{
		"skipped close:_:out_trade_no:F-OTHER: its payload belongs to task close:" + testMchID + ":out_trade_no:F-1",
		"skipped " + futureID + ": created_at ",
		"skipped " + farID + ": payload is corrupt (close_at ",
	} {
		if !strings.Contains(errw.String(), want) {
			t.Errorf("Err lacks %q:\n%s", want, errw.String())
		}
	}
	if ids := e.archivedIDs(t); len(ids) != 3 {
		t.Errorf("archive = %v, want the 3 tasks still there", ids)
	}
}

// TestReplayCodeReadsTheFailureRecord: --code selects by the failure record
// the worker stores, never by the error's text. A task archived before
// records existed is not selected even though its text names the code; it
// is counted and the operator is told how to select it.
func TestReplayCodeReadsTheFailureRecord(t *testing.T) {
	e := newEnv(t)
	w := e.startWorker(t)
	recP, recID := order("C-RECORD", time.Now().Add(-time.Hour))
	e.archived(t, w, recID, mustJSON(t, recP), 0, errText, failAuth())
	legacyP, legacyID := order("C-LEGACY", time.Now().Add(-time.Hour))
	e.archived(t, w, legacyID, mustJSON(t, legacyP), 0, "wechat: permanent: code=NO_AUTH status=403: no permission", nil)
	// The text says one code, the record another: the record wins.
	mixedP, mixedID := order("C-MIXED", time.Now().Add(-time.Hour))
	e.archived(t, w, mixedID, mustJSON(t, mixedP), 0, "wechat: permanent: code=NO_AUTH status=403", failSystem())
	w.srv.Shutdown()

	var out, errw bytes.Buffer
	sum, err := e.c.Replay(context.Background(), ReplayOptions{Filter: ReplayFilter{Code: "no_auth"}, DryRun: true, Out: &out, Err: &errw})
	if err != nil {
		t.Fatal(err)
	}
	if want := (ReplaySummary{Scanned: 3, Matched: 1, NoRecord: 1}); sum != want {
		t.Errorf("summary = %+v, want %+v", sum, want)
	}
	if !strings.Contains(out.String(), "would replay "+recID) || strings.Contains(out.String(), legacyID) || strings.Contains(out.String(), mixedID) {
		t.Errorf("dry run selected:\n%s", out.String())
	}
	if !strings.Contains(errw.String(), "1 archived close tasks carry no failure record") || !strings.Contains(errw.String(), "--older-than") {
		t.Errorf("no note about the task without a record: %q", errw.String())
	}
	if !strings.Contains(sum.String(), "1 without a failure record") {
		t.Errorf("summary text %q", sum.String())
	}
	// Other filters still reach the task without a record.
	sum, err = e.c.Replay(context.Background(), ReplayOptions{Filter: ReplayFilter{OutTradeNo: "C-LEGACY"}, Out: io.Discard, Err: io.Discard})
	if err != nil || sum.Replayed != 1 || sum.NoRecord != 0 {
		t.Errorf("replay by order number = %+v, %v", sum, err)
	}
}
