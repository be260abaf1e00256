package worker_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/wxclose/wxclose/tasks"
	"github.com/wxclose/wxclose/wechat"
	"github.com/wxclose/wxclose/wechat/sandbox"
)

// WeChat Pay may one day send a final answer (closed, already closed, paid,
// not found) without a signature. The worker must neither trust it nor retry
// it until the budget runs out: a signed Query Order settles it, on the first
// attempt, and the order ends in the state WeChat Pay signed.
func TestUnsignedFinalAnswersSettledByQuery(t *testing.T) {
	for _, api := range []wechat.APIVersion{wechat.APIv3, wechat.APIv2} {
		t.Run(string(api), func(t *testing.T) {
			t.Parallel()
			b := setup(t, setupOptions{api: api, maxRetry: 3})
			b.sandbox.SetUnsignedFinalAnswers(true)

			cases := []struct {
				no      string
				state   sandbox.State
				unknown bool
				want    string
				trade   string
			}{
				{no: "UNSIGNED-OPEN", state: sandbox.StateUnpaid, want: tasks.OutcomeClosed, trade: wechat.TradeStateClosed},
				{no: "UNSIGNED-CLOSED", state: sandbox.StateClosed, want: tasks.OutcomeAlreadyClosed, trade: wechat.TradeStateClosed},
				{no: "UNSIGNED-PAID", state: sandbox.StatePaid, want: tasks.OutcomePaid, trade: wechat.TradeStateSuccess},
				{no: "UNSIGNED-NONE", unknown: true, want: tasks.OutcomeNotFound},
			}
			ids := make([]string, len(cases))
			for i, c := range cases {
				o := tasks.CloseOrder{OutTradeNo: c.no, CreatedAt: time.Now().Add(-tasks.MinCloseAge + time.Second)}
				if !c.unknown {
					// WeChat Pay's own order number, which only a signed
					// answer can tell the reconciler.
					b.sandbox.AddOrder(sandbox.Order{OutTradeNo: c.no, TransactionID: "42000" + fmt.Sprint(i), CreatedAt: o.CreatedAt, State: c.state})
				}
				ids[i] = b.enqueue(t, o).TaskID
			}
			for i, c := range cases {
				info := b.waitFinal(t, ids[i])
				if info.State != asynq.TaskStateCompleted {
					t.Fatalf("%s: state %s (last error %q), want completed", c.no, info.State, info.LastErr)
				}
				if info.Retried != 0 {
					t.Errorf("%s: %d retries spent, want 0", c.no, info.Retried)
				}
				r := closeResult(t, info)
				if r.Outcome != c.want || !r.ConfirmedByQuery || r.TradeState != c.trade {
					t.Errorf("%s: result %+v, want outcome %s confirmed by query with trade_state %q", c.no, r, c.want, c.trade)
				}
				var closes, queries int
				for _, call := range b.sandbox.CallsFor(c.no) {
					switch call.API {
					case string(api):
						closes++
					case string(api) + "_query":
						queries++
					}
				}
				if closes != 1 || queries != 1 {
					t.Errorf("%s: %d close and %d query calls, want 1 and 1", c.no, closes, queries)
				}
			}

			rid := tasks.ReconcileTaskID(tasks.OrderRef{OutTradeNo: "UNSIGNED-PAID", MchID: b.creds.MchID})
			ti, err := b.inspector.GetTaskInfo(tasks.QueueReconcile, rid)
			if err != nil {
				t.Fatalf("reconciliation task %s: %v", rid, err)
			}
			rp, err := tasks.DecodeReconcilePayload(ti.Payload)
			if err != nil || rp.TradeState != wechat.TradeStateSuccess || rp.TransactionID != "420002" {
				t.Fatalf("reconcile payload %s: %+v %v; want trade_state SUCCESS and WeChat's transaction_id", ti.Payload, rp, err)
			}

			series := fmt.Sprintf(`wxclose_close_confirmations_total{outcome=%q}`, tasks.OutcomePaid)
			if got, ok := metricValue(scrapeMetrics(t, b), series); !ok || got != 1 {
				t.Errorf("%s = %v (present %v), want 1", series, got, ok)
			}
		})
	}
}

// A forged (badly signed) Query Order answer is never trusted: the close
// stays open and retries, and the order is not marked done.
func TestForgedQueryAnswerNeverEndsAClose(t *testing.T) {
	b := setup(t, setupOptions{api: wechat.APIv3, maxRetry: 1})
	b.sandbox.SetUnsignedFinalAnswers(true)
	o := b.order(t, "FORGED-Q", time.Second, sandbox.StatePaid)
	b.sandbox.ScriptQuery("FORGED-Q", sandbox.Step{Signature: sandbox.SigBad}, sandbox.Step{Signature: sandbox.SigBad})
	s := b.enqueue(t, o)
	info := b.waitFinal(t, s.TaskID)
	if info.State != asynq.TaskStateArchived {
		t.Fatalf("state %s result %s: a close settled by a forged query answer", info.State, info.Result)
	}
	if _, err := b.inspector.GetTaskInfo(tasks.QueueReconcile, tasks.ReconcileTaskID(tasks.OrderRef{OutTradeNo: "FORGED-Q", MchID: b.creds.MchID})); err == nil {
		t.Fatal("a forged query answer handed the order to reconciliation")
	}
}
