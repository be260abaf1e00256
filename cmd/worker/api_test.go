package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wxclose/wxclose/internal/redistest"
	"github.com/wxclose/wxclose/tasks"
)

// runMainEnv makes the test binary behave as the worker command, so that a
// test can run it as a process of its own and send it signals.
const runMainEnv = "WXCLOSE_WORKER_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		main()
		return
	}
	redistest.Main(m)
}

// waitFor polls cond; the deadline only bounds a broken run.
func waitFor(t *testing.T, what string, cond func() bool, explain func() string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30s\n%s", what, explain())
		}
	}
}

func randomToken(t *testing.T, prefix string) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return prefix + hex.EncodeToString(b)
}

// TestSIGHUPReloadsAPITokens runs `worker -api-only` as a process, with
// Redis and WECHATPAY_MCHID only (no WeChat Pay credentials), and a tokens
// file holding one token as its SHA-256 digest. The token is replaced by
// another in the file and SIGHUP makes the new one valid and the old one
// invalid; an unusable file then keeps the tokens in use and says why; no
// token ever reaches the output; SIGTERM ends the process with status 0.
func TestSIGHUPReloadsAPITokens(t *testing.T) {
	srv := redistest.Start(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "tokens")
	tokenA, tokenB := randomToken(t, "tok-A-"), randomToken(t, "tok-B-")
	const badLine = "Bad-C-s3cret with spaces"
	sum := sha256.Sum256([]byte(tokenA))
	write := func(content string) {
		t.Helper()
		// Written beside and renamed, as an operator's tooling should: the
		// reload never reads half a file.
		tmp := file + ".new"
		if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, file); err != nil {
			t.Fatal(err)
		}
	}
	write("# ops team\nsha256:" + hex.EncodeToString(sum[:]) + "\n")

	cmd := exec.Command(os.Args[0], "-api-only")
	cmd.Env = []string{
		runMainEnv + "=1",
		"REDIS_URL=" + srv.URL,
		"WECHATPAY_MCHID=1900000109",
		"WXCLOSE_HTTP_ADDR=127.0.0.1:0",
		"WXCLOSE_API_TOKENS_FILE=" + file,
		"WXCLOSE_UI=false",
		"WXCLOSE_LOG_FORMAT=json",
	}
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			if err := <-exited; err != nil {
				t.Logf("worker after kill: %v", err)
			}
		}
	})

	var started struct {
		HTTPAddr string `json:"http_addr"`
	}
	waitFor(t, "start", func() bool {
		for line := range strings.Lines(out.String()) {
			if strings.Contains(line, "API-only mode started") {
				return json.Unmarshal([]byte(line), &started) == nil && started.HTTPAddr != ""
			}
		}
		return false
	}, out.String)
	url := "http://" + started.HTTPAddr + "/v1/closes/" + tasks.CloseTaskID(tasks.OrderRef{OutTradeNo: "NO-SUCH-ORDER", MchID: "1900000109"})
	status := func(token string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	// 404: authenticated, and no close of that order; 401: not a token.
	if a, b := status(tokenA), status(tokenB); a != http.StatusNotFound || b != http.StatusUnauthorized {
		t.Fatalf("before reload: token A %d, token B %d; want 404, 401", a, b)
	}

	write(tokenB + "\n")
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "reload", func() bool { return strings.Contains(out.String(), "API tokens reloaded") }, out.String)
	if a, b := status(tokenA), status(tokenB); a != http.StatusUnauthorized || b != http.StatusNotFound {
		t.Fatalf("after reload: token A %d, token B %d; want 401, 404", a, b)
	}

	write(tokenB + "\n" + badLine + "\n")
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "failed reload", func() bool { return strings.Contains(out.String(), "API tokens not reloaded") }, out.String)
	if b := status(tokenB); b != http.StatusNotFound {
		t.Fatalf("after a failed reload: token B %d, want 404 (the tokens in use stay)", b)
	}
	if !strings.Contains(out.String(), "line 2") {
		t.Errorf("the failed reload does not name the line:\n%s", out.String())
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("exit: %v, want status 0\n%s", err, out.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("no exit after SIGTERM")
	}
	for _, secret := range []string{tokenA, tokenB, "s3cret", hex.EncodeToString(sum[:])} {
		if strings.Contains(out.String(), secret) {
			t.Errorf("the output holds %q", secret)
		}
	}
}

