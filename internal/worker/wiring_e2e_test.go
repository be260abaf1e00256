package worker_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/wxclose/wxclose/tasks"
	"github.com/wxclose/wxclose/wechat"
	"github.com/wxclose/wxclose/wechat/sandbox"
)

// scrapeMetrics returns the worker's /metrics exposition.
func scrapeMetrics(t *testing.T, b *bundle) string {
	t.Helper()
	resp, err := http.Get("http://" + b.worker.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v", resp.StatusCode, err)
	}
	return string(body)
}

// TestUnknownTaskTypesAreArchivedAtOnce is the worker part of issue 7
// defect 5: a task of another type on the close queue used to get asynq's
// "handler not found", an ordinary error retried until its budget was
// spent. It is archived on its first run, with a reason naming its type; a
// type that merely starts with order:close (asynq's ServeMux matches
// prefixes) is not taken for a close.
func TestUnknownTaskTypesAreArchivedAtOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{api: wechat.APIv3})
	client := asynq.NewClientFromRedisClient(b.rdb)
	foreign := map[string]string{"foreign-refund": "order:refund", "foreign-prefix": tasks.TypeClose + "_v2"}
	for id, typ := range foreign {
		_, err := client.Enqueue(asynq.NewTask(typ, []byte(`{"out_trade_no":"F-1","created_at":"2020-01-01T00:00:00Z"}`)),
			asynq.Queue(tasks.QueueClose), asynq.TaskID(id), asynq.MaxRetry(20))
		if err != nil {
			t.Fatal(err)
		}
	}
	// A real close on the same worker still goes through.
	s := b.enqueue(t, b.order(t, "UNKNOWN-TYPES-1", -time.Minute, sandbox.StateUnpaid))

	for id, typ := range foreign {
		info := b.waitFinal(t, id)
		if info.State != asynq.TaskStateArchived || info.Retried != 0 {
			t.Errorf("%s (%s): state %v after %d retries, want archived on the first run", id, typ, info.State, info.Retried)
		}
		if !strings.Contains(info.LastErr, `task type "`+typ+`" is not handled`) {
			t.Errorf("%s: archived with %q, want a reason naming type %s", id, info.LastErr, typ)
		}
	}
	if info := b.waitFinal(t, s.TaskID); info.State != asynq.TaskStateCompleted {
		t.Errorf("the close next to them ended %v: %s", info.State, info.LastErr)
	}
	if n := len(b.sandbox.CallsFor("F-1")); n != 0 {
		t.Errorf("WeChat Pay was called %d times for the foreign tasks", n)
	}
	if v, _ := metricValue(scrapeMetrics(t, b), `wxclose_close_outcomes_total{outcome="invalid_payload",wechat_code=""}`); v != 2 {
		t.Errorf("invalid_payload outcomes = %v, want 2", v)
	}
	if !strings.Contains(b.logs.String(), "does not handle") {
		t.Errorf("no log line for the archived foreign tasks:\n%s", b.logs.String())
	}
}

// TestClockOffsetMeasuredAndGuarded runs WeChat Pay (the sandbox) with a
// clock 3 s behind the worker's (issue 7 defect 11a). The first close
// teaches the worker the offset from the signed response timestamps; it is
// exported as wxclose_clock_offset_seconds{peer="wechatpay"}, the Redis
// probe exports peer="redis", and an order due right at the 5-minute mark
// by the worker's clock (2 s early by WeChat Pay's, with the default 1 s
// margin) is not sent early: the guard adds the measured offset.
func TestClockOffsetMeasuredAndGuarded(t *testing.T) {
	t.Parallel()
	const skew = 3 * time.Second
	b := setup(t, setupOptions{api: wechat.APIv3, sandboxNow: func() time.Time { return time.Now().Add(-skew) }})

	warm := b.enqueue(t, b.order(t, "SKEW-WARM-1", -5*time.Minute, sandbox.StateUnpaid))
	if info := b.waitFinal(t, warm.TaskID); info.State != asynq.TaskStateCompleted {
		t.Fatalf("warm-up close ended %v: %s", info.State, info.LastErr)
	}
	// Each truthful sample bounds the offset from above: the guard's value
	// cannot be below the true 3 s.
	if ahead := b.worker.ClockAhead(); ahead < skew {
		t.Fatalf("ClockAhead = %v after a close, want at least %v", ahead, skew)
	}

	var exposition string
	for deadline := time.Now().Add(30 * time.Second); ; {
		exposition = scrapeMetrics(t, b)
		if _, ok := metricValue(exposition, `wxclose_clock_offset_seconds{peer="redis"}`); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no Redis clock offset exported:\n%s", grep(exposition, "clock"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	// One sample is off by at most half its round trip plus half a second.
	if v, ok := metricValue(exposition, `wxclose_clock_offset_seconds{peer="wechatpay"}`); !ok || v < 2 || v > 4 {
		t.Errorf("wechatpay offset = %v (present %t), want about 3", v, ok)
	}
	if v, _ := metricValue(exposition, `wxclose_clock_offset_seconds{peer="redis"}`); v < -1 || v > 1 {
		t.Errorf("redis offset = %v, want about 0 (same machine)", v)
	}

	edge := b.enqueue(t, b.order(t, "SKEW-EDGE-2", 2*time.Second, sandbox.StateUnpaid))
	info := b.waitFinal(t, edge.TaskID)
	if info.State != asynq.TaskStateCompleted || closeResult(t, info).Outcome != tasks.OutcomeClosed {
		t.Errorf("edge close ended %v %s: %s", info.State, info.Result, info.LastErr)
	}
	if n := b.sandbox.EarlyCalls(); n != 0 {
		t.Errorf("WeChat Pay saw %d early close calls, want 0\nlogs:\n%s", n, b.logs.String())
	}
}

func grep(body, substr string) string {
	var b strings.Builder
	for line := range strings.Lines(body) {
		if strings.Contains(line, substr) {
			b.WriteString(line)
		}
	}
	return b.String()
}
