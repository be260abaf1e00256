package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wxclose/wxclose/internal/merchants"
	"github.com/wxclose/wxclose/wechat"
)

// TestRunExtraMerchantsAndRateLimit: -extra-merchants serves more
// merchants with their own keys and writes a registry that a worker loads
// as is; -rate-limit limits each merchant's closes.
func TestRunExtraMerchantsAndRateLimit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		errc <- run(ctx, []string{"-addr", "127.0.0.1:0", "-keys-dir", dir, "-extra-merchants", "1", "-rate-limit", "2",
			"-rate-limit-burst", "1", "-unknown-orders", "create"}, pw, io.Discard)
		pw.Close()
	}()
	defer func() {
		cancel()
		if err := <-errc; err != nil {
			t.Logf("sandbox: %v", err)
		}
	}()
	sc := bufio.NewScanner(pr)
	var url, registry string
	for registry == "" && sc.Scan() {
		line := sc.Text()
		if u, ok := strings.CutPrefix(line, "sandbox listening on "); ok {
			url = u
		}
		if _, r, ok := strings.Cut(line, "WXCLOSE_MERCHANTS_FILE="); ok {
			registry = r
		}
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	if url == "" || registry == "" {
		t.Fatalf("no URL or registry in the output")
	}
	reg, err := merchants.New(ctx, merchants.Options{File: registry})
	if err != nil {
		t.Fatalf("the written registry does not load: %v", err)
	}
	all := reg.All()
	if len(all) != 2 || all[1].MchID != "1900000209" || all[0].RateLimit != 2 {
		t.Fatalf("registry merchants %+v", all)
	}
	for _, m := range all {
		out, err := m.Closer.Close(ctx, wechat.CloseRequest{OutTradeNo: "EXTRA-" + m.MchID, MchID: m.MchID})
		if err != nil || out.Result != wechat.ResultClosed {
			t.Fatalf("merchant %s's close: %+v, %v", m.MchID, out, err)
		}
	}
	resp, err := http.Get(url + "/sandbox/rate-limit")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var limits []struct {
		MchID     string  `json:"mchid"`
		PerSecond float64 `json:"per_second"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&limits); err != nil || len(limits) != 2 || limits[1].PerSecond != 2 {
		t.Fatalf("GET /sandbox/rate-limit: %+v, %v", limits, err)
	}
}