// TestAPIAndWebhookConfigurationExitTwo: the close API's and the webhook's
// settings are configuration: a bad one stops the worker with status 2 and
// a message naming the variable, never quoting a token, a secret or the
// credentials of a URL.
func TestAPIAndWebhookConfigurationExitTwo(t *testing.T) {
	const secret = "Zq8s3cretVALUE"
	base, _, dir := workerEnv(t)
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	goodSecret := file("good.secret", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	tests := []struct {
		name     string
		args     []string
		set      map[string]string
		variable string
	}{
		{"tokens file with a bad line", nil, map[string]string{"WXCLOSE_API_TOKENS_FILE": file("bad-tokens", secret+" "+secret+"\n")}, "WXCLOSE_API_TOKENS_FILE"},
		{"missing tokens file", nil, map[string]string{"WXCLOSE_API_TOKENS_FILE": filepath.Join(dir, "nope")}, "WXCLOSE_API_TOKENS_FILE"},
		{"API on every interface without tokens", nil, map[string]string{"WXCLOSE_HTTP_ADDR": "0.0.0.0:0", "WXCLOSE_UI": "false"}, "WXCLOSE_API_TOKENS_FILE"},
		{"webhook over plain http", nil, map[string]string{"WXCLOSE_RECONCILE_WEBHOOK_URL": "http://hook:" + secret + "@erp.example.com/paid", "WXCLOSE_RECONCILE_WEBHOOK_SECRET_FILE": goodSecret}, "WXCLOSE_RECONCILE_WEBHOOK_URL"},
		{"webhook URL without secret", nil, map[string]string{"WXCLOSE_RECONCILE_WEBHOOK_URL": "https://erp.example.com/paid"}, "WXCLOSE_RECONCILE_WEBHOOK_SECRET_FILE"},
		{"webhook secret not whsec_", nil, map[string]string{"WXCLOSE_RECONCILE_WEBHOOK_URL": "https://erp.example.com/paid", "WXCLOSE_RECONCILE_WEBHOOK_SECRET_FILE": file("bad.secret", secret)}, "WXCLOSE_RECONCILE_WEBHOOK_SECRET_FILE"},
		{"-api-only on every interface without tokens", []string{"-api-only"}, map[string]string{"WXCLOSE_HTTP_ADDR": "0.0.0.0:0", "WXCLOSE_UI": "false"}, "WXCLOSE_API_TOKENS_FILE"},
		{"-api-only with the API off", []string{"-api-only"}, map[string]string{"WXCLOSE_API": "false"}, "WXCLOSE_API"},
		{"-dev with -api-only", []string{"-dev", "-api-only"}, nil, "-api-only"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := merge(base, tt.set)
			var stdout, stderr syncBuffer
			code := run(context.Background(), tt.args, func(k string) string { return env[k] }, &stdout, &stderr)
			out := stdout.String() + stderr.String()
			if code != 2 || !strings.Contains(stderr.String(), tt.variable) {
				t.Errorf("exit code %d, want 2 naming %s:\n%s", code, tt.variable, out)
			}
			if strings.Contains(out, secret) {
				t.Errorf("the output holds the secret:\n%s", out)
			}
		})
	}
}

// TestDevModeServesTheAPI: `worker -dev` serves the close API on loopback
// without a token and its banner shows curl commands that work: the POST
// schedules a close (which the dev worker then runs against the sandbox),
// the GET shows it, and the DELETE answers 409 once it completed.
func TestDevModeServesTheAPI(t *testing.T) {
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
	defer func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("run returned %d\n%s", code, stderr.String())
		}
	}()
	post := regexp.MustCompile(`curl -sS -H 'Content-Type: application/json' -d '([^']+)' (http://\S+/v1/closes)\n`)
	get := regexp.MustCompile(`\n  (curl -sS http://\S+/v1/closes/\S+)\n`)
	del := regexp.MustCompile(`\n  (curl -sS -X DELETE http://\S+/v1/closes/\S+) `)
	var pm []string
	waitFor(t, "banner", func() bool { pm = post.FindStringSubmatch(stdout.String()); return pm != nil },
		func() string { return stdout.String() + stderr.String() })
	banner := stdout.String()
	gm, dm := get.FindStringSubmatch(banner), del.FindStringSubmatch(banner)
	if gm == nil || dm == nil || !strings.Contains(banner, "/v1/openapi.json") {
		t.Fatalf("banner lacks the GET, DELETE or contract lines:\n%s", banner)
	}

	var s struct {
		TaskID string `json:"task_id"`
		State  string `json:"state"`
	}
	if _, err := exec.LookPath("curl"); err == nil {
		// The banner's own commands, as a newcomer pastes them.
		outPost, err := exec.Command("sh", "-c", strings.TrimSpace(post.FindString(banner))).Output()
		if err != nil || json.Unmarshal(outPost, &s) != nil || s.TaskID == "" {
			t.Fatalf("banner POST: %v %s", err, outPost)
		}
	} else {
		t.Log("curl not installed: sending the banner's POST with net/http")
		resp, err := http.Post(pm[2], "application/json", strings.NewReader(pm[1]))
		if err != nil {
			t.Fatal(err)
		}
		err = json.NewDecoder(resp.Body).Decode(&s)
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated || err != nil {
			t.Fatalf("banner POST: %d %v", resp.StatusCode, err)
		}
	}
	if !strings.HasSuffix(gm[1], "/"+s.TaskID) {
		t.Fatalf("the banner's GET %q is not about the close its POST scheduled (%s)", gm[1], s.TaskID)
	}
	getURL := strings.TrimPrefix(gm[1], "curl -sS ")
	waitFor(t, "the close to complete", func() bool {
		resp, err := http.Get(getURL)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		_ = json.NewDecoder(resp.Body).Decode(&s)
		return s.State == "completed"
	}, func() string { return stderr.String() })
	req, _ := http.NewRequest(http.MethodDelete, strings.TrimPrefix(dm[1], "curl -sS -X DELETE "), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusConflict {
		t.Errorf("banner DELETE after completion: %d, want 409", resp.StatusCode)
	}
}
