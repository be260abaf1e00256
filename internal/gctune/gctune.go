// Package gctune sets the worker's garbage collector target. Under load the
// worker allocates a few kilobytes per close over a live heap of a few
// megabytes, so with Go's default (GOGC=100) it collects many times a
// second. Measured with cmd/bench (v2, concurrency 50, the same build run
// alternately), GOGC=400 cut the worker's CPU per close by 12-20 % and
// raised its peak RSS at concurrency 100 from 31 to 43-46 MiB; a soft memory
// limit bounds that trade.
package gctune

import (
	"fmt"
	"runtime/debug"
)

// Percent is the GOGC the worker runs with unless the operator sets one.
const Percent = 400

// Soft memory limit (GOMEMLIMIT) unless the operator sets one: the
// collector runs more often as the Go heap nears it, whatever Percent
// allows. It grows with the number of closes in flight, each of which holds
// a goroutine stack, buffers and connections, so that a large concurrency
// never makes the collector run without pause; at concurrency 100 it is
// BaseMemoryLimit, which keeps the worker's resident memory under 60 MB.
const (
	BaseMemoryLimit     = 40 << 20
	MemoryLimitPerClose = 384 << 10
)

// MemoryLimit is the soft memory limit for a worker running concurrency
// closes at once.
func MemoryLimit(concurrency int) int64 {
	return max(BaseMemoryLimit, int64(concurrency)*MemoryLimitPerClose)
}

// Apply sets the collector's target to Percent and its soft memory limit
// to MemoryLimit(concurrency), each unless the operator chose it: a GOGC or
// GOMEMLIMIT in the environment (which the Go runtime has already applied)
// is left alone. It returns a description for the start-up log line.
func Apply(getenv func(string) string, concurrency int) string {
	gogc, limit := "GOGC from the environment", "GOMEMLIMIT from the environment"
	if getenv("GOGC") == "" {
		debug.SetGCPercent(Percent)
		gogc = fmt.Sprintf("GOGC=%d", Percent)
	}
	if getenv("GOMEMLIMIT") == "" {
		l := MemoryLimit(concurrency)
		debug.SetMemoryLimit(l)
		limit = fmt.Sprintf("GOMEMLIMIT=%dMiB", l>>20)
	}
	return gogc + ", " + limit
}
