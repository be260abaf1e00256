package main

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"time"
)

// measureMinimal runs the deliberately minimal close worker issue 8 compares
// wxclose with (cmd/bench/minimalworker): one asynq server at the worker's
// concurrency whose handler makes the signed Close Order call with the
// same wechat client, and nothing else. It is a process of its own, as the
// worker is, with the worker's garbage-collector settings.
//
// The rows it adds are a second baseline for the v3 and v2 figures: their
// ratio to it is what wxclose's handler costs over the bare minimum on
// this machine, a figure that the machine's speed affects much less than
// the ratio to the signing bound (both sides sign).
func (b *bench) measureMinimal(ctx context.Context, api string) error {
	n := b.o.orders
	prefix := byte('U')
	if api == "v2" {
		prefix = 'W'
	}
	if _, err := enqueueAll(ctx, b.producer, b.orders(prefix, n, longAgo, true)); err != nil {
		return err
	}
	from := b.calls.count()
	name := "minimal-" + api
	env, err := b.closeWorkerEnv(api, b.o.concurrency)
	if err != nil {
		return err
	}
	cmd := exec.Command(b.minimalBin)
	cmd.Env = env
	cmd.Dir = b.dir
	c, err := b.procs.start(name, cmd, filepath.Join(b.dir, name+".log"))
	if err != nil {
		return err
	}
	w := &workerRun{child: c}
	defer w.kill()
	lr, err := b.runLoad(ctx, w, from, n)
	if err != nil {
		return err
	}
	// It exits 1, with the last failure in its log, unless every close
	// ended closed.
	if err := w.shutdown(); err != nil {
		return err
	}
	// The same baselines as wxclose's figures, without a target: what the
	// bare minimum reaches on this machine.
	spec := &ratioSpec{baseKey: "sign.signs_per_s", baseName: "RSA-2048 signing bound"}
	if api == "v2" {
		spec = &ratioSpec{baseKey: "drain.tasks_per_s", baseName: "bare asynq drain"}
	}
	b.report.bracket(row{
		ratio: spec,
		Key:   "minimal." + api + "_closes_per_s", Figure: fmt.Sprintf("minimal %s close worker (concurrency %d)", api, b.o.concurrency),
		Value: lr.rate, Unit: "closes/s", Text: thousands(lr.rate) + " closes/s",
		OtherCPUs: lr.use.otherCPUs(), perOpCPU: lr.use.total() / time.Duration(lr.closes),
		Details: fmt.Sprintf("%s closes/s: %d closes in %.2f s; %s; in all processes %s",
			thousands(lr.rate), n, lr.window.Seconds(), lr.use.perClose(lr.closes), perOp(lr.use.total(), lr.closes)),
	})
	return nil
}
