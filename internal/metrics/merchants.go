package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wxclose/wxclose/internal/closehandler"
)

// Merchant metrics. Labels never carry merchant ids: the merchant label is
// the short name the operator gave a merchant in the registry, and "" for
// every merchant without one, so its values are as many as the named
// merchants, plus one.

// RateLimitSample is one merchant's rate limit, for
// wxclose_rate_limit_effective and _configured.
type RateLimitSample struct {
	// Merchant is the merchant's name, or "" for an unnamed one.
	Merchant string
	// Configured and Effective are in closes per second.
	Configured, Effective float64
}

var (
	rateEffectiveDesc = prometheus.NewDesc(namespace+"_rate_limit_effective",
		"Close Order rate in force (closes per second), shared by every worker: the configured rate, lowered after WeChat Pay "+
			"answered RATE_LIMITED and climbing back; by merchant name (\"\" sums the merchants without a name).",
		[]string{"merchant"}, nil)
	rateConfiguredDesc = prometheus.NewDesc(namespace+"_rate_limit_configured",
		"Configured Close Order rate (closes per second; WXCLOSE_RATE_LIMIT or the registry's rate_limit), by merchant name "+
			"(\"\" sums the merchants without a name). Merchants without a limit are left out.",
		[]string{"merchant"}, nil)
)

// rateCollector exports the samples its function returns, summing those
// that share a label.
type rateCollector func() []RateLimitSample

func (c rateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- rateEffectiveDesc
	ch <- rateConfiguredDesc
}

func (c rateCollector) Collect(ch chan<- prometheus.Metric) {
	type sums struct{ configured, effective float64 }
	by := map[string]*sums{}
	var order []string
	for _, s := range c() {
		if by[s.Merchant] == nil {
			by[s.Merchant] = &sums{}
			order = append(order, s.Merchant)
		}
		by[s.Merchant].configured += s.Configured
		by[s.Merchant].effective += s.Effective
	}
	for _, name := range order {
		ch <- prometheus.MustNewConstMetric(rateEffectiveDesc, prometheus.GaugeValue, by[name].effective, name)
		ch <- prometheus.MustNewConstMetric(rateConfiguredDesc, prometheus.GaugeValue, by[name].configured, name)
	}
}

// merchantMetrics are the per-merchant counters.
type merchantMetrics struct {
	outcomes  *prometheus.CounterVec // named merchants only
	waits     *prometheus.CounterVec
	decreases *prometheus.CounterVec
}

func newMerchantMetrics() *merchantMetrics {
	return &merchantMetrics{
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "merchant_close_outcomes_total",
			Help:      "Close attempts of the merchants the registry names, by merchant name and outcome (wxclose_close_outcomes_total counts every merchant).",
		}, []string{"merchant", "outcome"}),
		waits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "rate_limit_waits_total",
			Help: "Closes the rate limit delayed, by merchant name (\"\": unnamed) and result: waited (in place, up to 5 s) " +
				"or postponed (the merchant's next slot was further away; no retry spent).",
		}, []string{"merchant", "result"}),
		decreases: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "rate_limit_decreases_total",
			Help:      "Times a RATE_LIMITED answer lowered a merchant's shared rate, by merchant name (\"\": unnamed).",
		}, []string{"merchant"}),
	}
}

func (mm *merchantMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{mm.outcomes, mm.waits, mm.decreases}
}

func (mm *merchantMetrics) observe(a closehandler.Attempt) {
	if a.Merchant != "" {
		mm.outcomes.WithLabelValues(a.Merchant, outcomeLabel(a.Outcome)).Inc()
	}
	switch {
	case a.RatePostponed:
		mm.waits.WithLabelValues(a.Merchant, "postponed").Inc()
	case a.RateWait > 0:
		mm.waits.WithLabelValues(a.Merchant, "waited").Inc()
	}
	if a.RateDecreased {
		mm.decreases.WithLabelValues(a.Merchant).Inc()
	}
}
