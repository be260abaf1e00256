package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// row is one printed figure.
type row struct {
	// Key is a stable name for scripts, e.g. "v3.closes_per_s".
	Key    string `json:"key"`
	Figure string `json:"figure"`
	// Value is in Unit; Text is how the table shows it.
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
	Text  string  `json:"text"`
	// Baseline is what the ratio divides by, measured in the same run.
	Baseline      string  `json:"baseline,omitempty"`
	BaselineValue float64 `json:"baseline_value,omitempty"`
	Ratio         float64 `json:"ratio,omitempty"`
	// Target is issue 8's goal for this figure, and Met whether this run
	// reached it (absent when the figure has no target or no baseline).
	Target string `json:"target,omitempty"`
	Met    *bool  `json:"met,omitempty"`
	// OtherCPUs is how many CPUs other processes on the machine used on
	// average during the measurement (absent: not measured). On a shared
	// machine it says whether a figure and its baseline saw the same
	// machine.
	OtherCPUs *float64 `json:"other_cpus,omitempty"`
	Details   string   `json:"details,omitempty"`
	// Samples are a baseline's measurements, one before and one after the
	// figures that divide by it (see bracket); Value is their mean.
	Samples []float64 `json:"samples,omitempty"`

	// perOpCPU is the CPU time per operation (signature, task, close) in
	// all processes, for the CPU-normalized comparison.
	perOpCPU time.Duration
	// ratio, when set, says how relate compares this figure with its
	// baseline.
	ratio *ratioSpec
}

// ratioSpec names the baseline a figure divides by and the figure's target.
type ratioSpec struct {
	baseKey, baseName string
	target            float64 // the ratio must be at least this; 0: no target
	// note, when set, adds to the figure's details what only the baseline
	// (or another row of the report) can tell, such as the CPU-normalized
	// comparison of their perOpCPU.
	note func(x, base row, all *report) string
}

type report struct {
	Machine map[string]string `json:"machine"`
	Rows    []row             `json:"rows"`
}

func (r *report) add(x row) { r.Rows = append(r.Rows, x) }

// bracket adds a baseline measurement. The second measurement of the same
// baseline, taken after the figures that divide by it, is merged into the
// first: the baseline becomes the mean of the two, so that a machine whose
// speed drifts during a run (a shared VM's can by 30% within a minute)
// moves the baseline with the figure instead of skewing the ratio.
func (r *report) bracket(x row) {
	i := slices.IndexFunc(r.Rows, func(y row) bool { return y.Key == x.Key })
	if i < 0 {
		x.Samples = []float64{x.Value}
		r.add(x)
		return
	}
	b := &r.Rows[i]
	b.Samples = append(b.Samples, x.Value)
	n := float64(len(b.Samples))
	b.Value = (b.Value*(n-1) + x.Value) / n
	b.perOpCPU = time.Duration((float64(b.perOpCPU)*(n-1) + float64(x.perOpCPU)) / n)
	b.Text = strings.Replace(x.Text, thousands(x.Value), thousands(b.Value), 1)
	if len(b.Samples) == 2 {
		b.Figure += ", mean of before and after"
	}
	b.Details = fmt.Sprintf("before: %s; after: %s; the two are %.0f%% apart", b.Details, x.Details, 100*b.spread())
	if x.OtherCPUs != nil && b.OtherCPUs != nil {
		b.OtherCPUs = new((*b.OtherCPUs*(n-1) + *x.OtherCPUs) / n)
	}
}

// spread is how far apart a bracketed baseline's samples are, relative to
// their mean (0 for a single sample).
func (x row) spread() float64 {
	if len(x.Samples) < 2 || x.Value == 0 {
		return 0
	}
	return (slices.Max(x.Samples) - slices.Min(x.Samples)) / x.Value
}

// maxSpread is how far apart the measurements before and after a figure may
// be before its ratio is called unreliable: the machine changed speed under
// it.
const maxSpread = 0.20

