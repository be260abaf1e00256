package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"
)

// profileAddrEnv names the address the profiling worker serves pprof on.
const profileAddrEnv = "WXCLOSE_BENCH_PPROF_ADDR"

// profileSource is added to cmd/worker by go build -overlay for -profile.
// It exists only in that build: production binaries carry no pprof.
const profileSource = `package main

import (
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
)

func init() {
	addr := os.Getenv("` + profileAddrEnv + `")
	if addr == "" {
		return
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		panic(err)
	}
	go http.Serve(ln, nil)
}
`

// writeProfileOverlay writes the go build -overlay file that adds
// profileSource to cmd/worker, and returns its path.
func writeProfileOverlay(dir, root string) (string, error) {
	src := filepath.Join(dir, "bench_pprof.go")
	if err := os.WriteFile(src, []byte(profileSource), 0o600); err != nil {
		return "", err
	}
	overlay := filepath.Join(dir, "overlay.json")
	b, _ := json.Marshal(map[string]map[string]string{
		"Replace": {filepath.Join(root, "cmd", "worker", "zz_bench_pprof.go"): src},
	})
	return overlay, os.WriteFile(overlay, b, 0o600)
}

// profiler collects one worker's profiles during a load.
type profiler struct {
	addr, dir, name string
	cpuDone         chan error // the worker's CPU profile
	selfDone        chan error // the bench process's (sandbox) CPU profile
	startStats      memStats
	startAt         time.Time
}

// memStats are the counters of runtime.MemStats that /debug/pprof/allocs
// prints with debug=1.
type memStats struct{ totalAlloc, mallocs, numGC int64 }

// startProfile starts a CPU profile of d and saves the allocation profile
// as the base of the comparison at the end.
func startProfile(ctx context.Context, addr, dir, name string, d time.Duration) (*profiler, error) {
	p := &profiler{addr: addr, dir: dir, name: name, cpuDone: make(chan error, 1), startAt: time.Now()}
	if err := p.fetch(ctx, "allocs", name+"-allocs-start.pb.gz"); err != nil {
		return nil, err
	}
	var err error
	if p.startStats, err = p.memStats(ctx); err != nil {
		return nil, err
	}
	secs := (d + time.Second - 1) / time.Second
	go func() {
		p.cpuDone <- p.fetch(ctx, "profile?seconds="+strconv.Itoa(int(secs)), name+"-cpu.pb.gz")
	}()
	// The bench process too: the sandbox in it takes CPU from the same
	// machine, and its share belongs in the picture.
	f, err := os.Create(filepath.Join(dir, name+"-sandbox-cpu.pb.gz"))
	if err != nil {
		return nil, err
	}
	p.selfDone = make(chan error, 1)
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	go func() {
		select {
		case <-time.After(secs * time.Second):
		case <-ctx.Done():
		}
		pprof.StopCPUProfile()
		p.selfDone <- f.Close()
	}()
	return p, nil
}

// finish saves the allocation profile, waits for the CPU profile and
// returns a summary with allocations per close over the profile window.
func (p *profiler) finish(ctx context.Context, closes int, loadEnded time.Time, d time.Duration) (string, error) {
	if err := p.fetch(ctx, "allocs", p.name+"-allocs-end.pb.gz"); err != nil {
		return "", err
	}
	end, err := p.memStats(ctx)
	if err != nil {
		return "", err
	}
	if err := errors.Join(<-p.cpuDone, <-p.selfDone); err != nil {
		return "", err
	}
	note := ""
	if loadEnded.Sub(p.startAt) < d {
		note = fmt.Sprintf("; the load ended %.1fs into the %s CPU profile: raise -orders for more samples", loadEnded.Sub(p.startAt).Seconds(), d)
	}
	return fmt.Sprintf("profiles in %s: %s-cpu.pb.gz, %[2]s-allocs-{start,end}.pb.gz, %[2]s-sandbox-cpu.pb.gz (bench process); worker: %.1f KiB and %.0f allocations per close, %.2f GCs per 1,000 closes%s",
		p.dir, p.name,
		float64(end.totalAlloc-p.startStats.totalAlloc)/1024/float64(closes),
		float64(end.mallocs-p.startStats.mallocs)/float64(closes),
		float64(end.numGC-p.startStats.numGC)*1000/float64(closes), note), nil
}

func (p *profiler) get(ctx context.Context, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.addr+"/debug/pprof/"+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("pprof %s: %s", path, resp.Status)
	}
	return resp, nil
}

func (p *profiler) fetch(ctx context.Context, path, file string) error {
	resp, err := p.get(ctx, path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	f, err := os.Create(filepath.Join(p.dir, file))
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func (p *profiler) memStats(ctx context.Context) (memStats, error) {
	resp, err := p.get(ctx, "allocs?debug=1")
	if err != nil {
		return memStats{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return memStats{}, err
	}
	var m memStats
	for line := range strings.SplitSeq(string(b), "\n") {
		for _, f := range []struct {
			name string
			dst  *int64
		}{{"# TotalAlloc = ", &m.totalAlloc}, {"# Mallocs = ", &m.mallocs}, {"# NumGC = ", &m.numGC}} {
			if v, ok := strings.CutPrefix(line, f.name); ok {
				*f.dst, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			}
		}
	}
	return m, nil
}
