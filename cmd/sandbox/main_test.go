package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

// start runs the binary's run function on a free port and returns the URL
// it printed and a function that stops it and returns its error.
func start(t *testing.T, args ...string) (string, []string, func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		errc <- run(ctx, append([]string{"-addr", "127.0.0.1:0"}, args...), pw, io.Discard)
		pw.Close()
	}()
	sc := bufio.NewScanner(pr)
	var lines []string
	for len(lines) < 3 && sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) < 3 {
		cancel()
		t.Fatalf("startup output %q, error %v", lines, <-errc)
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }() // drains the rest of the output
	url := strings.TrimPrefix(lines[0], "sandbox listening on ")
	return url, lines, func() error { cancel(); return <-errc }
}

func TestRunGeneratesThenReusesKeys(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	url, lines, stop := start(t, "-keys-dir", dir, "-mchid", "1900000300", "-unknown-orders", "create")
	if !strings.Contains(lines[1], "generated") || !strings.Contains(lines[1], dir) {
		t.Errorf("output %q", lines)
	}
	resp, err := http.Get(url + "/sandbox/calls")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("admin endpoint: %d", resp.StatusCode)
	}
	if err := stop(); err != nil {
		t.Fatalf("run: %v", err)
	}
	first := lines[2]

	_, lines, stop = start(t, "-keys-dir", dir)
	if !strings.Contains(lines[1], "reused") || lines[2] != first {
		t.Errorf("second start %q, first %q", lines, first)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

func TestRunRejectsBadFlags(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"-unknown-orders", "maybe"},
		{"-rate-system-error", "2"},
		{"-nope"},
	} {
		if err := run(context.Background(), append([]string{"-addr", "127.0.0.1:0", "-keys-dir", dir}, args...), io.Discard, io.Discard); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}

func TestRunUnsignedFinalAnswersFlag(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	url, _, stop := start(t, "-keys-dir", dir, "-unsigned-final-answers", "-cache-response-signatures")
	defer func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	}()
	get := func() string {
		resp, err := http.Get(url + "/sandbox/settings")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if s := get(); !strings.Contains(s, `"unsigned_final_answers":true`) {
		t.Fatalf("settings %s, want unsigned final answers on", s)
	}
	resp, err := http.Post(url+"/sandbox/settings", "application/json", strings.NewReader(`{"unsigned_final_answers":false}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if s := get(); !strings.Contains(s, `"unsigned_final_answers":false`) {
		t.Fatalf("settings %s after switching off", s)
	}
}
