package main

import (
	"bytes"
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/wxclose/wxclose/tasks"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestDevModeProcessesDemoOrders runs `worker -dev` as a user would and
// checks that every demo order reaches its expected outcome.
func TestDevModeProcessesDemoOrders(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncBuffer
	getenv := func(name string) string {
		if name == "WXCLOSE_HTTP_ADDR" {
			return "127.0.0.1:0"
		}
		return ""
	}
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"-dev"}, getenv, &stdout, &stderr) }()

	redisURL := regexp.MustCompile(`embedded Redis\s+(redis://\S+)`)
	var m []string
	for deadline := time.Now().Add(30 * time.Second); m == nil; {
		m = redisURL.FindStringSubmatch(stdout.String())
		if time.Now().After(deadline) {
			t.Fatalf("no banner after 30s\nstdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	opt, err := asynq.ParseRedisURI(m[1])
	if err != nil {
		t.Fatal(err)
	}
	insp := asynq.NewInspector(opt)
	defer insp.Close()

	want := map[string]struct {
		state   asynq.TaskState
		outcome string
	}{
		"DEMO-CLOSE-1":  {asynq.TaskStateCompleted, tasks.OutcomeClosed},
		"DEMO-CLOSED-2": {asynq.TaskStateCompleted, tasks.OutcomeAlreadyClosed},
		"DEMO-PAID-3":   {asynq.TaskStateCompleted, tasks.OutcomePaid},
		"DEMO-FLAKY-4":  {asynq.TaskStateCompleted, tasks.OutcomeClosed},
		"DEMO-NOAUTH-5": {asynq.TaskStateArchived, ""},
	}
	mchid := regexp.MustCompile(`merchant (\d+)`).FindStringSubmatch(stdout.String())[1]
	deadline := time.Now().Add(60 * time.Second)
	for no, w := range want {
		id := tasks.CloseTaskID(tasks.OrderRef{OutTradeNo: no, MchID: mchid})
		for {
			info, err := insp.GetTaskInfo(tasks.QueueClose, id)
			if err == nil && info.State == w.state {
				if w.outcome != "" {
					var r tasks.CloseResult
					if err := json.Unmarshal(info.Result, &r); err != nil || r.Outcome != w.outcome {
						t.Errorf("%s: result %s, want outcome %s", no, info.Result, w.outcome)
					}
				} else if !strings.Contains(info.LastErr, "NO_AUTH") {
					t.Errorf("%s: archived with %q, want the NO_AUTH reason", no, info.LastErr)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s did not reach %s within a minute: %+v %v\nstderr:\n%s", no, w.state, info, err, stderr.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	rec, err := insp.ListPendingTasks(tasks.QueueReconcile)
	if err != nil || len(rec) != 1 {
		t.Fatalf("reconciliation queue: %d tasks, %v; want the paid demo order", len(rec), err)
	}

	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("run returned %d\nstderr:\n%s", code, stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("worker did not shut down")
	}
}

func TestBadConfigurationNamesTheVariable(t *testing.T) {
	var stdout, stderr syncBuffer
	env := map[string]string{"WXCLOSE_CONCURRENCY": "lots", "WECHATPAY_API_KEY": "super-secret-key-value-000000000"}
	code := run(context.Background(), nil, func(k string) string { return env[k] }, &stdout, &stderr)
	if code != 2 {
		t.Fatalf("exit code %d, want 2", code)
	}
	for _, want := range []string{"WXCLOSE_CONCURRENCY", "WECHATPAY_MCHID", "WECHATPAY_MCH_PRIVATE_KEY_FILE"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("error output does not name %s:\n%s", want, stderr.String())
		}
	}
	if strings.Contains(stderr.String(), env["WECHATPAY_API_KEY"]) {
		t.Error("error output contains the API key")
	}
}
