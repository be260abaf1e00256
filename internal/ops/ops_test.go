package ops

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/wxclose/wxclose/internal/redisurl"
	"github.com/wxclose/wxclose/tasks"
)

func TestDial(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c, err := Dial(ctx, e.srv.URL, tasks.ProducerConfig{MchID: testMchID})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.List(ctx, ListOptions{}); err != nil {
		t.Error(err)
	}
	if err := c.Close(); err != nil {
		t.Error(err)
	}

	tests := []struct {
		name, url string
		usage     bool
		want      string
	}{
		{"scheme", "http://u:s3cret@127.0.0.1/", true, "the Redis URL (--redis or REDIS_URL) is not a valid Redis URL: the scheme must be"},
		{"not a URL", "redis://:s3cret@[::1", true, "not a valid Redis URL"},
		{"bad port", "redis://:s3cret@127.0.0.1:port/0", true, "not a valid Redis URL"},
		{"fragment", "redis://:s3cret#tail@127.0.0.1:1/0", true, "contains '#'"},
		{"unreachable", "redis://:s3cret@127.0.0.1:1/0", false, "cannot reach Redis at 127.0.0.1:1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Dial(ctx, tt.url, tasks.ProducerConfig{})
			if err == nil || errors.Is(err, ErrUsage) != tt.usage || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want usage=%v with %q", err, tt.usage, tt.want)
			}
			if tt.usage && !errors.Is(err, redisurl.ErrInvalid) {
				t.Errorf("err = %v, want it to wrap redisurl.ErrInvalid", err)
			}
			if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "tail") {
				t.Errorf("error repeats the password: %v", err)
			}
		})
	}
}

func TestSummaries(t *testing.T) {
	tests := []struct {
		got  interface{ String() string }
		want string
	}{
		{BulkSummary{Lines: 5, Enqueued: 1, AlreadyScheduled: 1, Rejected: 1, Failed: 1}, "1 enqueued, 1 already scheduled, 1 rejected, 1 failed, 1 not processed (interrupted)"},
		{BulkSummary{Lines: 1, Enqueued: 1}, "1 enqueued, 0 already scheduled, 0 rejected, 0 failed"},
		{ReplaySummary{Scanned: 9, Matched: 6, Replayed: 3, Skipped: 2, Failed: 1}, "9 archived scanned, 6 matched, 3 replayed, 2 skipped, 1 failed"},
	}
	for _, tt := range tests {
		if s := tt.got.String(); s != tt.want {
			t.Errorf("%+v: %q, want %q", tt.got, s, tt.want)
		}
	}
	if (BulkSummary{Lines: 2, Enqueued: 1}).OK() || !(BulkSummary{Lines: 2, Enqueued: 1, AlreadyScheduled: 1}).OK() {
		t.Error("BulkSummary.OK is wrong")
	}
	if (ReplaySummary{Failed: 1}).OK() || !(ReplaySummary{Skipped: 3}).OK() {
		t.Error("ReplaySummary.OK is wrong")
	}
}

func TestBulkProgress(t *testing.T) {
	e := newEnv(t)
	var prog, out bytes.Buffer
	in := strings.NewReader(`{"out_trade_no":"PG-1","created_at":"2026-01-01T00:00:00Z"}` + "\n" + `{}` + "\n")
	sum, err := e.c.EnqueueBulk(context.Background(), in, BulkOptions{Progress: &prog, Out: &out, Err: &out})
	if err != nil || sum.Enqueued != 1 || sum.Rejected != 1 {
		t.Fatal(sum, err)
	}
	p := prog.String()
	if !strings.Contains(p, "\r\x1b[K") || !strings.Contains(p, "enqueued") || !strings.HasSuffix(p, "\r\x1b[K") {
		t.Errorf("progress output %q: want redraws ending with a cleared line", p)
	}
	if strings.Contains(out.String(), "\r") {
		t.Errorf("progress leaked into the output: %q", out.String())
	}
}
