package wechat_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxclose/wxclose/wechat"
	"github.com/wxclose/wxclose/wechat/sandbox"
)

// hookRecorder records what Config.Hooks report.
type hookRecorder struct {
	mu     sync.Mutex
	errs   []error
	clocks []clockObs
}

type clockObs struct{ sent, received, server time.Time }

func (h *hookRecorder) refreshFailed(err error) {
	h.mu.Lock()
	h.errs = append(h.errs, err)
	h.mu.Unlock()
}

func (h *hookRecorder) serverClock(sent, received, server time.Time) {
	h.mu.Lock()
	h.clocks = append(h.clocks, clockObs{sent, received, server})
	h.mu.Unlock()
}

func (h *hookRecorder) failures() []error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]error(nil), h.errs...)
}

func (h *hookRecorder) observations() []clockObs {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]clockObs(nil), h.clocks...)
}

// finalScenarios are the four answers that end a close, each from an order
// in the sandbox's book (nil: unknown order).
var finalScenarios = []struct {
	name  string
	state *sandbox.State
	want  expect
}{
	{"closed", ptr(sandbox.StateUnpaid), expect{result: wechat.ResultClosed, state: sandbox.StateClosed, confirmed: true, tradeState: "CLOSED"}},
	{"already closed", ptr(sandbox.StateClosed), expect{result: wechat.ResultAlreadyClosed, state: sandbox.StateClosed, confirmed: true, tradeState: "CLOSED"}},
	{"paid", ptr(sandbox.StatePaid), expect{result: wechat.ResultPaid, state: sandbox.StatePaid, confirmed: true, tradeState: "SUCCESS"}},
	{"not found", nil, expect{result: wechat.ResultNotFound, confirmed: true}},
}

func ptr[T any](v T) *T { return &v }

const (
	testTxID   = "4200000000002104083200000488"
	testSubMch = "20000100"
)

// With every final close answer unsigned, each scenario still ends in the
// right result, through a signed Query Order answer: v3, both URL families,
// common and institutional mode, by out_trade_no and by transaction_id.
func TestUnsignedFinalAnswersV3ConfirmedByQuery(t *testing.T) {
	for _, style := range []wechat.PathStyle{wechat.PathGlobal, wechat.PathHK} {
		for _, inst := range []bool{false, true} {
			for _, byTx := range []bool{false, true} {
				for _, sc := range finalScenarios {
					name := fmt.Sprintf("%s/institutional=%v/by_transaction_id=%v/%s", style, inst, byTx, sc.name)
					t.Run(name, func(t *testing.T) {
						e := newSandbox(t, sandbox.Options{UnsignedFinalAnswers: true})
						req := wechat.CloseRequest{OutTradeNo: "T1"}
						if byTx {
							req = wechat.CloseRequest{TransactionID: testTxID}
						}
						o := sandbox.Order{OutTradeNo: "T1", TransactionID: testTxID}
						if inst {
							req.SubMchID, o.SubMchID = testSubMch, testSubMch
						}
						if sc.state != nil {
							o.State = *sc.state
							e.addOrder(o)
						}
						cfg := e.v3Config(t, trustCert)
						cfg.PathStyle = style
						c, err := wechat.New(cfg)
						if err != nil {
							t.Fatal(err)
						}
						out, err := c.Close(context.Background(), req)
						want := sc.want
						if sc.state == nil {
							want.code = "ORDER_NOT_EXIST"
						}
						checkClose(t, out, err, want)
						if sc.state != nil {
							if out.TransactionID != testTxID {
								t.Errorf("TransactionID %q, want %q from the query", out.TransactionID, testTxID)
							}
							if got, _ := e.sb.Order("T1"); got.State != want.state {
								t.Errorf("sandbox order %v, want %v", got.State, want.state)
							}
						}
						calls := e.sb.Calls()
						if len(calls) != 2 || calls[0].API != "v3" || !calls[0].Unsigned || calls[1].API != "v3_query" {
							t.Fatalf("calls %+v, want an unsigned close, then one query", calls)
						}
						prefix := "/v3/global/transactions"
						if style == wechat.PathHK {
							prefix = "/hk/v3/transactions"
						}
						wantPath := prefix + "/out-trade-no/T1"
						if byTx {
							wantPath = prefix + "/id/" + testTxID
						}
						q := calls[1]
						if q.Path != wantPath || q.MchID != e.creds.MchID || q.SubMchID != req.SubMchID || q.Outcome == "auth_failed" || q.Outcome == "bad_request" {
							t.Errorf("query call %+v, want %s for merchant %s/%q", q, wantPath, e.creds.MchID, req.SubMchID)
						}
					})
				}
			}
		}
	}
}