// relate sets the ratio, the baseline and the verdict of every figure that
// divides by a baseline. It runs after all sections, when the baselines
// have been measured on both sides of their figures.
func (r *report) relate() {
	for i := range r.Rows {
		x := &r.Rows[i]
		spec := x.ratio
		if spec == nil {
			continue
		}
		base, ok := r.find(spec.baseKey)
		if !ok || base.Value == 0 {
			x.Baseline = spec.baseName + " not measured (-only)"
			continue
		}
		x.Baseline = spec.baseName + " " + thousands(base.Value) + "/s"
		x.BaselineValue, x.Ratio = base.Value, x.Value/base.Value
		if spec.note != nil && x.perOpCPU > 0 && base.perOpCPU > 0 {
			x.Details += "; " + spec.note(*x, base, r)
		}
		if s := base.spread(); s > maxSpread {
			if spec.target > 0 {
				x.Target += " (unreliable: machine speed changed)"
			}
			x.Details += fmt.Sprintf("; the baseline measured before and after this figure is %.0f%% apart (%s/s and %s/s): the machine's speed changed during the run, so the ratio is not reliable",
				100*s, thousands(base.Samples[0]), thousands(base.Samples[len(base.Samples)-1]))
			continue
		}
		if spec.target > 0 {
			x.judge(x.Ratio >= spec.target, base)
		}
	}
}

// sort orders the rows as the sections list does; rows of one section keep
// their order.
func (r *report) sort() {
	index := func(x row) int {
		section, _, _ := strings.Cut(x.Key, ".")
		return slices.Index(sections, section)
	}
	slices.SortStableFunc(r.Rows, func(x, y row) int { return index(x) - index(y) })
}

// find returns the row with key, if it was measured.
func (r *report) find(key string) (row, bool) {
	for _, x := range r.Rows {
		if x.Key == key {
			return x, true
		}
	}
	return row{}, false
}

// maxLoadGap is how far apart (in CPUs used by other processes) a figure
// and its baseline may have been measured before their ratio is called
// unreliable.
const maxLoadGap = 0.25

// judge sets Met from ok, unless the figure and its baseline saw loads too
// different to compare: then Met stays unset and Target says why.
func (x *row) judge(ok bool, base row) {
	if x.OtherCPUs != nil && base.OtherCPUs != nil && math.Abs(*x.OtherCPUs-*base.OtherCPUs) > maxLoadGap {
		x.Target += " (unreliable: loads differ)"
		x.Details += fmt.Sprintf("; other processes used %.2f CPUs during this run and %.2f during its baseline: the ratio does not compare like with like", *x.OtherCPUs, *base.OtherCPUs)
		return
	}
	x.Met = met(ok)
}

func (r *report) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func (r *report) writeTable(w io.Writer) {
	keys := make([]string, 0, len(r.Machine))
	for k := range r.Machine {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var m []string
	for _, k := range keys {
		m = append(m, k+"="+r.Machine[k])
	}
	fmt.Fprintf(w, "wxclose bench: %s\n\n", strings.Join(m, ", "))
	busiest := 0.0
	for _, x := range r.Rows {
		if x.OtherCPUs != nil {
			busiest = max(busiest, *x.OtherCPUs)
		}
	}
	if busiest > maxLoadGap {
		fmt.Fprintf(w, "WARNING: other processes used up to %.2f CPUs during the measurements; ratios are only comparable between runs on an idle machine (see OTHER CPUS and the CPU per close below).\n\n", busiest)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "FIGURE\tVALUE\tBASELINE (SAME RUN)\tRATIO\tTARGET\tOTHER CPUS\t")
	for _, x := range r.Rows {
		ratio, target := "", x.Target
		if x.Ratio != 0 {
			ratio = fmt.Sprintf("%.2f", x.Ratio)
		}
		if x.Met != nil {
			if *x.Met {
				target += " (met)"
			} else {
				target += " (MISSED)"
			}
		}
		other := ""
		if x.OtherCPUs != nil {
			other = fmt.Sprintf("%.2f", *x.OtherCPUs)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t\n", x.Figure, x.Text, x.Baseline, ratio, target, other)
	}
	tw.Flush()
	fmt.Fprintln(w)
	for _, x := range r.Rows {
		if x.Details != "" {
			fmt.Fprintf(w, "%s: %s\n", x.Figure, x.Details)
		}
	}
}

func met(ok bool) *bool { return &ok }

// thousands formats v rounded to an integer with comma separators.
func thousands(v float64) string {
	s := strconv.FormatInt(int64(math.Round(v)), 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// secs formats d in seconds with millisecond precision.

// ms formats d in milliseconds.
func ms(d time.Duration) string { return fmt.Sprintf("%.3f ms", float64(d)/float64(time.Millisecond)) }

// percentile returns the p-quantile (0..1) of sorted durations, nearest rank.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
