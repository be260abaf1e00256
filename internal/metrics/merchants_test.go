package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/wxclose/wxclose/internal/closehandler"
	"github.com/wxclose/wxclose/tasks"
)

// TestMerchantMetrics: named merchants get their own series, unnamed ones
// share merchant="", and no merchant id ever becomes a label.
func TestMerchantMetrics(t *testing.T) {
	samples := []RateLimitSample{
		{Merchant: "brand-a", Configured: 200, Effective: 160},
		{Merchant: "", Configured: 100, Effective: 100},
		{Merchant: "", Configured: 50, Effective: 40},
	}
	m := New(Options{RateLimits: func() []RateLimitSample { return samples }})
	named := closehandler.Attempt{Order: tasks.OrderRef{OutTradeNo: "O-1", MchID: "1900000109"}, Merchant: "brand-a",
		Outcome: tasks.OutcomeClosed, RateWait: 200 * time.Millisecond}
	m.ObserveAttempt(named)
	m.ObserveAttempt(closehandler.Attempt{Order: tasks.OrderRef{OutTradeNo: "O-2", MchID: "1900000200"},
		Outcome: tasks.OutcomeRateLimited, Code: "RATE_LIMITED", RateDecreased: true})
	m.ObserveAttempt(closehandler.Attempt{Order: tasks.OrderRef{OutTradeNo: "O-3", MchID: "1900000200"},
		Outcome: tasks.OutcomePostponed, RatePostponed: true})
	m.ObserveAttempt(closehandler.Attempt{Order: tasks.OrderRef{OutTradeNo: "O-4", MchID: "1900000999"},
		Outcome: tasks.OutcomePermanent, Code: closehandler.CodeUnknownMerchant})
	got, body := scrape(t, serve(t, m))
	want := map[string]float64{
		`wxclose_rate_limit_effective{merchant="brand-a"}`:                                         160,
		`wxclose_rate_limit_configured{merchant="brand-a"}`:                                        200,
		`wxclose_rate_limit_effective{merchant=""}`:                                                140,
		`wxclose_rate_limit_configured{merchant=""}`:                                               150,
		`wxclose_merchant_close_outcomes_total{merchant="brand-a",outcome="closed"}`:               1,
		`wxclose_rate_limit_waits_total{merchant="brand-a",result="waited"}`:                       1,
		`wxclose_rate_limit_waits_total{merchant="",result="postponed"}`:                           1,
		`wxclose_rate_limit_decreases_total{merchant=""}`:                                          1,
		`wxclose_close_outcomes_total{outcome="permanent",wechat_code="WXCLOSE_UNKNOWN_MERCHANT"}`: 1,
	}
	for series, v := range want {
		if got[series] != v {
			t.Errorf("%s = %v, want %v", series, got[series], v)
		}
	}
	for _, id := range []string{"1900000109", "1900000200", "1900000999"} {
		if strings.Contains(body, id) {
			t.Errorf("a merchant id reached the metrics:\n%s", grepLines(body, id))
		}
	}
	if strings.Contains(body, `merchant_close_outcomes_total{merchant=""`) {
		t.Error("unnamed merchants got per-merchant outcome series")
	}
}
