package ops

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/wxclose/wxclose/internal/redistest"
	"github.com/wxclose/wxclose/tasks"
)

const testMchID = "1900000109"

// env is one test's private Redis with a Client on it.
type env struct {
	srv *redistest.Server
	c   *Client
	ins *asynq.Inspector
}

func newEnv(t testing.TB) *env {
	t.Helper()
	srv := redistest.Start(t)
	c := New(srv.Client(), tasks.ProducerConfig{MchID: testMchID})
	t.Cleanup(func() { c.Close() })
	return &env{srv: srv, c: c, ins: asynq.NewInspectorFromRedisClient(srv.Client())}
}

// info returns the close task id's info, or nil if it does not exist.
func (e *env) info(t testing.TB, id string) *asynq.TaskInfo {
	t.Helper()
	info, err := e.ins.GetTaskInfo(tasks.QueueClose, id)
	if errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound) {
		return nil
	}
	if err != nil {
		t.Fatalf("GetTaskInfo(%s): %v", id, err)
	}
	return info
}

// waitState polls until the task reaches state; a real asynq server moves
// it, so there is no fixed time to wait for.
func (e *env) waitState(t testing.TB, id string, state asynq.TaskState) *asynq.TaskInfo {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		info := e.info(t, id)
		if info != nil && info.State == state {
			return info
		}
		if time.Now().After(deadline) {
			got := "missing"
			if info != nil {
				got = info.State.String()
			}
			t.Fatalf("task %s: want state %s, still %s", id, state, got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// behaviour is what the test worker does with one task.
type behaviour struct {
	// err fails the task with this message; empty succeeds.
	err string
	// failure, when err is set, is stored as the task's result first, as
	// the worker's handler stores the record of every failed attempt.
	failure *tasks.CloseFailure
	// result is written as the task result on success.
	result *tasks.CloseResult
	// block holds the task active until the channel is closed.
	block chan struct{}
	// ran, if not nil, receives the retry count of each attempt.
	ran chan int
}

// worker is a real asynq server on the close_order queue whose handler does
// what the test set up per task id. Failures retry at once, so a task with
// MaxRetry n is archived after n+1 quick attempts.
type worker struct {
	mu  sync.Mutex
	by  map[string]behaviour
	srv *asynq.Server
}

func (e *env) startWorker(t testing.TB) *worker {
	t.Helper()
	return e.startWorkerWith(t, map[string]behaviour{})
}

// startWorkerWith starts a worker that already knows the behaviours in by:
// a task that is runnable at once must not reach a worker that has not
// been told what to do with it (it would fail, and run again as a retry).
func (e *env) startWorkerWith(t testing.TB, by map[string]behaviour) *worker {
	t.Helper()
	w := &worker{by: by}
	w.srv = asynq.NewServerFromRedisClient(e.srv.Client(), asynq.Config{
		Concurrency:              4,
		Queues:                   map[string]int{tasks.QueueClose: 1},
		RetryDelayFunc:           func(int, error, *asynq.Task) time.Duration { return 0 },
		DelayedTaskCheckInterval: 50 * time.Millisecond,
		TaskCheckInterval:        20 * time.Millisecond,
		LogLevel:                 asynq.FatalLevel,
		ShutdownTimeout:          5 * time.Second,
	})
	if err := w.srv.Start(asynq.HandlerFunc(w.handle)); err != nil {
		t.Fatalf("start asynq server: %v", err)
	}
	t.Cleanup(w.srv.Shutdown)
	return w
}

func (w *worker) set(id string, b behaviour) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.by[id] = b
}

func (w *worker) handle(ctx context.Context, task *asynq.Task) error {
	id, _ := asynq.GetTaskID(ctx)
	w.mu.Lock()
	b, ok := w.by[id]
	w.mu.Unlock()
	if !ok {
		return errors.New("test worker: no behaviour for " + id)
	}
	if b.ran != nil {
		n, _ := asynq.GetRetryCount(ctx)
		b.ran <- n
	}
	if b.block != nil {
		select {
		case <-b.block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if b.err != "" {
		if b.failure != nil {
			f := *b.failure
			f.Attempt, _ = asynq.GetRetryCount(ctx)
			f.Attempt++
			data, _ := json.Marshal(f)
			if _, err := task.ResultWriter().Write(data); err != nil {
				return err
			}
		}
		return errors.New(b.err)
	}
	if b.result != nil {
		data, _ := json.Marshal(b.result)
		if _, err := task.ResultWriter().Write(data); err != nil {
			return err
		}
	}
	return nil
}

// archived puts a close task with this raw payload in the archive, having
// spent all maxRetry retries, each failing with errMsg and storing failure
// as its record. A nil failure stores none, as wxclose versions before
// failure records did.
func (e *env) archived(t testing.TB, w *worker, id string, payload []byte, maxRetry int, errMsg string, failure *tasks.CloseFailure) *asynq.TaskInfo {
	t.Helper()
	w.set(id, behaviour{err: errMsg, failure: failure})
	cl := asynq.NewClientFromRedisClient(e.srv.Client())
	if _, err := cl.Enqueue(asynq.NewTask(tasks.TypeClose, payload),
		asynq.Queue(tasks.QueueClose), asynq.TaskID(id), asynq.MaxRetry(maxRetry)); err != nil {
		t.Fatalf("enqueue %s: %v", id, err)
	}
	return e.waitState(t, id, asynq.TaskStateArchived)
}

// order returns a valid close payload and its task id.
func order(no string, createdAt time.Time) (tasks.ClosePayload, string) {
	p := tasks.ClosePayload{OutTradeNo: no, MchID: testMchID, CreatedAt: createdAt.UTC().Truncate(time.Second)}
	return p, tasks.CloseTaskID(p.Ref())
}

// errText is the asynq error text of test failures that store a record: it
// names no code, so anything selecting by code must read the record.
const errText = "attempt failed (details in the failure record)"

// failSystem and failAuth are the records of an exhausted transient failure
// and of a permanent refusal.
func failSystem() *tasks.CloseFailure {
	return &tasks.CloseFailure{Outcome: tasks.OutcomeExhausted, Code: "SYSTEM_ERROR", Class: tasks.ClassRetryable,
		Message: "system busy", HTTPStatus: 500, RequestID: "r1", At: time.Now().UTC()}
}

func failAuth() *tasks.CloseFailure {
	return &tasks.CloseFailure{Outcome: tasks.OutcomePermanent, Code: "NO_AUTH", Class: tasks.ClassPermanent,
		Message: "no permission", HTTPStatus: 403, RequestID: "r2", At: time.Now().UTC()}
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
