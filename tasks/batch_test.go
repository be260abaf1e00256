package tasks_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/wxclose/wxclose/internal/redistest"
	"github.com/wxclose/wxclose/tasks"
)

// storedTask is everything asynq keeps about one task, in a form two
// servers' copies can be compared in: the hash's fields (pending_since,
// a clock reading, only as present), where the task waits, and whether its
// queue is listed.
type storedTask struct {
	fields map[string]string
	where  string // "pending", "scheduled at <unix seconds>", or "nowhere"
	listed bool
}

func readStored(t *testing.T, rdb *redis.Client, queue, id string) storedTask {
	t.Helper()
	ctx := context.Background()
	prefix := "asynq:{" + queue + "}:"
	fields, err := rdb.HGetAll(ctx, prefix+"t:"+id).Result()
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := fields["pending_since"]; ok {
		if ns, err := strconv.ParseInt(v, 10, 64); err != nil || ns <= 0 {
			t.Errorf("%s: pending_since = %q, want Unix nanoseconds", id, v)
		}
		fields["pending_since"] = "(set)"
	}
	s := storedTask{fields: fields, where: "nowhere"}
	pending, err := rdb.LRange(ctx, prefix+"pending", 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(pending, id) {
		s.where = "pending"
	}
	switch score, err := rdb.ZScore(ctx, prefix+"scheduled", id).Result(); {
	case err == nil && s.where == "nowhere":
		s.where = fmt.Sprintf("scheduled at %.0f", score)
	case err == nil:
		s.where = "pending and scheduled"
	case !errors.Is(err, redis.Nil):
		t.Fatal(err)
	}
	if s.listed, err = rdb.SIsMember(ctx, "asynq:queues", queue).Result(); err != nil {
		t.Fatal(err)
	}
	return s
}

// sameResult compares results as values: the same instant, the same error
// text.
func sameResult(a, b tasks.BatchResult) bool {
	if (a.Err == nil) != (b.Err == nil) || a.Err != nil && a.Err.Error() != b.Err.Error() {
		return false
	}
	x, y := a.Scheduled, b.Scheduled
	return x.DueAt.Equal(y.DueAt) && x.TaskID == y.TaskID && x.Duplicate == y.Duplicate && x.State == y.State && x.Queue == y.Queue
}

// TestBatchWritesWhatAsynqWrites enqueues the same orders one by one
// through asynq's Client (EnqueueClose) into one Redis and as one batch
// (EnqueueCloses) into another, and compares what each Redis holds, byte
// for byte, and what asynq's Inspector reads back. The batch writes asynq's
// format itself; this is the test that fails when an asynq upgrade changes
// that format.
func TestBatchWritesWhatAsynqWrites(t *testing.T) {
	one, batch := redistest.Start(t), redistest.Start(t)
	ctx := context.Background()
	// The due header of an order already due records the producer's "now":
	// the same clock for both.
	now := time.Now()
	cfg := tasks.ProducerConfig{MchID: "1900000109", Now: func() time.Time { return now }}
	pOne := tasks.NewProducerFromRedisClient(one.Client(), cfg)
	pBatch := tasks.NewProducerFromRedisClient(batch.Client(), cfg)
	whole := now.Truncate(time.Second)
	orders := []tasks.CloseOrder{
		{OutTradeNo: "EQ-FUTURE", CreatedAt: now.Add(-time.Minute)},
		{OutTradeNo: "EQ-PAST", CreatedAt: now.Add(-10 * time.Minute)},
		{OutTradeNo: "EQ-CLOSE-AT", CreatedAt: now.Add(-time.Minute), CloseAt: now.Add(30 * time.Minute)},
		{OutTradeNo: "EQ-PAST-CLOSE-AT", CreatedAt: now.Add(-20 * time.Minute), CloseAt: now.Add(-15 * time.Minute)},
		{TransactionID: "4200000000202611220000000009", SubMchID: "1900000110", SubAppID: "wxd678efh567hg6787", CreatedAt: now.Add(-10 * time.Minute)},
		{OutTradeNo: "EQ-INST-FUTURE", MchID: "1230000109", SubMchID: "1900000111", CreatedAt: now.Add(-2 * time.Minute)},
		{OutTradeNo: "EQ-BOTH", TransactionID: "4200000000202611220000000010", MchID: "1230000109", CreatedAt: now.Add(-time.Minute)},
		{OutTradeNo: "EQ-WHOLE-SECOND", CreatedAt: whole.Add(-2 * time.Minute)},
		{OutTradeNo: "EQ-LONG-" + strings.Repeat("x", 24), CreatedAt: now.Add(-time.Minute), CloseAt: now.Add(6 * 24 * time.Hour)},
	}
	want := make([]tasks.BatchResult, len(orders))
	for i, o := range orders {
		want[i].Scheduled, want[i].Err = pOne.EnqueueClose(ctx, o)
		if want[i].Err != nil {
			t.Fatalf("EnqueueClose(%+v): %v", o, want[i].Err)
		}
	}
	got := pBatch.EnqueueCloses(ctx, orders)
	if len(got) != len(orders) {
		t.Fatalf("EnqueueCloses returned %d results for %d orders", len(got), len(orders))
	}
	states := map[string]int{}
	for i := range orders {
		if !sameResult(got[i], want[i]) {
			t.Errorf("order %d: EnqueueCloses = %+v, EnqueueClose = %+v", i, got[i], want[i])
		}
		states[want[i].Scheduled.State]++
	}
	if states["pending"] < 2 || states["scheduled"] < 2 {
		t.Fatalf("states %v: the test needs both pending and scheduled tasks", states)
	}

	inspOne, inspBatch := asynq.NewInspectorFromRedisClient(one.Client()), asynq.NewInspectorFromRedisClient(batch.Client())
	for _, w := range want {
		id, q := w.Scheduled.TaskID, w.Scheduled.Queue
		a, b := readStored(t, one.Client(), q, id), readStored(t, batch.Client(), q, id)
		if a.fields["msg"] == "" || a.where == "nowhere" || !a.listed {
			t.Fatalf("%s: asynq's record is incomplete: %+v", id, a)
		}
		if a.fields["msg"] != b.fields["msg"] {
			t.Errorf("%s: msg differs:\nasynq  %x\nbatch  %x", id, a.fields["msg"], b.fields["msg"])
		}
		if !maps.Equal(a.fields, b.fields) || a.where != b.where || a.listed != b.listed {
			t.Errorf("%s: stored differently:\nasynq  %+v\nbatch  %+v", id, a, b)
		}
		ia, err := inspOne.GetTaskInfo(q, id)
		if err != nil {
			t.Fatal(err)
		}
		ib, err := inspBatch.GetTaskInfo(q, id)
		if err != nil {
			t.Fatalf("asynq's Inspector cannot read the batch-written %s: %v", id, err)
		}
		if ia.Type != ib.Type || string(ia.Payload) != string(ib.Payload) || ia.Queue != ib.Queue || ia.ID != ib.ID ||
			ia.State != ib.State || ia.MaxRetry != ib.MaxRetry || ia.Retried != ib.Retried || ia.Timeout != ib.Timeout ||
			ia.Retention != ib.Retention || !ia.Deadline.Equal(ib.Deadline) || !maps.Equal(ia.Headers, ib.Headers) ||
			ia.Group != ib.Group || ib.Timeout != tasks.DefaultCloseTimeout || ib.Retention != tasks.DefaultCloseRetention ||
			ib.MaxRetry != tasks.DefaultMaxRetry || !ib.Deadline.IsZero() {
			t.Errorf("%s: Inspector reads\nasynq  %+v\nbatch  %+v", id, ia, ib)
		}
		// A pending task's next process time is the moment it is read.
		if ia.State == asynq.TaskStateScheduled && !ia.NextProcessAt.Equal(ib.NextProcessAt) {
			t.Errorf("%s: runs at %v, asynq's at %v", id, ib.NextProcessAt, ia.NextProcessAt)
		}
	}

	// A second enqueue of each is a duplicate, reported alike.
	again := pBatch.EnqueueCloses(ctx, orders)
	for i, o := range orders {
		w, err := pOne.EnqueueClose(ctx, o)
		g := again[i]
		if err != nil || g.Err != nil || !w.Duplicate || !g.Scheduled.Duplicate || g.Scheduled.State != w.State ||
			g.Scheduled.TaskID != w.TaskID || g.Scheduled.Queue != w.Queue || g.Scheduled.DueAt.IsZero() ||
			w.State == "scheduled" && !g.Scheduled.DueAt.Equal(w.DueAt) {
			t.Errorf("order %d again: EnqueueCloses = %+v, EnqueueClose = %+v, %v", i, g, w, err)
		}
	}
}

// TestBatchDuplicates: an order repeated within a batch, or enqueued by an
// earlier batch, is reported as a duplicate with the first task's state
// and due time, and the first task is left as it was, even when the repeat
// asks for another close_at.
func TestBatchDuplicates(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	p := tasks.NewProducerFromRedisClient(srv.Client(), tasks.ProducerConfig{MchID: "1900000109"})
	created := time.Now().Add(-time.Minute)
	first := tasks.CloseOrder{OutTradeNo: "DUP-1", CreatedAt: created}
	later := tasks.CloseOrder{OutTradeNo: "DUP-1", CreatedAt: created, CloseAt: created.Add(time.Hour)}
	past := tasks.CloseOrder{OutTradeNo: "DUP-2", CreatedAt: created.Add(-time.Hour)}

	res := p.EnqueueCloses(ctx, []tasks.CloseOrder{first, past, later, past})
	for i, r := range res {
		if r.Err != nil {
			t.Fatalf("order %d: %v", i, r.Err)
		}
	}
	wantDue := tasks.DueAt(created, time.Time{}, tasks.DefaultCloseMargin)
	if s := res[0].Scheduled; s.Duplicate || s.State != "scheduled" || !s.DueAt.Equal(wantDue) {
		t.Errorf("first = %+v, want scheduled at %v", s, wantDue)
	}
	if s := res[1].Scheduled; s.Duplicate || s.State != "pending" {
		t.Errorf("past = %+v, want pending", s)
	}
	// asynq's Inspector gives a scheduled task's time in whole seconds.
	if s := res[2].Scheduled; !s.Duplicate || s.TaskID != res[0].Scheduled.TaskID || s.State != "scheduled" || !s.DueAt.Equal(wantDue.Truncate(time.Second)) {
		t.Errorf("repeat in the batch = %+v, want a duplicate scheduled at %v", s, wantDue.Truncate(time.Second))
	}
	if s := res[3].Scheduled; !s.Duplicate || s.State != "pending" || s.DueAt.IsZero() {
		t.Errorf("repeat of the pending order = %+v, want a pending duplicate", s)
	}
	before := readStored(t, srv.Client(), tasks.QueueClose, res[0].Scheduled.TaskID)

	res = p.EnqueueCloses(ctx, []tasks.CloseOrder{later, {OutTradeNo: "DUP-3", CreatedAt: created}, first})
	if s := res[0].Scheduled; res[0].Err != nil || !s.Duplicate || s.State != "scheduled" || !s.DueAt.Equal(wantDue.Truncate(time.Second)) {
		t.Errorf("repeat in a later batch = %+v, %v", s, res[0].Err)
	}
	if s := res[1].Scheduled; res[1].Err != nil || s.Duplicate {
		t.Errorf("new order next to duplicates = %+v, %v", s, res[1].Err)
	}
	if s := res[2].Scheduled; res[2].Err != nil || !s.Duplicate {
		t.Errorf("second repeat = %+v, %v", s, res[2].Err)
	}
	after := readStored(t, srv.Client(), tasks.QueueClose, res[0].Scheduled.TaskID)
	if !maps.Equal(before.fields, after.fields) || before.where != after.where {
		t.Errorf("the first task changed:\nbefore %+v\nafter  %+v", before, after)
	}
	if n, err := srv.Client().ZCard(ctx, "asynq:{close_order}:scheduled").Result(); err != nil || n != 2 {
		t.Errorf("scheduled set holds %d tasks (%v), want 2", n, err)
	}
	if n, err := srv.Client().LLen(ctx, "asynq:{close_order}:pending").Result(); err != nil || n != 1 {
		t.Errorf("pending list holds %d tasks (%v), want 1", n, err)
	}
}

// TestBatchInvalidOrders: invalid orders get EnqueueClose's validation
// errors at their own index; the valid ones around them are enqueued.
func TestBatchInvalidOrders(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	p := tasks.NewProducerFromRedisClient(srv.Client(), tasks.ProducerConfig{MchID: "1900000109"})
	created := time.Now().Add(-time.Minute)
	orders := []tasks.CloseOrder{
		{OutTradeNo: "OK-1", CreatedAt: created},
		{OutTradeNo: "bad order!", CreatedAt: created},
		{OutTradeNo: "OK-2", CreatedAt: created},
		{OutTradeNo: "FUTURE", CreatedAt: time.Now().Add(2 * tasks.MaxCreatedAtAhead)},
		{OutTradeNo: "CLOSE-BEFORE", CreatedAt: created, CloseAt: created.Add(-time.Minute)},
		{OutTradeNo: "BAD-APPID", SubMchID: "1900000110", SubAppID: "wx-1", CreatedAt: created},
		{},
		{OutTradeNo: "OK-3", CreatedAt: created},
	}
	res := p.EnqueueCloses(ctx, orders)
	insp := asynq.NewInspectorFromRedisClient(srv.Client())
	for i, o := range orders {
		_, _, wantErr := p.Payload(o)
		switch r := res[i]; {
		case wantErr != nil:
			if !errors.Is(r.Err, tasks.ErrInvalidPayload) || r.Err.Error() != wantErr.Error() || r.Scheduled != (tasks.Scheduled{}) {
				t.Errorf("order %d: %+v, want the error %q", i, r, wantErr)
			}
		case r.Err != nil || r.Scheduled.Duplicate || r.Scheduled.State != "scheduled":
			t.Errorf("order %d: %+v, want enqueued", i, r)
		default:
			if _, err := insp.GetTaskInfo(tasks.QueueClose, r.Scheduled.TaskID); err != nil {
				t.Errorf("order %d: %v", i, err)
			}
		}
	}
	qi, err := insp.GetQueueInfo(tasks.QueueClose)
	if err != nil || qi.Size != 3 {
		t.Errorf("queue info %+v, %v; want the 3 valid orders only", qi, err)
	}
	if res := p.EnqueueCloses(ctx, nil); len(res) != 0 {
		t.Errorf("empty batch: %+v", res)
	}
}

// TestBatchAfterScriptFlush: a Redis that lost its script cache (a restart,
// SCRIPT FLUSH) answers the pipelined EVALSHA with NOSCRIPT; those orders
// are sent again, and nothing is enqueued twice or lost.
func TestBatchAfterScriptFlush(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	rdb := srv.Client()
	p := tasks.NewProducerFromRedisClient(rdb, tasks.ProducerConfig{MchID: "1900000109"})
	created := time.Now().Add(-time.Minute)
	batch := func(prefix string) []tasks.CloseOrder {
		return []tasks.CloseOrder{
			{OutTradeNo: prefix + "-SCHEDULED", CreatedAt: created},
			{OutTradeNo: prefix + "-PENDING", CreatedAt: created.Add(-time.Hour)},
			{OutTradeNo: prefix + "-SCHEDULED-2", CreatedAt: created},
		}
	}
	check := func(res []tasks.BatchResult, dup bool) {
		t.Helper()
		for i, r := range res {
			if r.Err != nil || r.Scheduled.Duplicate != dup {
				t.Errorf("order %d: %+v, want duplicate=%t", i, r, dup)
			}
		}
	}
	for round, prefix := range []string{"A", "B", "C"} {
		if err := rdb.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		check(p.EnqueueCloses(ctx, batch(prefix)), false)
		if round == 1 {
			// Scripts cached again: the next batch runs without retrying.
			check(p.EnqueueCloses(ctx, batch("D")), false)
		}
	}
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	check(p.EnqueueCloses(ctx, batch("A")), true)
	insp := asynq.NewInspectorFromRedisClient(rdb)
	qi, err := insp.GetQueueInfo(tasks.QueueClose)
	if err != nil || qi.Size != 12 || qi.Pending != 4 {
		t.Errorf("queue info %+v, %v; want 12 tasks, 4 of them pending", qi, err)
	}
}

// TestBatchShards: with Shards = 4 each task of a batch goes to the queue
// its id hashes to, every shard used is listed, and a repeat finds it.
func TestBatchShards(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	p := tasks.NewProducerFromRedisClient(srv.Client(), tasks.ProducerConfig{MchID: "1900000109", Shards: 4})
	insp := asynq.NewInspectorFromRedisClient(srv.Client())
	var orders []tasks.CloseOrder
	for i := range 40 {
		created := time.Now()
		if i%3 == 0 {
			created = created.Add(-time.Hour)
		}
		orders = append(orders, tasks.CloseOrder{OutTradeNo: fmt.Sprintf("SHARD-%d", i), CreatedAt: created})
	}
	res := p.EnqueueCloses(ctx, orders)
	used := map[string]bool{}
	for i, r := range res {
		want := tasks.CloseQueue(r.Scheduled.TaskID, 4)
		if r.Err != nil || r.Scheduled.Duplicate || r.Scheduled.Queue != want {
			t.Fatalf("order %d: %+v, want a new task in %s", i, r, want)
		}
		used[want] = true
		if info, err := insp.GetTaskInfo(want, r.Scheduled.TaskID); err != nil || info.State.String() != r.Scheduled.State {
			t.Fatalf("task %s in %s: %+v, %v", r.Scheduled.TaskID, want, info, err)
		}
	}
	if len(used) != 4 {
		t.Errorf("40 orders used shards %v, want all 4", used)
	}
	if qs, err := tasks.ExistingCloseQueues(insp); err != nil || strings.Join(qs, ",") != "close_order:0,close_order:1,close_order:2,close_order:3" {
		t.Errorf("ExistingCloseQueues = %v, %v; want the 4 shards only", qs, err)
	}
	for i, r := range p.EnqueueCloses(ctx, orders) {
		if r.Err != nil || !r.Scheduled.Duplicate || r.Scheduled.Queue != res[i].Scheduled.Queue {
			t.Errorf("order %d again: %+v", i, r)
		}
	}
}

// TestBatchFallbacks: settings the pipeline does not carry give
// EnqueueClose's results, order by order.
func TestBatchFallbacks(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	created := time.Now()
	old := tasks.NewProducerFromRedisClient(srv.Client(), tasks.ProducerConfig{MchID: "1900000109", Shards: 2})
	aware := tasks.NewProducerFromRedisClient(srv.Client(), tasks.ProducerConfig{MchID: "1900000109", Shards: 4, PreviousShards: 2})
	// An order whose queue differs between the layouts.
	var moved tasks.CloseOrder
	for i := 0; ; i++ {
		moved = tasks.CloseOrder{OutTradeNo: fmt.Sprintf("MOVE-%d", i), CreatedAt: created}
		id := tasks.CloseTaskID(tasks.OrderRef{OutTradeNo: moved.OutTradeNo, MchID: "1900000109"})
		if tasks.CloseQueue(id, 2) != tasks.CloseQueue(id, 4) {
			break
		}
	}
	first, err := old.EnqueueClose(ctx, moved)
	if err != nil {
		t.Fatal(err)
	}
	res := aware.EnqueueCloses(ctx, []tasks.CloseOrder{moved, {OutTradeNo: "NEW-1", CreatedAt: created}, {OutTradeNo: "bad!"}})
	if s := res[0].Scheduled; res[0].Err != nil || !s.Duplicate || s.Queue != first.Queue || s.State != "scheduled" {
		t.Errorf("order under the previous layout = %+v, %v; want the duplicate in %s", s, res[0].Err, first.Queue)
	}
	if s := res[1].Scheduled; res[1].Err != nil || s.Duplicate || s.Queue != tasks.CloseQueue(s.TaskID, 4) {
		t.Errorf("new order = %+v, %v", s, res[1].Err)
	}
	if !errors.Is(res[2].Err, tasks.ErrInvalidPayload) {
		t.Errorf("invalid order: %v", res[2].Err)
	}

	bad := tasks.NewProducerFromRedisClient(srv.Client(), tasks.ProducerConfig{Shards: -1})
	for i, r := range bad.EnqueueCloses(ctx, []tasks.CloseOrder{{OutTradeNo: "X", CreatedAt: created}, {}}) {
		if r.Err == nil || !strings.Contains(r.Err.Error(), "ProducerConfig.Shards") {
			t.Errorf("invalid configuration, order %d: %v", i, r.Err)
		}
	}

	if srv.Embedded {
		t.Log("miniredis has no WAIT command: WaitReplicas not checked")
		return
	}
	waiting := tasks.NewProducerFromRedisClient(srv.Client(), tasks.ProducerConfig{MchID: "1900000109", WaitReplicas: 1, WaitTimeout: 10 * time.Millisecond})
	for i, r := range waiting.EnqueueCloses(ctx, []tasks.CloseOrder{{OutTradeNo: "WAIT-1", CreatedAt: created}, moved}) {
		if !errors.Is(r.Err, tasks.ErrNotReplicated) {
			t.Errorf("WaitReplicas without a replica, order %d: %v; want ErrNotReplicated", i, r.Err)
		}
	}
}

// TestBatchRedisErrors: a Redis that cannot be reached fails every valid
// order of the batch with an error naming its task id, as EnqueueClose
// does, and a cancelled context fails them too.
func TestBatchRedisErrors(t *testing.T) {
	ctx := context.Background()
	down := tasks.NewProducer(asynq.RedisClientOpt{Addr: "127.0.0.1:1", DialTimeout: time.Second}, tasks.ProducerConfig{})
	t.Cleanup(func() { down.Close() })
	orders := []tasks.CloseOrder{{OutTradeNo: "D-1", CreatedAt: time.Now()}, {OutTradeNo: "bad!"}, {OutTradeNo: "D-2", CreatedAt: time.Now().Add(-time.Hour)}}
	res := down.EnqueueCloses(ctx, orders)
	for i, want := range []string{"enqueue close close:_:out_trade_no:D-1: ", "", "enqueue close close:_:out_trade_no:D-2: "} {
		switch {
		case want == "" && !errors.Is(res[i].Err, tasks.ErrInvalidPayload):
			t.Errorf("order %d: %v, want ErrInvalidPayload", i, res[i].Err)
		case want != "" && (res[i].Err == nil || !strings.HasPrefix(res[i].Err.Error(), want) || errors.Is(res[i].Err, tasks.ErrInvalidPayload)):
			t.Errorf("order %d: %v, want an error starting %q", i, res[i].Err, want)
		}
	}

	srv := redistest.Start(t)
	p := tasks.NewProducerFromRedisClient(srv.Client(), tasks.ProducerConfig{})
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	for i, r := range p.EnqueueCloses(cctx, orders[:1]) {
		if !errors.Is(r.Err, context.Canceled) {
			t.Errorf("cancelled, order %d: %v", i, r.Err)
		}
	}
	if n, err := srv.Client().DBSize(ctx).Result(); err != nil || n != 0 {
		t.Errorf("a cancelled batch wrote %d keys (%v)", n, err)
	}
}

// TestBatchTasksRun: asynq's server runs what EnqueueCloses writes.
func TestBatchTasksRun(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	p := tasks.NewProducerFromRedisClient(srv.Client(), tasks.ProducerConfig{MchID: "1900000109", Shards: 2})
	var orders []tasks.CloseOrder
	for i := range 50 {
		orders = append(orders, tasks.CloseOrder{OutTradeNo: fmt.Sprintf("RUN-%d", i), CreatedAt: time.Now().Add(-time.Hour)})
	}
	wantRun := map[string]bool{}
	for i, r := range p.EnqueueCloses(ctx, orders) {
		if r.Err != nil || r.Scheduled.State != "pending" {
			t.Fatalf("order %d: %+v", i, r)
		}
		wantRun[r.Scheduled.TaskID] = true
	}

	var mu sync.Mutex
	ran := map[string]bool{}
	all := make(chan struct{})
	w := asynq.NewServerFromRedisClient(srv.Client(), asynq.Config{
		Concurrency:     4,
		Queues:          map[string]int{tasks.ShardQueue(0): 1, tasks.ShardQueue(1): 1},
		LogLevel:        asynq.FatalLevel,
		ShutdownTimeout: 5 * time.Second,
	})
	mux := asynq.NewServeMux()
	mux.HandleFunc(tasks.TypeClose, func(ctx context.Context, task *asynq.Task) error {
		id, _ := asynq.GetTaskID(ctx)
		if _, err := tasks.DecodeClosePayload(task.Payload()); err != nil {
			return err
		}
		if _, ok := tasks.DueFromHeaders(task.Headers()); !ok {
			return fmt.Errorf("%s has no due header: %v", id, task.Headers())
		}
		mu.Lock()
		defer mu.Unlock()
		ran[id] = true
		if len(ran) == len(wantRun) {
			close(all)
		}
		return nil
	})
	if err := w.Start(mux); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Shutdown)
	select {
	case <-all:
	case <-time.After(30 * time.Second): // bounds a broken run only
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("asynq ran %d of the %d tasks", len(ran), len(wantRun))
	}
	mu.Lock()
	defer mu.Unlock()
	if !maps.Equal(ran, wantRun) {
		t.Errorf("ran %v, want %v", slices.Sorted(maps.Keys(ran)), slices.Sorted(maps.Keys(wantRun)))
	}
}

