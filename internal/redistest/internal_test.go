package redistest

import (
	"os/exec"
	"strings"
	"testing"
)

func TestParseMode(t *testing.T) {
	tests := []struct {
		in     string
		kind   modeKind
		db     int
		errHas string
	}{
		{in: "", kind: modeAuto},
		{in: "server", kind: modeServer},
		{in: "embedded", kind: modeEmbedded},
		{in: "redis://127.0.0.1:7000/5", kind: modeExternal, db: 5},
		{in: "rediss://user:pw@redis.example:6380/2", kind: modeExternal, db: 2},
		{in: "unix:///run/redis.sock?db=4", kind: modeExternal, db: 4},
		{in: "Embedded", errHas: `WXCLOSE_TEST_REDIS="Embedded": want`},
		{in: "localhost:6379", errHas: "want"},
		{in: "redis://:hunter2@127.0.0.1:7000/x", errHas: "not a usable Redis URL"},
	}
	for _, tt := range tests {
		m, err := parseMode(tt.in)
		if tt.errHas != "" {
			if err == nil || !strings.Contains(err.Error(), tt.errHas) {
				t.Errorf("parseMode(%q) error = %v, want one containing %q", tt.in, err, tt.errHas)
			}
			if err != nil && strings.Contains(err.Error(), "hunter2") {
				t.Errorf("parseMode(%q) error %q reveals the password", tt.in, err)
			}
			continue
		}
		if err != nil || m.kind != tt.kind {
			t.Errorf("parseMode(%q) = %v, %v; want kind %v", tt.in, m.kind, err, tt.kind)
			continue
		}
		if m.kind == modeExternal && (m.opts.DB != tt.db || m.url != tt.in) {
			t.Errorf("parseMode(%q): DB %d, URL %q; want DB %d", tt.in, m.opts.DB, m.url, tt.db)
		}
	}
}

func TestInfoField(t *testing.T) {
	info := "# Server\r\nredis_version:7.0.15\r\nprocess_id:4242\r\ntcp_port:4000\r\n"
	for field, want := range map[string]string{"process_id": "4242", "redis_version": "7.0.15", "missing": ""} {
		if got := infoField(info, field); got != want {
			t.Errorf("infoField(%q) = %q, want %q", field, got, want)
		}
	}
}

// BenchmarkLaunch measures what one Start costs with a real redis-server:
// picking a port, starting the server, waiting for it, stopping it.
func BenchmarkLaunch(b *testing.B) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		b.Skip("redis-server is not installed")
	}
	dir := b.TempDir()
	for b.Loop() {
		port, err := freePort()
		if err != nil {
			b.Fatal(err)
		}
		p, err := launch(bin, dir, port)
		if err != nil {
			b.Fatal(err)
		}
		p.stop()
	}
}
