package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"maps"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/wxclose/wxclose/internal/redistest"
	"github.com/wxclose/wxclose/tasks"
	"github.com/wxclose/wxclose/wechat/sandbox"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestDevModeProcessesDemoOrders runs `worker -dev` as a user would and
// checks that every demo order reaches its expected outcome.
func TestDevModeProcessesDemoOrders(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncBuffer
	getenv := func(name string) string {
		if name == "WXCLOSE_HTTP_ADDR" {
			return "127.0.0.1:0"
		}
		return ""
	}
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"-dev"}, getenv, &stdout, &stderr) }()

	redisURL := regexp.MustCompile(`embedded Redis\s+(redis://\S+)`)
	var m []string
	for deadline := time.Now().Add(30 * time.Second); m == nil; {
		m = redisURL.FindStringSubmatch(stdout.String())
		if time.Now().After(deadline) {
			t.Fatalf("no banner after 30s\nstdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	opt, err := asynq.ParseRedisURI(m[1])
	if err != nil {
		t.Fatal(err)
	}
	insp := asynq.NewInspector(opt)
	defer insp.Close()

	want := map[string]struct {
		state   asynq.TaskState
		outcome string
	}{
		"DEMO-CLOSE-1":  {asynq.TaskStateCompleted, tasks.OutcomeClosed},
		"DEMO-CLOSED-2": {asynq.TaskStateCompleted, tasks.OutcomeAlreadyClosed},
		"DEMO-PAID-3":   {asynq.TaskStateCompleted, tasks.OutcomePaid},
		"DEMO-FLAKY-4":  {asynq.TaskStateCompleted, tasks.OutcomeClosed},
		"DEMO-NOAUTH-5": {asynq.TaskStateArchived, ""},
	}
	mchid := regexp.MustCompile(`merchant (\d+)`).FindStringSubmatch(stdout.String())[1]
	deadline := time.Now().Add(60 * time.Second)
	for no, w := range want {
		id := tasks.CloseTaskID(tasks.OrderRef{OutTradeNo: no, MchID: mchid})
		for {
			info, err := insp.GetTaskInfo(tasks.QueueClose, id)
			if err == nil && info.State == w.state {
				if w.outcome != "" {
					// A plain close stores no record (tasks.ReadCloseRecord).
					if r, _, err := tasks.ReadCloseRecord(info); err != nil || r == nil || r.Outcome != w.outcome {
						t.Errorf("%s: result %s, want outcome %s", no, info.Result, w.outcome)
					}
				} else if !strings.Contains(info.LastErr, "NO_AUTH") {
					t.Errorf("%s: archived with %q, want the NO_AUTH reason", no, info.LastErr)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s did not reach %s within a minute: %+v %v\nstderr:\n%s", no, w.state, info, err, stderr.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	rec, err := insp.ListPendingTasks(tasks.QueueReconcile)
	if err != nil || len(rec) != 1 {
		t.Fatalf("reconciliation queue: %d tasks, %v; want the paid demo order", len(rec), err)
	}

	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("run returned %d\nstderr:\n%s", code, stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("worker did not shut down")
	}
}

func TestBadConfigurationNamesTheVariable(t *testing.T) {
	var stdout, stderr syncBuffer
	env := map[string]string{"WXCLOSE_CONCURRENCY": "lots", "WECHATPAY_API_KEY": "super-secret-key-value-000000000"}
	code := run(context.Background(), nil, func(k string) string { return env[k] }, &stdout, &stderr)
	if code != 2 {
		t.Fatalf("exit code %d, want 2", code)
	}
	for _, want := range []string{"WXCLOSE_CONCURRENCY", "WECHATPAY_MCHID", "WECHATPAY_MCH_PRIVATE_KEY_FILE"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("error output does not name %s:\n%s", want, stderr.String())
		}
	}
	if strings.Contains(stderr.String(), env["WECHATPAY_API_KEY"]) {
		t.Error("error output contains the API key")
	}
}

// workerEnv is a valid v3 configuration with sandbox key files; tests
// override single variables to make it invalid.
func workerEnv(t *testing.T) (map[string]string, *sandbox.Credentials, string) {
	t.Helper()
	creds, err := sandbox.GenerateCredentials("", "")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := creds.WriteFiles(dir); err != nil {
		t.Fatal(err)
	}
	return map[string]string{
		"REDIS_URL":                      "redis://127.0.0.1:1/0", // never dialled: start stops first
		"WECHATPAY_BASE_URL":             "http://127.0.0.1:1",
		"WECHATPAY_MCHID":                creds.MchID,
		"WECHATPAY_MCH_PRIVATE_KEY_FILE": filepath.Join(dir, "apiclient_key.pem"),
		"WECHATPAY_MCH_CERT_SERIAL":      creds.MerchantCertSerial,
		"WECHATPAY_PLATFORM_CERT_FILE":   filepath.Join(dir, "platform_cert.pem"),
		"WXCLOSE_HTTP_ADDR":              "127.0.0.1:0",
		"WXCLOSE_LOG_LEVEL":              "trace",
	}, creds, dir
}

// TestConfigurationErrorsExitTwo is the regression test for issue 7 defects
// 7 and 8: each bad setting stops the worker with exit code 2 and a message
// naming the variable (not a Go field), and no output shows a secret.
func TestConfigurationErrorsExitTwo(t *testing.T) {
	const secret = "Qx9Secret77pw"
	base, creds, dir := workerEnv(t)

	weakKey, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(weakKey)
	if err != nil {
		t.Fatal(err)
	}
	weakKeyFile := filepath.Join(dir, "weak_key.pem")
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(weakKeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(garbage, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	v2 := map[string]string{"WECHATPAY_API": "v2", "WECHATPAY_APPID": creds.AppID, "WECHATPAY_API_KEY": creds.APIKey}

	tests := []struct {
		name     string
		set      map[string]string
		variable string
	}{
		{"v2 key of the wrong length", merge(v2, map[string]string{"WECHATPAY_API_KEY": secret}), "WECHATPAY_API_KEY"},
		{"v2 bad app id", merge(v2, map[string]string{"WECHATPAY_APPID": "wx/1"}), "WECHATPAY_APPID"},
		{"plain http base url", map[string]string{"WECHATPAY_BASE_URL": "http://api.example.com"}, "WECHATPAY_BASE_URL"},
		{"negative timeout", map[string]string{"WECHATPAY_TIMEOUT": "-1s"}, "WECHATPAY_TIMEOUT"},
		{"more dequeue loops than slots", map[string]string{"WXCLOSE_CONCURRENCY": "2", "WXCLOSE_DEQUEUE_LOOPS": "3"}, "WXCLOSE_DEQUEUE_LOOPS"},
		{"colon in the ui user", map[string]string{"WXCLOSE_UI_USER": "ops:1", "WXCLOSE_UI_PASSWORD": secret}, "WXCLOSE_UI_USER"},
		{"ui without credentials on every interface", map[string]string{"WXCLOSE_HTTP_ADDR": "0.0.0.0:0"}, "WXCLOSE_UI_USER"},
		{"redis password with '#'", map[string]string{"REDIS_URL": "redis://:" + secret[:5] + "#" + secret[5:] + "@127.0.0.1:1/0"}, "REDIS_URL"},
		{"redis password with '/'", map[string]string{"REDIS_URL": "redis://:" + secret + "/@127.0.0.1:1/0"}, "REDIS_URL"},
		{"base url with user information", map[string]string{"WECHATPAY_BASE_URL": "https://mch:" + secret + "@apihk.mch.weixin.qq.com"}, "WECHATPAY_BASE_URL"},
		// Found only when the key files are read or by wechat.New.
		{"1024-bit merchant key", map[string]string{"WECHATPAY_MCH_PRIVATE_KEY_FILE": weakKeyFile}, "WECHATPAY_MCH_PRIVATE_KEY_FILE"},
		{"unreadable platform certificate", map[string]string{"WECHATPAY_PLATFORM_CERT_FILE": garbage}, "WECHATPAY_PLATFORM_CERT_FILE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := merge(base, tt.set)
			var stdout, stderr syncBuffer
			code := run(context.Background(), nil, func(k string) string { return env[k] }, &stdout, &stderr)
			out := stdout.String() + stderr.String()
			if code != 2 {
				t.Errorf("exit code %d, want 2\n%s", code, out)
			}
			if !strings.Contains(stderr.String(), tt.variable) {
				t.Errorf("output does not name %s:\n%s", tt.variable, out)
			}
			if strings.Contains(out, "Config.") {
				t.Errorf("output names a Go field instead of the variable:\n%s", out)
			}
			for _, part := range []string{secret[:5], secret[5:]} {
				if strings.Contains(out, part) {
					t.Errorf("output contains %q of the secret:\n%s", part, out)
				}
			}
		})
	}
}

// TestWrongAPIv3KeyExitsTwo: certificates that do not decrypt at start mean
// the key is wrong, a configuration error.
func TestWrongAPIv3KeyExitsTwo(t *testing.T) {
	env, creds, _ := workerEnv(t)
	sb, err := sandbox.New(sandbox.Options{Credentials: creds})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(sb.Handler())
	defer hs.Close()
	env["WECHATPAY_BASE_URL"] = hs.URL
	env["WECHATPAY_PLATFORM_CERT_FILE"] = ""
	env["WECHATPAY_APIV3_KEY"] = strings.Repeat("k", 32)
	var stdout, stderr syncBuffer
	code := run(context.Background(), nil, func(k string) string { return env[k] }, &stdout, &stderr)
	out := stdout.String() + stderr.String()
	if code != 2 || !strings.Contains(stderr.String(), "WECHATPAY_APIV3_KEY") {
		t.Fatalf("exit code %d, want 2 naming WECHATPAY_APIV3_KEY:\n%s", code, out)
	}
	if strings.Contains(out, env["WECHATPAY_APIV3_KEY"]) || strings.Contains(out, creds.APIv3Key) {
		t.Fatalf("output contains an APIv3 key:\n%s", out)
	}
}

// TestRedisPasswordNeverLogged runs the worker against a Redis that refuses
// its password, at trace level, and checks no output carries it.
func TestRedisPasswordNeverLogged(t *testing.T) {
	srv := redistest.Start(t)
	if srv.Embedded {
		t.Skip("needs redis-server (CONFIG SET requirepass)")
	}
	const password, wrong = "Right7Secret", "Wrong7Secret"
	if err := srv.Client().ConfigSet(context.Background(), "requirepass", password).Err(); err != nil {
		t.Fatal(err)
	}
	env, _, _ := workerEnv(t)
	env["REDIS_URL"] = "redis://:" + wrong + "@" + srv.Addr + "/0"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncBuffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, nil, func(k string) string { return env[k] }, &stdout, &stderr) }()
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(stderr.String(), "WRONGPASS"); {
		if time.Now().After(deadline) {
			t.Fatalf("no authentication error logged within 30s:\n%s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	<-done
	out := stdout.String() + stderr.String()
	if !strings.Contains(out, "redis://xxxxx@"+srv.Addr) {
		t.Errorf("startup log does not show the redacted Redis URL:\n%s", out)
	}
	for _, s := range []string{password, wrong} {
		if strings.Contains(out, s) {
			t.Errorf("output contains the password %s:\n%s", s, out)
		}
	}
}

func merge(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		maps.Copy(out, m)
	}
	return out
}
