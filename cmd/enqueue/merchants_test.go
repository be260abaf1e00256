package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wxclose/wxclose/internal/ratelimit"
	"github.com/wxclose/wxclose/internal/redistest"
)

// TestMerchantsShowsTheRateInForce: enqueue merchants lists the registry's
// merchants with their configured rate and the shared rate in force, lower
// after a RATE_LIMITED answer; it reads no key file.
func TestMerchantsShowsTheRateInForce(t *testing.T) {
	srv := redistest.Start(t)
	file := filepath.Join(t.TempDir(), "merchants.yaml")
	const registry = `merchants:
  - mchid: "1900000109"
    name: brand-a
    private_key_file: /nonexistent/apiclient_key.pem
    cert_serial: 444F4864EA9B34415
    platform_cert_file: /nonexistent/wechatpay.pem
    rate_limit: 200
  - mchid: "1900000200"
    api: v2
    appid: wx8888888888888888
    api_key_file: /nonexistent/api_key
  - mchid: "1900000300"
    api: v2
    appid: wx8888888888888888
    api_key_file: /nonexistent/api_key
    rate_limit: off
`
	if err := os.WriteFile(file, []byte(registry), 0o600); err != nil {
		t.Fatal(err)
	}
	lim, err := ratelimit.New(srv.Client(), ratelimit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s, err := lim.Reserve(ctx, "1900000109", 200, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lim.Throttled(ctx, "1900000109", 200, s); err != nil {
		t.Fatal(err)
	}
	t.Setenv("WXCLOSE_RATE_LIMIT", "50")
	var stdout, stderr bytes.Buffer
	if code := run([]string{"merchants", "--file", file, "--redis", srv.URL}, nil, &stdout, &stderr); code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("output:\n%s", stdout.String())
	}
	for i, want := range [][]string{
		{"MCHID", "RATE LIMIT", "IN FORCE"},
		{"1900000109", "brand-a", "200/s", "160/s", "RATE_LIMITED"},
		{"1900000200", "v2", "50/s", "50/s", "at the configured rate"},
		{"1900000300", "off", "no limit"},
	} {
		for _, w := range want {
			if !strings.Contains(lines[i], w) {
				t.Errorf("line %d %q does not contain %q", i, lines[i], w)
			}
		}
	}

	// A bad registry is a usage error naming the entry and field.
	if err := os.WriteFile(file, []byte("merchants:\n  - mchid: \"1\"\n    api_key: s3cret-value\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	stderr.Reset()
	if code := run([]string{"merchants", "--file", file, "--redis", srv.URL}, nil, &stdout, &stderr); code != exitUsage ||
		!strings.Contains(stderr.String(), "merchants[0] (mchid 1) api_key") || strings.Contains(stderr.String(), "s3cret-value") {
		t.Fatalf("bad registry: exit %d, stderr %s", code, stderr.String())
	}
}
