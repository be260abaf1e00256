package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// cpuSnap is the CPU time used so far by the whole machine and by each
// process taking part in a measurement. The machine is shared: the
// difference tells how much CPU other processes took while the bench
// measured, which is what makes a ratio between two figures trustworthy or
// not.
type cpuSnap struct {
	at                  time.Time
	machine             time.Duration // busy time summed over all CPUs
	machineOK           bool
	self, redis, worker time.Duration
	redisCalls          map[string]int64 // INFO commandstats, when owned
}

// snap takes a cpuSnap; workerPID 0 means no worker.
func (b *bench) snap(ctx context.Context, workerPID int) cpuSnap {
	s := cpuSnap{at: time.Now(), self: selfCPU()}
	var err error
	s.machine, err = machineBusy()
	s.machineOK = err == nil
	// An external Redis may run on another machine: its CPU is then
	// neither ours nor the machine's.
	if b.redis.owned {
		s.redis, _ = b.redis.cpu(ctx)
		s.redisCalls, _ = b.redis.commandCalls(ctx)
	}
	if workerPID != 0 {
		s.worker, _ = procCPU(workerPID)
	}
	return s
}

// cpuUse is the CPU used between two snapshots.
type cpuUse struct {
	wall                       time.Duration
	self, redis, worker, other time.Duration
	otherOK                    bool
	calls0, calls1             map[string]int64
}

// redisCommands describes the Redis commands per operation.
func (u cpuUse) redisCommands(n int) string {
	if u.calls0 == nil || u.calls1 == nil {
		return ""
	}
	return "Redis commands per close (Lua-internal included; evalsha = round trips): " + commandsPer(u.calls0, u.calls1, n)
}

func between(a, z cpuSnap) cpuUse {
	u := cpuUse{wall: z.at.Sub(a.at), self: z.self - a.self, redis: z.redis - a.redis, worker: z.worker - a.worker,
		calls0: a.redisCalls, calls1: z.redisCalls}
	if a.machineOK && z.machineOK {
		u.other = max(z.machine-a.machine-u.self-u.redis-u.worker, 0)
		u.otherOK = true
	}
	return u
}

// total is the CPU used by the processes the bench measured.
func (u cpuUse) total() time.Duration { return u.self + u.redis + u.worker }

func deref(p *float64) float64 {
	if p == nil {
		return -1
	}
	return *p
}

// otherCPUs is how many CPUs other processes used on average, or nil if
// unknown.
func (u cpuUse) otherCPUs() *float64 {
	if !u.otherOK || u.wall <= 0 {
		return nil
	}
	v := u.other.Seconds() / u.wall.Seconds()
	return &v
}

// perClose describes the CPU each process spent per operation.
func (u cpuUse) perClose(n int) string {
	s := fmt.Sprintf("CPU per close: worker %s, sandbox+bench %s, redis %s", perOp(u.worker, n), perOp(u.self, n), perOp(u.redis, n))
	if c := u.redisCommands(n); c != "" {
		s += "; " + c
	}
	return s
}

// perOp formats a CPU time spread over n operations, in microseconds.
func perOp(d time.Duration, n int) string {
	return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond)/float64(max(n, 1)))
}

// machineBusy returns the busy time of all CPUs from /proc/stat (user,
// nice, system, irq, softirq and steal).
func machineBusy() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, errors.New("unexpected /proc/stat format")
	}
	var ticks int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return 0, err
		}
		ticks += v
	}
	return time.Duration(ticks) * clockTick, nil
}
