package worker_test

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/wxclose/wxclose/tasks"
	"github.com/wxclose/wxclose/wechat"
	"github.com/wxclose/wxclose/wechat/sandbox"
)

// TestScheduleLateness enqueues orders due over the next few seconds and
// reports how late each close reached WeChat Pay (sandbox receive time minus
// due time), for wxclose's check intervals and, in the same run, for asynq's
// defaults as the baseline. It asserts correctness only (every order closed,
// none early); the figures are for the reader. For a larger run:
//
//	WXCLOSE_LATENESS_ORDERS=2000 go test ./internal/worker -run TestScheduleLateness -v
func TestScheduleLateness(t *testing.T) {
	t.Parallel()
	n := 60
	if v, err := strconv.Atoi(os.Getenv("WXCLOSE_LATENESS_ORDERS")); err == nil && v > 0 {
		n = v
	}
	var tuned, baseline []time.Duration
	t.Run("group", func(t *testing.T) {
		t.Run("wxclose", func(t *testing.T) {
			t.Parallel()
			tuned = measureLateness(t, setupOptions{api: wechat.APIv3}, n)
		})
		t.Run("asynq defaults", func(t *testing.T) {
			t.Parallel()
			baseline = measureLateness(t, setupOptions{api: wechat.APIv3, asynqDefaults: true}, n)
		})
	})
	if t.Failed() {
		return
	}
	pct := func(l []time.Duration, p float64) time.Duration { return l[int(p*float64(len(l)-1))] }
	for _, r := range []struct {
		name string
		l    []time.Duration
	}{{"wxclose intervals (200 ms / 100 ms)", tuned}, {"asynq defaults (5 s / 1 s)", baseline}} {
		t.Logf("schedule lateness, %s, %d orders: p50 %s, p99 %s, max %s", r.name, n,
			pct(r.l, 0.50).Round(time.Millisecond), pct(r.l, 0.99).Round(time.Millisecond), r.l[len(r.l)-1].Round(time.Millisecond))
	}
	t.Logf("p99 ratio wxclose/asynq defaults: %.2f", pct(tuned, 0.99).Seconds()/pct(baseline, 0.99).Seconds())
}

func measureLateness(t *testing.T, o setupOptions, n int) []time.Duration {
	b := setup(t, o)
	due := make(map[string]time.Time, n)
	for i := range n {
		no := fmt.Sprintf("LATE-%d", i)
		// Spread creation times over 5 s so due times differ in their
		// fractional second, as real orders do.
		o := b.order(t, no, 2*time.Second+time.Duration(i)*5*time.Second/time.Duration(n), sandbox.StateUnpaid)
		due[no] = b.enqueue(t, o).DueAt
	}
	var lateness []time.Duration
	for no, d := range due {
		info := b.waitFinal(t, tasks.CloseTaskID(tasks.OrderRef{OutTradeNo: no, MchID: b.creds.MchID}))
		if closeResult(t, info).Outcome != tasks.OutcomeClosed {
			t.Fatalf("%s: %s", no, info.Result)
		}
		calls := b.sandbox.CallsFor(no)
		if len(calls) != 1 {
			t.Fatalf("%s: %d calls", no, len(calls))
		}
		l := calls[0].At.Sub(d)
		if l < 0 {
			t.Fatalf("%s reached WeChat Pay %s before its due time", no, -l)
		}
		lateness = append(lateness, l)
	}
	if early := b.sandbox.EarlyCalls(); early != 0 {
		t.Fatalf("%d early calls", early)
	}
	slices.Sort(lateness)
	return lateness
}
