package httpapi

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/wxclose/wxclose/tasks"
)

func withShards(n int) envOption {
	return func(o *Options, _ *env) { o.Producer.Shards = n }
}

// TestShardedCloses: with WXCLOSE_SHARDS = 4 a close is stored in its
// order's shard, and GET and DELETE find it there by task id alone.
func TestShardedCloses(t *testing.T) {
	e := newEnv(t, withShards(4))
	created := time.Now().Add(-time.Minute).Truncate(time.Second)
	a := e.do(req{method: "POST", path: "/v1/closes", body: jsonBody(t, order("SHARDED-1", created))})
	if a.status != http.StatusCreated {
		t.Fatalf("POST: %d %s", a.status, a.body)
	}
	var s scheduled
	a.decode(t, &s)
	queue := tasks.CloseQueue(s.TaskID, 4)
	insp := asynq.NewInspectorFromRedisClient(e.redis.Client())
	if _, err := insp.GetTaskInfo(queue, s.TaskID); err != nil {
		t.Fatalf("task not in its shard %s: %v", queue, err)
	}
	dup := e.do(req{method: "POST", path: "/v1/closes", body: jsonBody(t, order("SHARDED-1", created))})
	var d scheduled
	dup.decode(t, &d)
	if dup.status != http.StatusOK || !d.Duplicate || d.State != "scheduled" {
		t.Fatalf("second POST: %d %s", dup.status, dup.body)
	}
	get := e.do(req{method: "GET", path: taskURL(s.TaskID)})
	var st closeStatus
	get.decode(t, &st)
	if get.status != http.StatusOK || st.TaskID != s.TaskID || st.State != "scheduled" {
		t.Fatalf("GET: %d %s", get.status, get.body)
	}
	if del := e.do(req{method: "DELETE", path: taskURL(s.TaskID)}); del.status != http.StatusNoContent {
		t.Fatalf("DELETE: %d %s", del.status, del.body)
	}
	wantProblem(t, e.do(req{method: "GET", path: taskURL(s.TaskID)}), http.StatusNotFound, CodeNoClose, "")
}

// TestShardedFindsOtherLayouts: a close enqueued before the number of
// shards changed (here: under one queue) is still found and cancelled by
// an API on the new layout, even without PreviousShards.
func TestShardedFindsOtherLayouts(t *testing.T) {
	e := newEnv(t, withShards(4))
	old := tasks.NewProducerFromRedisClient(e.redis.Client(), tasks.ProducerConfig{MchID: "1900000109"})
	s, err := old.EnqueueClose(context.Background(), tasks.CloseOrder{OutTradeNo: "BEFORE-1", CreatedAt: time.Now()})
	if err != nil || s.Queue != tasks.QueueClose {
		t.Fatalf("EnqueueClose = %+v, %v", s, err)
	}
	get := e.do(req{method: "GET", path: taskURL(s.TaskID)})
	if get.status != http.StatusOK {
		t.Fatalf("GET: %d %s", get.status, get.body)
	}
	if del := e.do(req{method: "DELETE", path: taskURL(s.TaskID)}); del.status != http.StatusNoContent {
		t.Fatalf("DELETE: %d %s", del.status, del.body)
	}
	wantProblem(t, e.do(req{method: "DELETE", path: taskURL(s.TaskID)}), http.StatusNotFound, CodeNoClose, "")
}
