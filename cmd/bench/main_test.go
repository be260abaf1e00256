package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestRunTiny runs every section with tiny sizes and checks that the command
// completes and prints every row. It asserts nothing about the figures:
// they depend on the machine and on what else runs on it.
func TestRunTiny(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the worker and starts processes; skipped with -short")
	}
	if raceEnabled {
		// The children are built without -race; the bench process itself only
		// orchestrates, and running it twice per CI run buys nothing.
		t.Skip("skipped under the race detector: the plain run covers it")
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server is not installed")
	}
	var stdout, stderr bytes.Buffer
	args := []string{"-orders", "200", "-burst", "200", "-memory-closes", "1000", "-latency-samples", "200", "-sign-for", "200ms",
		"-api-orders", "200", "-webhook-orders", "200",
		"-ratelimit-orders", "300", "-ratelimit-rate", "200", "-ratelimit-low", "100"}
	if code := run(context.Background(), args, os.Getenv, &stdout, &stderr); code != 0 {
		t.Fatalf("exit code %d\nstdout:\n%s\nstderr:\n%s", code, &stdout, &stderr)
	}
	for _, figure := range []string{
		"RSA-2048 signing bound", "bare asynq drain", "v3 closes/s", "v2 closes/s",
		"minimal v3 close worker", "minimal v2 close worker", "of the minimal close worker's closes/s",
		"burst of 200 due in one second", "burst: early calls", "EnqueueClose latency",
		"bulk enqueue --file", "Redis bytes per scheduled close, Redis defaults",
		"Redis bytes per scheduled close, hash-max-listpack-value 512", "worker peak RSS",
		"POST /v1/closes, worker -api-only", "POST /v1/closes latency", "webhook delivery of 200 paid orders",
	} {
		if !strings.Contains(stdout.String(), figure) {
			t.Errorf("no %q row in the output:\n%s", figure, &stdout)
		}
	}
	out := stdout.String()
	for _, figure := range []string{"POST /v1/closes, worker -api-only", "webhook delivery of"} {
		line := tableLine(out, figure)
		if !strings.Contains(line, "(met)") && !strings.Contains(line, "(MISSED)") && !strings.Contains(line, "(unreliable") {
			t.Errorf("row %q does not say whether its target was met:\n%s", figure, line)
		}
	}
	if line := tableLine(out, "webhook delivery of"); !strings.Contains(line, "200 verified, 0 failed") {
		t.Errorf("the receiver did not verify every delivery:\n%s", line)
	}
	// The baselines of the v3 and v2 ratios are measured on both sides of
	// their figures.
	for _, figure := range []string{"RSA-2048 signing bound (", "bare asynq drain, no-op handler", "minimal v3 close worker"} {
		if line := tableLine(out, figure); !strings.Contains(line, "mean of before and after") {
			t.Errorf("row %q is not bracketed:\n%s", figure, line)
		}
	}
	if !strings.Contains(out, "sequential Producer.EnqueueClose") {
		t.Errorf("the API row has no same-run baseline:\n%s", out)
	}
}

// TestRunJSONSubset checks -only and -json: only the chosen sections run
// and the output is one JSON document with their keys.
func TestRunJSONSubset(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes; skipped with -short")
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server is not installed")
	}
	var stdout, stderr bytes.Buffer
	args := []string{"-only", "latency,memory", "-memory-closes", "500", "-latency-samples", "100", "-json"}
	if code := run(context.Background(), args, os.Getenv, &stdout, &stderr); code != 0 {
		t.Fatalf("exit code %d\nstderr:\n%s", code, &stderr)
	}
	var r report
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, &stdout)
	}
	got := map[string]bool{}
	for _, x := range r.Rows {
		got[x.Key] = true
	}
	for _, k := range []string{"latency.enqueue_close_p99_ms", "memory.bytes_per_scheduled_close"} {
		if !got[k] {
			t.Errorf("no row %s in %v", k, got)
		}
	}
	if got["v3.closes_per_s"] || got["sign.signs_per_s"] {
		t.Errorf("-only ran other sections: %v", got)
	}
}

// TestFlags checks that bad flags are usage errors (exit 2) naming the
// flag.
func TestFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-orders", "1"}, "-orders"},
		{[]string{"-only", "v4"}, `unknown section "v4"`},
		{[]string{"-redis", "shared"}, "-redis"},
		{[]string{"extra"}, "unexpected arguments"},
	} {
		var stderr bytes.Buffer
		if code := run(context.Background(), tc.args, os.Getenv, &bytes.Buffer{}, &stderr); code != 2 || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tc.args, code, stderr.String(), tc.want)
		}
	}
}
