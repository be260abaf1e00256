package main

import (
	"strings"
	"testing"
	"time"
)

// TestBracketAndRelate checks how a figure is judged against a baseline
// measured on both sides of it: the mean of the two is the baseline, and a
// machine that changed speed between them yields no verdict.
func TestBracketAndRelate(t *testing.T) {
	for _, tc := range []struct {
		name      string
		samples   []float64 // the baseline's measurements, in order
		figure    float64
		wantBase  float64
		wantRatio float64
		wantMet   string // "met", "missed", or "unreliable"
	}{
		{"one sample, met", []float64{1000}, 800, 1000, 0.80, "met"},
		{"one sample, missed", []float64{1000}, 700, 1000, 0.70, "missed"},
		{"mean of two close samples", []float64{1000, 1100}, 780, 1050, 780.0 / 1050, "met"},
		{"the mean decides, not the kinder sample", []float64{1000, 1180}, 750, 1090, 750.0 / 1090, "missed"},
		{"samples 38% apart: no verdict", []float64{1082, 1585}, 892, 1333.5, 892 / 1333.5, "unreliable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r report
			for _, s := range tc.samples {
				r.bracket(row{Key: "sign.signs_per_s", Figure: "bound", Value: s, Text: thousands(s) + " signs/s", perOpCPU: time.Duration(2e9 / s)})
			}
			r.add(row{Key: "v3.closes_per_s", Figure: "v3", Value: tc.figure, Target: "≥ 0.72",
				ratio: &ratioSpec{baseKey: "sign.signs_per_s", baseName: "bound", target: 0.72}})
			r.relate()
			base, _ := r.find("sign.signs_per_s")
			if base.Value != tc.wantBase || len(base.Samples) != len(tc.samples) {
				t.Errorf("baseline %v from samples %v; want %v from %v", base.Value, base.Samples, tc.wantBase, tc.samples)
			}
			if !strings.HasPrefix(base.Text, thousands(tc.wantBase)+" ") {
				t.Errorf("baseline text %q does not show the mean %s", base.Text, thousands(tc.wantBase))
			}
			fig, _ := r.find("v3.closes_per_s")
			if d := fig.Ratio - tc.wantRatio; d > 1e-9 || d < -1e-9 {
				t.Errorf("ratio %v, want %v", fig.Ratio, tc.wantRatio)
			}
			got := "unreliable"
			switch {
			case fig.Met != nil && *fig.Met:
				got = "met"
			case fig.Met != nil:
				got = "missed"
			}
			if got != tc.wantMet {
				t.Errorf("verdict %s (target %q), want %s", got, fig.Target, tc.wantMet)
			}
			if got == "unreliable" && !strings.Contains(fig.Target, "machine speed changed") {
				t.Errorf("an unreliable ratio must say why; target %q", fig.Target)
			}
		})
	}
}

// TestRelateWithoutBaseline: a figure whose baseline section did not run
// says so and gets no ratio or verdict.
func TestRelateWithoutBaseline(t *testing.T) {
	var r report
	r.add(row{Key: "v2.closes_per_s", Value: 4000, ratio: &ratioSpec{baseKey: "drain.tasks_per_s", baseName: "bare asynq drain", target: 0.5}})
	r.relate()
	fig, _ := r.find("v2.closes_per_s")
	if fig.Ratio != 0 || fig.Met != nil || !strings.Contains(fig.Baseline, "not measured") {
		t.Errorf("got ratio %v, met %v, baseline %q", fig.Ratio, fig.Met, fig.Baseline)
	}
}
