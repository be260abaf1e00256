package redisurl

import (
	"errors"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
)

// secret is the password in the test URLs; no error or redacted form may
// contain it or any four-character piece of it.
const secret = "Zq7xKv93TwLm"

func leaks(s string) string {
	for i := 0; i+4 <= len(secret); i++ {
		if strings.Contains(s, secret[i:i+4]) {
			return secret[i : i+4]
		}
	}
	return ""
}

func TestParseAccepts(t *testing.T) {
	tests := []struct {
		raw  string
		want asynq.RedisConnOpt
	}{
		{"redis://127.0.0.1:6379/0", asynq.RedisClientOpt{Addr: "127.0.0.1:6379"}},
		{"redis://:" + secret + "@redis.internal:6380/3", asynq.RedisClientOpt{Addr: "redis.internal:6380", Password: secret, DB: 3}},
		{"REDIS://h:1", asynq.RedisClientOpt{Addr: "h:1"}},
		{"redis://:" + "p%23ss%40x" + "@h:1/", asynq.RedisClientOpt{Addr: "h:1", Password: "p#ss@x"}},
		{"redis-socket:///run/redis.sock?db=2", asynq.RedisClientOpt{Network: "unix", Addr: "/run/redis.sock", DB: 2}},
		{"redis-sentinel://:pw@s1:26379,s2:26379?master=mymaster",
			asynq.RedisFailoverClientOpt{MasterName: "mymaster", SentinelAddrs: []string{"s1:26379", "s2:26379"}, SentinelPassword: "pw"}},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			got, err := Parse(tt.raw)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			switch want := tt.want.(type) {
			case asynq.RedisClientOpt:
				g, ok := got.(asynq.RedisClientOpt)
				if !ok || g.Network != want.Network || g.Addr != want.Addr || g.Password != want.Password || g.DB != want.DB {
					t.Fatalf("Parse = %+v, want %+v", got, want)
				}
			case asynq.RedisFailoverClientOpt:
				g, ok := got.(asynq.RedisFailoverClientOpt)
				if !ok || g.MasterName != want.MasterName || strings.Join(g.SentinelAddrs, ",") != strings.Join(want.SentinelAddrs, ",") ||
					g.SentinelPassword != want.SentinelPassword {
					t.Fatalf("Parse = %+v, want %+v", got, want)
				}
			}
		})
	}
	if _, err := Parse("rediss://h:6380/0"); err != nil {
		t.Fatalf("rediss: %v", err)
	}
}

// TestParseErrorsNeverQuoteTheInput is the regression test for issue 7
// defect 7: asynq.ParseRedisURI's errors quote the URL, password included
// (or the part before a '#').
func TestParseErrorsNeverQuoteTheInput(t *testing.T) {
	tests := []struct {
		name, raw, want string
	}{
		{"hash in password", "redis://:" + secret[:6] + "#" + secret[6:] + "@h:6379/0", "'#'"},
		{"slash in password", "redis://:" + secret[:6] + "/" + secret[6:] + "@h:6379/0", "host:port"},
		{"question mark in password", "redis://:" + secret + "?x@h:6379/0", "host:port"},
		{"digits then slash", "redis://:12345/" + secret + "@h:6379/0", "no host"},
		{"bad escape", "redis://:" + secret + "%zz@h:6379/0", "%-escape"},
		{"space in host", "redis://:" + secret + "@h st:6379/0", "host"},
		{"control character", "redis://:" + secret + "\n@h:6379/0", "control character"},
		{"no scheme", secret, "must start with"},
		{"user:password without scheme", "default:" + secret + "@h:6379", "must start with"},
		{"password as scheme", secret + "://h:6379", "scheme must be"},
		{"http", "http://:" + secret + "@h:6379", "scheme must be"},
		{"no host", "redis://:" + secret + "@/0", "no host"},
		{"db not a number", "redis://:" + secret + "@h:6379/zero", "database number"},
		{"negative db", "redis://:" + secret + "@h:6379/-1", "database number"},
		{"socket without path", "redis-socket://:" + secret + "@", "socket path"},
		{"socket bad db", "redis-socket://:" + secret + "@/run/r.sock?db=x", "db parameter"},
		{"sentinel without master", "redis-sentinel://:" + secret + "@s1:26379", "master"},
		{"sentinel without hosts", "redis-sentinel://:" + secret + "@?master=m", "sentinel addresses"},
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

func TestRedact(t *testing.T) {
	tests := []struct{ raw, want string }{
		{"", ""},
		{"redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"},
		{"redis://:" + secret + "@h:6379/0", "redis://" + Redacted + "@h:6379/0"},
		{"redis://default:" + secret + "@h:6379/0", "redis://" + Redacted + "@h:6379/0"},
		{"redis://" + secret + "@h:6379/0", "redis://" + Redacted + "@h:6379/0"},
		{"redis-sentinel://:" + secret + "@s1:26379?master=m&password=" + secret, "redis-sentinel://" + Redacted + "@s1:26379?master=m&password=" + Redacted},
		{"redis-socket:///run/r.sock?db=2", "redis-socket:///run/r.sock?db=2"},
		{"https://user:" + secret + "@api.example.com/p", "https://" + Redacted + "@api.example.com/p"},
		{"redis://:" + secret[:6] + "#" + secret[6:] + "@h:6379/0", "[unparsable URL, not shown]"},
		{"redis://:" + secret + "/x@h:6379/0", "[unparsable URL, not shown]"},
		{secret, "[unparsable URL, not shown]"},
		{"user:" + secret + "@h", "[unparsable URL, not shown]"},
	}
	for _, tt := range tests {
		got := Redact(tt.raw)
		if got != tt.want {
			t.Errorf("Redact(%q) = %q, want %q", tt.raw, got, tt.want)
		}
		if l := leaks(got); l != "" {
			t.Errorf("Redact(%q) = %q quotes %q", tt.raw, got, l)
		}
	}
}

func FuzzParseNeverQuotesThePassword(f *testing.F) {
	f.Add("redis://:", "@h:6379/0")
	f.Add("redis://:", "#@h")
	f.Add("redis-sentinel://:", "@h?master=x")
	f.Fuzz(func(t *testing.T, prefix, suffix string) {
		raw := prefix + secret + suffix
		if _, err := Parse(raw); err != nil && leaks(err.Error()) != "" && leaks(prefix+suffix) == "" {
			t.Fatalf("Parse(%q) error %q quotes the password", raw, err)
		}
	})
}