// TestBatchOnCluster: on a Redis Cluster the pipeline splits by node; each
// shard's tasks land on the node of its hash slot, asynq's Inspector reads
// them there, and a script cache flushed on one node only is recovered
// from for exactly the orders sent to it.
func TestBatchOnCluster(t *testing.T) {
	c := redistest.StartCluster(t, redistest.ClusterOptions{Masters: 3})
	rdb, ok := c.ConnOpt().MakeRedisClient().(*redis.ClusterClient)
	if !ok {
		t.Fatalf("cluster client is %T", c.ConnOpt().MakeRedisClient())
	}
	t.Cleanup(func() { rdb.Close() })
	ctx := context.Background()
	const shards = 6
	p := tasks.NewProducerFromRedisClient(rdb, tasks.ProducerConfig{MchID: "1900000109", Shards: shards})
	insp := asynq.NewInspectorFromRedisClient(rdb)
	batch := func(prefix string) []tasks.CloseOrder {
		var orders []tasks.CloseOrder
		for i := range 60 {
			created := time.Now()
			if i%2 == 0 {
				created = created.Add(-time.Hour)
			}
			orders = append(orders, tasks.CloseOrder{OutTradeNo: fmt.Sprintf("%s-%d", prefix, i), CreatedAt: created})
		}
		return orders
	}
	check := func(name string, orders []tasks.CloseOrder, dup bool) {
		t.Helper()
		for i, r := range p.EnqueueCloses(ctx, orders) {
			s := r.Scheduled
			if r.Err != nil || s.Duplicate != dup || s.Queue != tasks.CloseQueue(s.TaskID, shards) {
				t.Fatalf("%s, order %d: %+v", name, i, r)
			}
			info, err := insp.GetTaskInfo(s.Queue, s.TaskID)
			if err != nil || info.State.String() != s.State {
				t.Fatalf("%s, order %d: Inspector reads %+v, %v; want state %s", name, i, info, err, s.State)
			}
		}
	}
	check("first batch", batch("A"), false)
	if qs, err := tasks.ExistingCloseQueues(insp); err != nil || len(qs) != shards {
		t.Errorf("ExistingCloseQueues = %v, %v; want all %d shards", qs, err, shards)
	}
	// The node of shard 0 forgets the scripts; the others keep them.
	node, err := rdb.MasterForKey(ctx, "asynq:{"+tasks.ShardQueue(0)+"}:pending")
	if err != nil {
		t.Fatal(err)
	}
	if err := node.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	check("after one node's SCRIPT FLUSH", batch("B"), false)
	check("again", batch("A"), true)
	for _, q := range tasks.CloseQueues(shards) {
		qi, err := insp.GetQueueInfo(q)
		if err != nil || qi.Size == 0 {
			t.Errorf("%s: %+v, %v", q, qi, err)
		}
	}
}