func TestUnsignedFinalAnswersV2ConfirmedByQuery(t *testing.T) {
	for _, st := range []wechat.SignType{wechat.SignMD5, wechat.SignHMACSHA256} {
		for _, inst := range []bool{false, true} {
			for _, sc := range finalScenarios {
				t.Run(fmt.Sprintf("%s/institutional=%v/%s", st, inst, sc.name), func(t *testing.T) {
					e := newSandbox(t, sandbox.Options{UnsignedFinalAnswers: true})
					req := wechat.CloseRequest{OutTradeNo: "T1"}
					o := sandbox.Order{OutTradeNo: "T1", TransactionID: testTxID}
					if inst {
						req.SubMchID, o.SubMchID = testSubMch, testSubMch
					}
					if sc.state != nil {
						o.State = *sc.state
						e.addOrder(o)
					}
					c, err := wechat.New(e.v2Config(st))
					if err != nil {
						t.Fatal(err)
					}
					out, err := c.Close(context.Background(), req)
					want := sc.want
					if sc.state == nil {
						want.code = "ORDERNOTEXIST"
					}
					checkClose(t, out, err, want)
					if sc.state != nil && out.TransactionID != testTxID {
						t.Errorf("TransactionID %q, want %q from the query", out.TransactionID, testTxID)
					}
					calls := e.sb.Calls()
					if len(calls) != 2 || calls[0].API != "v2" || !calls[0].Unsigned || calls[1].API != "v2_query" ||
						calls[1].SubMchID != req.SubMchID || calls[1].Outcome == "auth_failed" || calls[1].Outcome == "bad_request" {
						t.Fatalf("calls %+v, want an unsigned close, then one query", calls)
					}
				})
			}
		}
	}
}

// A forged or unsigned Query Order answer is never trusted: the close stays
// a retryable untrusted response, whatever the close answer claimed.
func TestForgedQueryAnswerIsNeverTrusted(t *testing.T) {
	for _, api := range []wechat.APIVersion{wechat.APIv3, wechat.APIv2} {
		for _, fault := range []sandbox.Step{sandbox.BadSignature(), sandbox.MissingSignature()} {
			for _, sc := range finalScenarios {
				t.Run(fmt.Sprintf("%s/%s/%s", api, fault.Signature, sc.name), func(t *testing.T) {
					e := newSandbox(t, sandbox.Options{UnsignedFinalAnswers: true})
					if sc.state != nil {
						e.addOrder(sandbox.Order{OutTradeNo: "T1", State: *sc.state})
					}
					e.sb.ScriptQuery("T1", fault)
					cfg := e.v3Config(t, trustCert)
					if api == wechat.APIv2 {
						cfg = e.v2Config(wechat.SignHMACSHA256)
					}
					c, err := wechat.New(cfg)
					if err != nil {
						t.Fatal(err)
					}
					out, err := c.Close(context.Background(), wechat.CloseRequest{OutTradeNo: "T1"})
					checkClose(t, out, err, expect{class: wechat.ClassRetryable, sentinel: wechat.ErrUntrustedResponse})
					if errors.Is(err, wechat.ErrOrderOpen) {
						t.Errorf("%v claims the order is open", err)
					}
					if n := len(e.sb.Calls()); n != 2 {
						t.Errorf("%d calls, want a close and a query", n)
					}
				})
			}
		}
	}
}

