package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/wxclose/wxclose/internal/ops"
	"github.com/wxclose/wxclose/internal/redistest"
	"github.com/wxclose/wxclose/internal/redisurl"
	"github.com/wxclose/wxclose/tasks"
)

type result struct {
	code           int
	stdout, stderr string
}

func runCmd(stdin string, args ...string) result {
	var out, errw bytes.Buffer
	code := run(args, strings.NewReader(stdin), &out, &errw)
	return result{code, out.String(), errw.String()}
}

// TestEndToEnd drives the command through a producer's and an operator's
// day against a private Redis.
func TestEndToEnd(t *testing.T) {
	srv := redistest.Start(t)
	t.Setenv("REDIS_URL", srv.URL)
	t.Setenv("WECHATPAY_MCHID", "1900000109")
	created := time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
	id := "close:1900000109:out_trade_no:E-1"

	steps := []struct {
		name     string
		stdin    string
		args     []string
		wantCode int
		stdout   []string // substrings
		stderr   []string
	}{
		{"enqueue one", "", []string{"--out-trade-no", "E-1", "--created-at", created},
			exitOK, []string{"enqueued " + id + " due "}, nil},
		{"duplicate is not an error", "", []string{"close", "-out-trade-no", "E-1"},
			exitOK, []string{"already scheduled " + id + " (scheduled) due "}, nil},
		{"enqueue as JSON", "", []string{"--transaction-id", "4200000001", "--mchid", "1230000109", "--close-at", time.Now().Add(time.Hour).Format(time.RFC3339), "--json"},
			exitOK, []string{`"status":"enqueued"`, `"task_id":"close:1230000109:transaction_id:4200000001"`}, nil},
		{"bulk from stdin",
			`{"out_trade_no":"E-2","created_at":"` + created + `"}` + "\n\n" +
				`{"out_trade_no":"E-1","created_at":"` + created + `"}` + "\n" +
				`{"out_trade_no":"E 3","created_at":"` + created + `"}` + "\n",
			[]string{"--file", "-"},
			exitFailed, []string{"line 1: enqueued close:1900000109:out_trade_no:E-2", "line 3: already scheduled " + id},
			[]string{`line 4: out_trade_no "E 3" must be`, "1 enqueued, 1 already scheduled, 1 rejected, 0 failed"}},
		{"bulk all good", `{"out_trade_no":"E-4","created_at":"` + created + `"}`, []string{"--file", "-", "--quiet"},
			exitOK, nil, []string{"1 enqueued, 0 already scheduled, 0 rejected, 0 failed"}},
		{"status", "", []string{"status", "--out-trade-no", "E-1"},
			exitOK, []string{"task:", id, "scheduled", "0 retried of 20 allowed", "out_trade_no=E-1"}, nil},
		{"status json", "", []string{"status", "--out-trade-no", "E-1", "--json"},
			exitOK, []string{`"state": "scheduled"`, `"max_retry": 20`}, nil},
		{"list", "", []string{"list", "--state", "scheduled"},
			exitOK, []string{"ID", "STATE", "E-1", "E-2", "E-4", "4200000001"}, nil},
		{"list json", "", []string{"list", "--queue", "close_order", "--limit", "1", "--json"},
			exitOK, []string{`"id": "close:`}, nil},
		{"cancel", "", []string{"cancel", "--out-trade-no", "E-1"},
			exitOK, []string{"cancelled " + id}, nil},
		{"cancel again: not found", "", []string{"cancel", "--out-trade-no", "E-1"},
			exitNotFound, nil, []string{"no close task for this order"}},
		{"status: not found", "", []string{"status", "--out-trade-no", "E-1"},
			exitNotFound, nil, []string{"no close task for this order"}},
		{"replay dry run, empty archive", "", []string{"replay", "--all", "--dry-run"},
			exitOK, nil, []string{"0 archived scanned, 0 matched"}},
		{"replay without filter", "", []string{"replay"},
			exitUsage, nil, []string{"give at least one filter", "--help"}},
		{"replay bad duration", "", []string{"replay", "--older-than", "yesterday"},
			exitUsage, nil, []string{"invalid value"}},
		{"replay the reconciliation archive, dry run", "", []string{"replay", "--queue", "reconciliation", "--all", "--dry-run"},
			exitOK, nil, []string{"0 archived scanned, 0 matched"}},
		{"replay: --code is for closes", "", []string{"replay", "--queue", "reconciliation", "--code", "SYSTEM_ERROR"},
			exitUsage, nil, []string{"--code selects by WeChat Pay code"}},
		{"replay: unknown queue", "", []string{"replay", "--queue", "payments", "--all"},
			exitUsage, nil, []string{`replay works on the close_order and reconciliation queues, not "payments"`}},
		{"help", "", []string{"status", "--help"},
			exitOK, []string{"Usage:", "Examples:", "-out-trade-no", "Exit codes:", "REDIS_URL"}, nil},
		{"top-level help", "", []string{"help"},
			exitOK, []string{"enqueue replay", "Exit codes:"}, nil},
		{"unknown flag", "", []string{"--nope"},
			exitUsage, nil, []string{"flag provided but not defined: -nope"}},
		{"stray argument", "", []string{"list", "archived"},
			exitUsage, nil, []string{`unexpected argument "archived"`}},
		{"no order", "", nil,
			exitUsage, nil, []string{"name the order with --out-trade-no or --transaction-id"}},
		{"both numbers", "", []string{"cancel", "--out-trade-no", "A", "--transaction-id", "1"},
			exitUsage, nil, []string{"only one of"}},
		{"bad order number", "", []string{"--out-trade-no", "A B"},
			exitUsage, nil, []string{`out_trade_no "A B" must be`}},
		{"bad created-at", "", []string{"--out-trade-no", "A", "--created-at", "today"},
			exitUsage, nil, []string{`--created-at "today" is not an RFC 3339 time`}},
		{"file with order flags", "", []string{"--file", "-", "--out-trade-no", "A"},
			exitUsage, nil, []string{"do not combine"}},
		{"missing file", "", []string{"--file", "/nonexistent/orders.jsonl"},
			exitUsage, nil, []string{"cannot read --file"}},
		{"bad state", "", []string{"list", "--state", "done"},
			exitUsage, nil, []string{`state "done" is not one of`}},
		{"redis down", "", []string{"status", "--out-trade-no", "A", "--redis", "redis://127.0.0.1:1/0"},
			exitFailed, nil, []string{"cannot reach Redis at 127.0.0.1:1"}},
		{"bad redis url", "", []string{"list", "--redis", "http://user:s3cret@host/"},
			exitUsage, nil, []string{"the Redis URL (--redis or REDIS_URL) is not a valid Redis URL", "--help"}},
		{"both numbers in a line: out_trade_no wins, and the output says so",
			`{"out_trade_no":"E-5","transaction_id":"4200000005","created_at":"` + created + `"}` + "\n",
			[]string{"--file", "-"},
			exitOK, []string{"line 1: enqueued close:1900000109:out_trade_no:E-5 due ", "the close uses out_trade_no E-5 (transaction_id 4200000005 is only kept in the payload)"}, nil},
		{"byte order mark, offset +24:00, close_at too late, wrong-case, unknown and repeated keys",
			"\ufeff" + `{"out_trade_no":"E-6","created_at":"` + created + `"}` + "\n" +
				`{"out_trade_no":"E-7","created_at":"2026-11-22T10:00:00+24:00"}` + "\n" +
				`{"out_trade_no":"E-8","created_at":"` + created + `","close_at":"` + time.Now().Add(tasks.MaxCloseDelay+time.Hour).UTC().Format(time.RFC3339) + `"}` + "\n" +
				`{"OUT_TRADE_NO":"E-9","created_at":"` + created + `"}` + "\n" +
				`{"out_trade_no":"E-10","closeAt":"` + created + `","created_at":"` + created + `"}` + "\n" +
				`{"out_trade_no":"E-11","created_at":"` + created + `","created_at":"` + created + `"}` + "\n",
			[]string{"--file", "-"},
			exitFailed, []string{"line 1: enqueued close:1900000109:out_trade_no:E-6 "},
			[]string{`line 2: created_at "2026-11-22T10:00:00+24:00" has a zone offset out of range`,
				"line 3: close_at ", "after created_at",
				`line 4: field "OUT_TRADE_NO" must be spelt "out_trade_no"`,
				`line 5: unknown field "closeAt"`,
				`line 6: field "created_at" appears more than once`,
				"1 enqueued, 0 already scheduled, 5 rejected, 0 failed"}},
		{"close-at too late, one order", "", []string{"--out-trade-no", "E-12", "--close-at", time.Now().Add(tasks.MaxCloseDelay + time.Hour).Format(time.RFC3339)},
			exitUsage, nil, []string{"close_at ", "after created_at"}},
		{"offset +24:00, one order", "", []string{"--out-trade-no", "E-13", "--created-at", "2026-11-22T10:00:00+24:00"},
			exitUsage, nil, []string{`--created-at "2026-11-22T10:00:00+24:00" has a zone offset out of range`}},
		{"help states the limits", "", []string{"close", "--help"},
			exitOK, []string{"at most 7 days after", "byte order mark", "closed by its out_trade_no"}, nil},
	}
	for _, s := range steps {
		r := runCmd(s.stdin, s.args...)
		if r.code != s.wantCode {
			t.Errorf("%s: exit code %d, want %d\nstdout: %s\nstderr: %s", s.name, r.code, s.wantCode, r.stdout, r.stderr)
		}
		for _, want := range s.stdout {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("%s: stdout lacks %q:\n%s", s.name, want, r.stdout)
			}
		}
		for _, want := range s.stderr {
			if !strings.Contains(r.stderr, want) {
				t.Errorf("%s: stderr lacks %q:\n%s", s.name, want, r.stderr)
			}
		}
		if strings.Contains(r.stdout+r.stderr, "s3cret") {
			t.Errorf("%s: output repeats the Redis password", s.name)
		}
	}
}

