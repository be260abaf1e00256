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
// due time). It asserts correctness only (every order closed, none early);
// the figures are for the reader. For a larger run:
//
//	WXCLOSE_LATENESS_ORDERS=2000 go test ./internal/worker -run TestScheduleLateness -v
func TestScheduleLateness(t *testing.T) {
	t.Parallel()
	n := 60
	if v, err := strconv.Atoi(os.Getenv("WXCLOSE_LATENESS_ORDERS")); err == nil && v > 0 {
		n = v
	}
	b := setup(t, setupOptions{api: wechat.APIv3})
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
	pct := func(p float64) time.Duration { return lateness[int(p*float64(len(lateness)-1))] }
	t.Logf("schedule lateness over %d orders: p50 %s, p99 %s, max %s",
		n, pct(0.50).Round(time.Millisecond), pct(0.99).Round(time.Millisecond), lateness[len(lateness)-1].Round(time.Millisecond))
}