// An unsigned ORDERCLOSED for an order that is in fact still open: the
// signed query says NOTPAY, and the close must run again (retryable, the
// trade state as code). The next attempt closes it.
func TestUnsignedOrderClosedButQuerySaysNotPaid(t *testing.T) {
	for _, api := range []wechat.APIVersion{wechat.APIv3, wechat.APIv2} {
		t.Run(string(api), func(t *testing.T) {
			e := newSandbox(t, sandbox.Options{UnsignedFinalAnswers: true})
			e.addOrder(sandbox.Order{OutTradeNo: "T1"})
			e.sb.Script("T1", sandbox.Fail(400, "ORDERCLOSED", "order closed (forged)"))
			cfg := e.v3Config(t, trustCert)
			if api == wechat.APIv2 {
				cfg = e.v2Config(wechat.SignMD5)
			}
			c, err := wechat.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Close(context.Background(), wechat.CloseRequest{OutTradeNo: "T1"})
			checkClose(t, wechat.Outcome{}, err, expect{class: wechat.ClassRetryable, code: "NOTPAY", sentinel: wechat.ErrOrderOpen})
			if !errors.Is(err, wechat.ErrUntrustedResponse) {
				t.Errorf("%v does not wrap ErrUntrustedResponse", err)
			}
			if msg := err.Error(); !strings.Contains(msg, "not signed") || !strings.Contains(msg, "still open") {
				t.Errorf("message %q does not say the answer was unsigned and the order still open", msg)
			}
			if o, _ := e.sb.Order("T1"); o.State != sandbox.StateUnpaid {
				t.Fatalf("order %v, want still unpaid", o.State)
			}
			out, err := c.Close(context.Background(), wechat.CloseRequest{OutTradeNo: "T1"})
			checkClose(t, out, err, expect{result: wechat.ResultClosed, confirmed: true, tradeState: "CLOSED"})
		})
	}
}

// A genuine, signed query answer about another order (a replay) settles
// nothing.
func TestQueryAnswerAboutAnotherOrderIsNotTrusted(t *testing.T) {
	answer := func(mchid, no string) string {
		return `{"mchid":"` + mchid + `","appid":"wx8888888888888888","out_trade_no":"` + no + `","transaction_id":"` + testTxID + `","trade_state":"CLOSED","trade_state_desc":"closed"}`
	}
	tests := []struct {
		name  string
		reply stubReply
		ok    bool
	}{
		{"same order", stubReply{status: 200, body: answer("1900000109", "T1001")}, true},
		{"other order", stubReply{status: 200, body: answer("1900000109", "T1002")}, false},
		{"other merchant", stubReply{status: 200, body: answer("1900000999", "T1001")}, false},
		{"no order number", stubReply{status: 200, body: `{"mchid":"1900000109","trade_state":"CLOSED"}`}, false},
		{"no trade_state", stubReply{status: 200, body: `{"mchid":"1900000109","out_trade_no":"T1001"}`}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStubV3(t, stubReply{status: 204, sig: sigMissing}, tt.reply)
			c, err := wechat.New(v3Config(t, s.srv.URL))
			if err != nil {
				t.Fatal(err)
			}
			out, err := c.Close(context.Background(), wechat.CloseRequest{OutTradeNo: "T1001"})
			if tt.ok {
				if err != nil || out.Result != wechat.ResultClosed || !out.ConfirmedByQuery || out.TransactionID != testTxID {
					t.Fatalf("Close = %+v, %v; want closed, confirmed", out, err)
				}
			} else {
				checkClose(t, out, err, expect{class: wechat.ClassRetryable, sentinel: wechat.ErrUntrustedResponse})
			}
			reqs := s.requests()
			if len(reqs) != 2 || reqs[1].method != "GET" || reqs[1].uri != "/v3/global/transactions/out-trade-no/T1001?mchid=1900000109" || !reqs[1].authValid {
				t.Errorf("query request %+v", reqs[len(reqs)-1])
			}
		})
	}
}

