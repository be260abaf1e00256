package redisurl

import (
	"errors"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
)

func TestParseCluster(t *testing.T) {
	tests := []struct {
		raw  string
		want asynq.RedisClusterClientOpt
		tls  bool
	}{
		{"redis-cluster://127.0.0.1:7000", asynq.RedisClusterClientOpt{Addrs: []string{"127.0.0.1:7000"}}, false},
		{"redis-cluster://:" + secret + "@n1:7000,n2:7001,[::1]:7002",
			asynq.RedisClusterClientOpt{Addrs: []string{"n1:7000", "n2:7001", "[::1]:7002"}, Password: secret}, false},
		{"redis-cluster://app:" + secret + "@n1:7000/?tls=true",
			asynq.RedisClusterClientOpt{Addrs: []string{"n1:7000"}, Username: "app", Password: secret}, true},
		{"REDIS-CLUSTER://n1:7000?tls=false", asynq.RedisClusterClientOpt{Addrs: []string{"n1:7000"}}, false},
		{"redis-cluster://:p%40ss@n1:7000", asynq.RedisClusterClientOpt{Addrs: []string{"n1:7000"}, Password: "p@ss"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			got, err := Parse(tt.raw)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			g, ok := got.(asynq.RedisClusterClientOpt)
			if !ok || strings.Join(g.Addrs, ",") != strings.Join(tt.want.Addrs, ",") ||
				g.Username != tt.want.Username || g.Password != tt.want.Password {
				t.Fatalf("Parse = %#v, want %#v", got, tt.want)
			}
			if (g.TLSConfig != nil) != tt.tls {
				t.Fatalf("TLSConfig = %v, want TLS %t", g.TLSConfig, tt.tls)
			}
			if g.TLSConfig != nil && g.TLSConfig.ServerName != "" {
				t.Errorf("ServerName %q is fixed: every node would be checked against one name", g.TLSConfig.ServerName)
			}
		})
	}
}

func TestParseClusterErrorsNeverQuoteTheInput(t *testing.T) {
	tests := []struct {
		name, raw, want string
	}{
		{"no nodes", "redis-cluster://:" + secret + "@", "no node addresses"},
		{"no port", "redis-cluster://:" + secret + "@n1", "HOST:PORT"},
		{"second node without port", "redis-cluster://:" + secret + "@n1:7000,n2", "HOST:PORT"},
		{"empty node", "redis-cluster://:" + secret + "@n1:7000,,n2:7001", "HOST:PORT"},
		{"port zero", "redis-cluster://:" + secret + "@n1:0", "port"},
		{"database", "redis-cluster://:" + secret + "@n1:7000/1", "only database 0"},
		{"unknown parameter", "redis-cluster://:" + secret + "@n1:7000?password=" + secret, "other than tls"},
		{"password as parameter name", "redis-cluster://n1:7000?" + secret, "other than tls"},
		{"bad tls", "redis-cluster://:" + secret + "@n1:7000?tls=" + secret, "tls parameter"},
		{"tls twice", "redis-cluster://:" + secret + "@n1:7000?tls=true&tls=false", "tls parameter"},
		{"hash in password", "redis-cluster://:" + secret[:5] + "#" + secret[5:] + "@n1:7000", "'#'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.raw)
			if err == nil {
				t.Fatal("Parse accepted it")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("%v does not wrap ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
			if l := leaks(err.Error()); l != "" {
				t.Errorf("error %q quotes %q from the password", err, l)
			}
		})
	}
}

func TestRedactCluster(t *testing.T) {
	raw := "redis-cluster://:" + secret + "@n1:7000,n2:7001?tls=true"
	want := "redis-cluster://" + Redacted + "@n1:7000,n2:7001?tls=true"
	if got := Redact(raw); got != want {
		t.Errorf("Redact = %q, want %q", got, want)
	}
}

func FuzzParseClusterNeverQuotesThePassword(f *testing.F) {
	f.Add("redis-cluster://:", "@n1:7000,n2:7001?tls=true")
	f.Add("redis-cluster://n1:7000?", "=1")
	f.Fuzz(func(t *testing.T, prefix, suffix string) {
		raw := prefix + secret + suffix
		if _, err := Parse(raw); err != nil && leaks(err.Error()) != "" && leaks(prefix+suffix) == "" {
			t.Fatalf("Parse(%q) error %q quotes the password", raw, err)
		}
	})
}
