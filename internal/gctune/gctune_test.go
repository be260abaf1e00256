package gctune

import (
	"math"
	"runtime/debug"
	"runtime/metrics"
	"testing"
)

func read(name string) uint64 {
	s := []metrics.Sample{{Name: name}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// restore puts the test process's collector settings back.
func restore(t *testing.T) {
	gogc := debug.SetGCPercent(100)
	limit := debug.SetMemoryLimit(math.MaxInt64)
	t.Cleanup(func() {
		debug.SetGCPercent(gogc)
		debug.SetMemoryLimit(limit)
	})
}

func TestApply(t *testing.T) {
	tests := []struct {
		name        string
		env         map[string]string
		concurrency int
		wantGOGC    uint64
		wantLimit   uint64
		wantDesc    string
	}{
		{"defaults", nil, 100, Percent, BaseMemoryLimit, "GOGC=400, GOMEMLIMIT=40MiB"},
		{"large concurrency", nil, 1000, Percent, 1000 * MemoryLimitPerClose, "GOGC=400, GOMEMLIMIT=375MiB"},
		{"operator's GOGC", map[string]string{"GOGC": "150"}, 100, 100, BaseMemoryLimit, "GOGC from the environment, GOMEMLIMIT=40MiB"},
		{"operator's GOMEMLIMIT", map[string]string{"GOMEMLIMIT": "1GiB"}, 100, Percent, math.MaxInt64, "GOGC=400, GOMEMLIMIT from the environment"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			restore(t)
			desc := Apply(func(k string) string { return tt.env[k] }, tt.concurrency)
			if desc != tt.wantDesc {
				t.Errorf("Apply = %q, want %q", desc, tt.wantDesc)
			}
			// The runtime applied the environment's values at start; the
			// test process has neither, so "left alone" reads as what
			// restore set.
			if got := read("/gc/gogc:percent"); got != tt.wantGOGC {
				t.Errorf("GOGC = %d, want %d", got, tt.wantGOGC)
			}
			if got := read("/gc/gomemlimit:bytes"); got != tt.wantLimit {
				t.Errorf("GOMEMLIMIT = %d, want %d", got, tt.wantLimit)
			}
		})
	}
}

func TestMemoryLimitBoundsRSSAtConcurrency100(t *testing.T) {
	// The limit covers the Go heap, stacks and runtime; the binary and
	// the C side add about 10 MB of resident memory.
	if l := MemoryLimit(100); l+10e6 > 60e6 {
		t.Errorf("MemoryLimit(100) = %d: with ~10 MB outside the Go heap the worker could pass 60 MB", l)
	}
	if MemoryLimit(0) != BaseMemoryLimit || MemoryLimit(20) != BaseMemoryLimit {
		t.Errorf("small concurrencies get %d, %d; want the base limit", MemoryLimit(0), MemoryLimit(20))
	}
}