// Query on its own: every state, both generations, and its wire format.
func TestQuery(t *testing.T) {
	states := []struct {
		state *sandbox.State
		want  string // trade_state; "" for not found
	}{
		{ptr(sandbox.StateUnpaid), "NOTPAY"}, {ptr(sandbox.StatePaid), "SUCCESS"}, {ptr(sandbox.StateClosed), "CLOSED"}, {nil, ""},
	}
	type variant struct {
		name  string
		api   wechat.APIVersion
		style wechat.PathStyle
		req   wechat.CloseRequest
	}
	var variants []variant
	for _, style := range []wechat.PathStyle{wechat.PathGlobal, wechat.PathHK} {
		variants = append(variants,
			variant{"v3 " + string(style), wechat.APIv3, style, wechat.CloseRequest{OutTradeNo: "T1"}},
			variant{"v3 " + string(style) + " by id", wechat.APIv3, style, wechat.CloseRequest{TransactionID: testTxID}},
			variant{"v3 " + string(style) + " institutional", wechat.APIv3, style, wechat.CloseRequest{OutTradeNo: "T1", SubMchID: testSubMch}},
		)
	}
	variants = append(variants,
		variant{"v2", wechat.APIv2, "", wechat.CloseRequest{OutTradeNo: "T1"}},
		variant{"v2 by id", wechat.APIv2, "", wechat.CloseRequest{TransactionID: testTxID}},
		variant{"v2 institutional", wechat.APIv2, "", wechat.CloseRequest{OutTradeNo: "T1", SubMchID: testSubMch}},
	)
	for _, v := range variants {
		for _, st := range states {
			t.Run(v.name+"/"+st.want, func(t *testing.T) {
				e := newSandbox(t, sandbox.Options{UnsignedFinalAnswers: true}) // queries stay signed
				if st.state != nil {
					e.addOrder(sandbox.Order{OutTradeNo: "T1", TransactionID: testTxID, SubMchID: v.req.SubMchID, State: *st.state})
				}
				cfg := e.v3Config(t, trustCert)
				cfg.PathStyle = v.style
				if v.api == wechat.APIv2 {
					cfg = e.v2Config(wechat.SignHMACSHA256)
				}
				c, err := wechat.New(cfg)
				if err != nil {
					t.Fatal(err)
				}
				q, ok := c.(wechat.Querier)
				if !ok {
					t.Fatalf("%T does not implement Querier", c)
				}
				res, err := q.Query(context.Background(), v.req)
				if err != nil {
					t.Fatalf("Query: %v", err)
				}
				if st.state == nil {
					if !res.NotFound || res.TradeState != "" || res.Code == "" {
						t.Errorf("result %+v, want not found", res)
					}
				} else if res.NotFound || res.TradeState != st.want || res.TransactionID != testTxID || res.OutTradeNo != "T1" || res.HTTPStatus != 200 {
					t.Errorf("result %+v, want %s", res, st.want)
				}
				if o, _ := e.sb.Order("T1"); st.state != nil && o.State != *st.state {
					t.Errorf("Query changed the order to %v", o.State)
				}
				calls := e.sb.Calls()
				if len(calls) != 1 || !strings.HasSuffix(calls[0].API, "_query") || calls[0].Outcome == "auth_failed" || calls[0].Outcome == "bad_request" {
					t.Errorf("calls %+v", calls)
				}
			})
		}
	}
}

func TestQueryForgedOrFailing(t *testing.T) {
	for _, api := range []wechat.APIVersion{wechat.APIv3, wechat.APIv2} {
		for _, tc := range []struct {
			step sandbox.Step
			want expect
		}{
			{sandbox.BadSignature(), expect{class: wechat.ClassRetryable, sentinel: wechat.ErrUntrustedResponse}},
			{sandbox.MissingSignature(), expect{class: wechat.ClassRetryable, sentinel: wechat.ErrUntrustedResponse}},
			{sandbox.SystemError(), expect{class: wechat.ClassRetryable}},
			{sandbox.MalformedBody(), expect{class: wechat.ClassRetryable, sentinel: wechat.ErrMalformedResponse}},
			{sandbox.ServerError(502), expect{class: wechat.ClassRetryable}},
		} {
			t.Run(fmt.Sprintf("%s/%+v", api, tc.step), func(t *testing.T) {
				e := newSandbox(t, sandbox.Options{})
				e.addOrder(sandbox.Order{OutTradeNo: "T1", State: sandbox.StateClosed})
				e.sb.ScriptQuery("T1", tc.step)
				cfg := e.v3Config(t, trustCert)
				if api == wechat.APIv2 {
					cfg = e.v2Config(wechat.SignMD5)
				}
				c, err := wechat.New(cfg)
				if err != nil {
					t.Fatal(err)
				}
				res, err := c.(wechat.Querier).Query(context.Background(), wechat.CloseRequest{OutTradeNo: "T1"})
				if err == nil {
					t.Fatalf("Query = %+v, want an error", res)
				}
				checkClose(t, wechat.Outcome{}, err, tc.want)
			})
		}
	}
}
