package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/wxclose/wxclose/internal/redistest"
	"github.com/wxclose/wxclose/tasks"
)

// TestShardedCommands: with WXCLOSE_SHARDS=4 every command treats the four
// close queues as one: enqueue spreads orders over them, status and cancel
// find an order by its id, list merges them, and replay brings archived
// closes back in whichever shard they are.
func TestShardedCommands(t *testing.T) {
	srv := redistest.Start(t)
	t.Setenv("REDIS_URL", srv.URL)
	t.Setenv("WECHATPAY_MCHID", "1900000109")
	t.Setenv("WXCLOSE_SHARDS", "4")
	created := time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
	var lines strings.Builder
	for i := range 12 {
		fmt.Fprintf(&lines, `{"out_trade_no":"S-%d","created_at":"%s"}`+"\n", i, created)
	}
	if r := runCmd(lines.String(), "--file", "-", "--quiet"); r.code != exitOK || !strings.Contains(r.stderr, "12 enqueued") {
		t.Fatalf("bulk: %+v", r)
	}
	insp := asynq.NewInspectorFromRedisClient(srv.Client())
	queues, err := tasks.ExistingCloseQueues(insp)
	if err != nil || len(queues) != 4 || queues[0] != "close_order:0" {
		t.Fatalf("close queues = %v, %v; want the 4 shards", queues, err)
	}
	id := func(n int) string { return fmt.Sprintf("close:1900000109:out_trade_no:S-%d", n) }
	if r := runCmd("", "status", "--out-trade-no", "S-5"); r.code != exitOK || !strings.Contains(r.stdout, id(5)) {
		t.Fatalf("status: %+v", r)
	}
	r := runCmd("", "list", "--state", "scheduled", "--json")
	if r.code != exitOK || strings.Count(r.stdout, `"id": "close:`) != 12 {
		t.Fatalf("list merged %d tasks, want 12: %+v", strings.Count(r.stdout, `"id": "close:`), r)
	}
	for _, q := range queues {
		if !strings.Contains(r.stdout, `"queue": "`+q+`"`) {
			t.Errorf("list shows no task of %s", q)
		}
	}
	shard := tasks.CloseQueue(id(7), 4)
	r = runCmd("", "list", "--queue", shard, "--json")
	if r.code != exitOK || !strings.Contains(r.stdout, id(7)) {
		t.Fatalf("list of one shard: %+v", r)
	}
	for _, q := range queues {
		if q != shard && strings.Contains(r.stdout, `"queue": "`+q+`"`) {
			t.Errorf("list --queue %s shows tasks of %s", shard, q)
		}
	}
	if r := runCmd("", "cancel", "--out-trade-no", "S-7"); r.code != exitOK {
		t.Fatalf("cancel: %+v", r)
	}
	if r := runCmd("", "status", "--out-trade-no", "S-7"); r.code != exitNotFound {
		t.Fatalf("status after cancel: %+v", r)
	}

	// Archive two closes in different shards; replay finds both.
	archived := []int{}
	for i := range 12 {
		if i == 7 {
			continue
		}
		if len(archived) == 0 || tasks.CloseShard(id(i), 4) != tasks.CloseShard(id(archived[0]), 4) {
			archived = append(archived, i)
		}
		if len(archived) == 2 {
			break
		}
	}
	for _, n := range archived {
		if err := insp.ArchiveTask(tasks.CloseQueue(id(n), 4), id(n)); err != nil {
			t.Fatal(err)
		}
	}
	r = runCmd("", "replay", "--all")
	if r.code != exitOK || !strings.Contains(r.stderr, "2 archived scanned, 2 matched, 2 replayed") {
		t.Fatalf("replay: %+v", r)
	}
	for _, n := range archived {
		info, err := insp.GetTaskInfo(tasks.CloseQueue(id(n), 4), id(n))
		if err != nil || info.State != asynq.TaskStateScheduled {
			t.Fatalf("after replay %s: %+v, %v", id(n), info, err)
		}
	}
}

// TestShardFlagsAreChecked: a bad number of shards is a usage error naming
// the flag or the variable, before Redis is contacted.
func TestShardFlagsAreChecked(t *testing.T) {
	t.Setenv("REDIS_URL", "redis://127.0.0.1:1/0")
	for _, tc := range []struct {
		env  map[string]string
		args []string
		want string
	}{
		{nil, []string{"--out-trade-no", "X", "--shards", "0"}, "--shards must be a whole number from 1 to 1024"},
		{map[string]string{"WXCLOSE_SHARDS": "many"}, []string{"status", "--out-trade-no", "X"}, "WXCLOSE_SHARDS must be a whole number from 1 to 1024"},
		{map[string]string{"WXCLOSE_PREVIOUS_SHARDS": "2000"}, []string{"cancel", "--out-trade-no", "X"}, "WXCLOSE_PREVIOUS_SHARDS must be"},
		{nil, []string{"--out-trade-no", "X", "--wait-replicas", "-1"}, "--wait-replicas must be a whole number, 0 or more"},
		{map[string]string{"WXCLOSE_WAIT_TIMEOUT": "5s"}, []string{"--out-trade-no", "X"}, "WXCLOSE_WAIT_TIMEOUT must be a positive duration of at most 2s"},
	} {
		for k, v := range tc.env {
			t.Setenv(k, v)
		}
		r := runCmd("", tc.args...)
		if r.code != exitUsage || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v %v: %+v, want exit 2 saying %q", tc.env, tc.args, r, tc.want)
		}
		for k := range tc.env {
			t.Setenv(k, "")
		}
	}
}