// TestCancelExitCodes covers the exit codes of a close that is running or
// done, which need a worker.
func TestCancelExitCodes(t *testing.T) {
	srv := redistest.Start(t)
	release := make(chan struct{})
	w := asynq.NewServerFromRedisClient(srv.Client(), asynq.Config{
		Concurrency: 2, Queues: map[string]int{tasks.QueueClose: 1},
		TaskCheckInterval: 20 * time.Millisecond, LogLevel: asynq.FatalLevel,
	})
	err := w.Start(asynq.HandlerFunc(func(ctx context.Context, task *asynq.Task) error {
		p, _ := tasks.DecodeClosePayload(task.Payload())
		if p.OutTradeNo == "BUSY" {
			<-release
		}
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Shutdown()
	defer close(release)

	old := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	in := fmt.Sprintf(`{"out_trade_no":"BUSY","created_at":"%s"}`+"\n"+`{"out_trade_no":"DONE","created_at":"%[1]s"}`+"\n", old)
	if r := runCmd(in, "--file", "-", "--redis", srv.URL); r.code != exitOK {
		t.Fatalf("enqueue: %+v", r)
	}
	ins := asynq.NewInspectorFromRedisClient(srv.Client())
	waitState(t, ins, "close:_:out_trade_no:BUSY", asynq.TaskStateActive)
	waitState(t, ins, "close:_:out_trade_no:DONE", asynq.TaskStateCompleted)

	for _, c := range []struct {
		no   string
		code int
		msg  string
	}{
		{"BUSY", exitInProgress, "close is in progress and cannot be cancelled"},
		{"DONE", exitCompleted, "close already completed"},
		{"NONE", exitNotFound, "no close task"},
	} {
		r := runCmd("", "cancel", "--out-trade-no", c.no, "--redis", srv.URL)
		if r.code != c.code || !strings.Contains(r.stderr, c.msg) {
			t.Errorf("cancel %s: code %d stderr %q, want %d %q", c.no, r.code, r.stderr, c.code, c.msg)
		}
	}
	r := runCmd("", "status", "--out-trade-no", "DONE", "--redis", srv.URL, "--json")
	var st struct{ State string }
	if r.code != exitOK || json.Unmarshal([]byte(r.stdout), &st) != nil || st.State != "completed" {
		t.Errorf("status of DONE: %+v", r)
	}
}

func waitState(t *testing.T, ins *asynq.Inspector, id string, state asynq.TaskState) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		info, err := ins.GetTaskInfo(tasks.QueueClose, id)
		if err == nil && info.State == state {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not reach %s: %v %v", id, state, info, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestExitCode is the table of the one mapping from errors to exit codes.
func TestExitCode(t *testing.T) {
	wrapped := func(err error) error { return fmt.Errorf("close:_:out_trade_no:A: %w", err) }
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"success", nil, exitOK},
		{"help printed", flag.ErrHelp, exitOK},
		{"usage", usageError("--limit must be at least 1"), exitUsage},
		{"usage from ops", fmt.Errorf("%w: state %q is not one of ...", ops.ErrUsage, "done"), exitUsage},
		{"bad Redis URL", fmt.Errorf("%w: the Redis URL is %w", ops.ErrUsage, redisurl.ErrInvalid), exitUsage},
		{"invalid order flags", wrapped(tasks.ErrInvalidPayload), exitUsage},
		{"no close task", wrapped(tasks.ErrNoClose), exitNotFound},
		{"in progress", wrapped(tasks.ErrCloseInProgress), exitInProgress},
		{"completed", wrapped(tasks.ErrCloseFinished), exitCompleted},
		{"some rejected or failed", errIncomplete, exitFailed},
		{"Redis down", errors.New("cannot reach Redis at 127.0.0.1:1"), exitFailed},
		{"interrupted", context.Canceled, exitFailed},
	}
	for _, tt := range tests {
		if got := exitCode(tt.err); got != tt.want {
			t.Errorf("%s: exitCode(%v) = %d, want %d", tt.name, tt.err, got, tt.want)
		}
	}
}

// TestRedisURLSecretsNeverPrinted: a Redis URL that does not parse, from
// --redis or REDIS_URL, is reported without its password or the part
// before a '#' (which url.Parse would quote), and exits 2.
func TestRedisURLSecretsNeverPrinted(t *testing.T) {
	const secret = "Hunter2pw"
	urls := []string{
		"redis://:" + secret + "@[::1",                 // bad host
		"redis://user:" + secret + "@127.0.0.1:port/0", // bad port
		"redis://:" + secret + "#frag@127.0.0.1:1/0",   // '#' in the password
		"redis://:pw@127.0.0.1:1/0#" + secret,          // '#' later
		"redis://:" + secret + "%zz@127.0.0.1:1/0",     // bad escape
		"http://:" + secret + "@127.0.0.1:1/0",         // wrong scheme
		secret + "@127.0.0.1:1",                        // no scheme at all
		"redis://:" + secret + "@127.0.0.1:1/db",       // bad database
		"redis-sentinel://:" + secret + "@127.0.0.1:1", // no master
		"redis://:" + secret + "\n@127.0.0.1:1/0",      // control character
		"redis://" + secret + ":pw@127.0.0.1:1/0#x",    // user part before '#'
		"redis://:p@ss" + secret + "@127.0.0.1:1/0#x",  // unencoded '@'
	}
	for _, u := range urls {
		for _, how := range []string{"flag", "env"} {
			args := []string{"list"}
			if how == "flag" {
				args = append(args, "--redis", u)
			} else {
				t.Setenv("REDIS_URL", u)
			}
			r := runCmd("", args...)
			if r.code != exitUsage {
				t.Errorf("%s %q: exit %d, want %d\n%s", how, u, r.code, exitUsage, r.stderr)
			}
			out := r.stdout + r.stderr
			if strings.Contains(out, secret) || strings.Contains(out, "frag") {
				t.Errorf("%s %q: output shows the secret:\n%s", how, u, out)
			}
			if !strings.Contains(r.stderr, "not a valid Redis URL") {
				t.Errorf("%s %q: stderr %q", how, u, r.stderr)
			}
		}
	}
	// Valid URLs of a Redis that does not answer: the failure names the
	// address only.
	for _, u := range []string{"redis://:" + secret + "@127.0.0.1:1/0", "redis://:p@ss" + secret + "@127.0.0.1:1/0"} {
		r := runCmd("", "status", "--out-trade-no", "A", "--redis", u)
		if r.code != exitFailed || !strings.Contains(r.stderr, "cannot reach Redis at 127.0.0.1:1") || strings.Contains(r.stdout+r.stderr, secret) {
			t.Errorf("%q: exit %d\n%s%s", u, r.code, r.stdout, r.stderr)
		}
	}
}
