package hatest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/wxclose/wxclose/internal/config"
	"github.com/wxclose/wxclose/internal/redistest"
	"github.com/wxclose/wxclose/internal/redisurl"
	"github.com/wxclose/wxclose/tasks"
)

const clusterShards = 6

// TestCluster runs wxclose on a 3-master Redis Cluster (one replica each)
// with WXCLOSE_SHARDS=6: orders enqueued through the Go API and the
// enqueue command are spread over all three masters, two workers close
// them all, none early; the operator commands (status, list, cancel,
// replay), the metrics and the dashboard work across the shards; and
// killing a master, whose replica takes over, loses no acknowledged
// enqueue with WXCLOSE_WAIT_REPLICAS=1.
func TestCluster(t *testing.T) {
	c := redistest.StartCluster(t, redistest.ClusterOptions{Masters: 3, ReplicasPerMaster: 1})
	cli := buildEnqueue(t)
	opt, err := redisurl.Parse(c.URL)
	if err != nil {
		t.Fatal(err)
	}
	r := newRig(t)
	layout := config.Layout{Shards: clusterShards, WaitReplicas: 1, WaitTimeout: 500 * time.Millisecond}
	w1 := r.startWorker(t, opt, workerOptions{layout: layout, ui: true})
	w2 := r.startWorker(t, opt, workerOptions{layout: layout})
	p := tasks.NewProducer(opt, tasks.ProducerConfig{MchID: r.creds.MchID, Shards: clusterShards, WaitReplicas: 1, WaitTimeout: 500 * time.Millisecond})
	defer p.Close()
	ctx := context.Background()
	l := newLedger()

	// Go API.
	var goOrders []tasks.CloseOrder
	for _, no := range numbers("GO", 0, 60) {
		goOrders = append(goOrders, r.order(no, 6*time.Second))
	}
	// On a loaded machine a replica may confirm late: what was not
	// acknowledged is sent again, as a producer would.
	l.enqueueAll(ctx, p, goOrders)
	l.retryPending(t, p, 30*time.Second)
	// The enqueue command, configured by the environment as an operator
	// would.
	var lines strings.Builder
	var cliOrders []string
	for _, no := range numbers("CLI", 0, 60) {
		o := r.order(no, 6*time.Second)
		fmt.Fprintf(&lines, `{"out_trade_no":%q,"created_at":%q}`+"\n", no, o.CreatedAt.Format(time.RFC3339Nano))
		cliOrders = append(cliOrders, no)
	}
	// A line that fails (a replica confirming too late on a loaded
	// machine) makes the command exit 1; running the file again is what an
	// operator does, and enqueues only what is missing.
	var out string
	for attempt := 1; ; attempt++ {
		out, err = enqueueCommand(cli, c.URL, r.creds.MchID, lines.String(), "--file", "-", "--quiet")
		if err == nil {
			break
		}
		if attempt == 5 {
			t.Fatalf("enqueue --file failed 5 times: %v\n%s", err, out)
		}
	}
	if !strings.Contains(out, "0 rejected, 0 failed") {
		t.Fatalf("enqueue --file: %s", out)
	}

	// Spread: every master holds close tasks, and together exactly those
	// enqueued.
	perNode := taskKeysPerMaster(t, c)
	total := 0
	for addr, n := range perNode {
		if n == 0 {
			t.Errorf("master %s holds no close task: %v", addr, perNode)
		}
		total += n
	}
	if len(perNode) != 3 || total != 120 {
		t.Fatalf("close task keys per master = %v (total %d), want 120 over 3 masters", perNode, total)
	}
	t.Logf("close task keys per master: %v", perNode)

	// Operator commands across shards.
	if out := runEnqueue(t, cli, c.URL, r.creds.MchID, "", "status", "--out-trade-no", "CLI-7"); !strings.Contains(out, "out_trade_no=CLI-7") {
		t.Fatalf("status: %s", out)
	}
	listed := runEnqueue(t, cli, c.URL, r.creds.MchID, "", "list", "--limit", "1000", "--json")
	for _, q := range tasks.CloseQueues(clusterShards) {
		if !strings.Contains(listed, `"queue": "`+q+`"`) {
			t.Errorf("list shows no task of %s", q)
		}
	}
	cancelled := r.order("CANCEL-1", time.Hour)
	_ = l.enqueue(ctx, p, cancelled)
	l.retryPending(t, p, 30*time.Second)
	runEnqueue(t, cli, c.URL, r.creds.MchID, "", "cancel", "--out-trade-no", "CANCEL-1")
	if _, err := p.LookupClose(ctx, tasks.CloseTaskID(tasks.OrderRef{OutTradeNo: "CANCEL-1", MchID: r.creds.MchID})); !isNoClose(err) {
		t.Fatalf("after cancel: %v", err)
	}
	l.forget("CANCEL-1")
	replayed := r.order("REPLAY-1", 8*time.Second)
	_ = l.enqueue(ctx, p, replayed)
	l.retryPending(t, p, 30*time.Second)
	replayID := tasks.CloseTaskID(tasks.OrderRef{OutTradeNo: "REPLAY-1", MchID: r.creds.MchID})
	insp := asynq.NewInspector(opt)
	defer insp.Close()
	if err := insp.ArchiveTask(tasks.CloseQueue(replayID, clusterShards), replayID); err != nil {
		t.Fatal(err)
	}
	if out := runEnqueue(t, cli, c.URL, r.creds.MchID, "", "replay", "--out-trade-no", "REPLAY-1"); !strings.Contains(out, "1 replayed") {
		t.Fatalf("replay: %s", out)
	}

	// Metrics and the dashboard see every shard.
	metrics := w1.get(t, "/metrics")
	queues := w1.get(t, "/monitoring/api/queues")
	for _, q := range tasks.CloseQueues(clusterShards) {
		if !strings.Contains(metrics, `asynq_queue_size{queue="`+q+`"}`) {
			t.Errorf("/metrics has no asynq_queue_size for %s", q)
		}
		if !strings.Contains(queues, `"queue":"`+q+`"`) {
			t.Errorf("the dashboard lists no queue %s", q)
		}
	}

	// Failover: a master dies while orders are enqueued; its replica takes
	// over. Producers retry what was not acknowledged.
	victim := masterOf(t, c, tasks.ShardQueue(0))
	var foOrders []tasks.CloseOrder
	for _, no := range numbers("FO", 0, 60) {
		foOrders = append(foOrders, r.order(no, 4*time.Second))
	}
	during := make(chan struct{})
	var ackedDuring int
	go func() {
		defer close(during)
		ackedDuring = l.enqueueAll(ctx, p, foOrders)
	}()
	c.Node(victim).Kill()
	<-during
	t.Logf("killed master %s (close_order:0's slot): %d of %d enqueues acknowledged meanwhile, the rest retried", victim, ackedDuring, len(foOrders))
	c.WaitHealthy(t)
	// The promoted replica has no replica of its own, so WAIT 1 cannot be
	// met on its shards until the failed node is back (it rejoins as a
	// replica). Run two replicas per master in production.
	c.Node(victim).Restart(t)
	l.retryPending(t, p, 40*time.Second)
	if lost := l.lost(t, p, r.creds.MchID); len(lost) != 0 {
		t.Fatalf("%d acknowledged enqueues lost in the failover: %v", len(lost), lost)
	}
	all := append(l.ackedNumbers(), cliOrders...)
	r.waitClosed(t, all, 90*time.Second)
	r.requireNoEarlyCalls(t)
	if a1, a2 := w1.attempts.attempts.Load(), w2.attempts.attempts.Load(); a1 == 0 || a2 == 0 {
		t.Fatalf("close attempts per worker: %d and %d; want both workers to close orders", a1, a2)
	}
	if got := w1.w.CloseQueues(); !slices.Equal(got, tasks.CloseQueues(clusterShards)) {
		t.Errorf("worker consumes %v", got)
	}
}

// forget drops an order that was cancelled on purpose.
func (l *ledger) forget(no string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.acked, no)
	delete(l.pending, no)
}

// buildEnqueue builds cmd/enqueue into a temporary directory.
func buildEnqueue(t *testing.T) string {
	t.Helper()
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("the go command is not available to build cmd/enqueue: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "enqueue")
	if out, err := exec.Command(goCmd, "build", "-o", bin, "github.com/wxclose/wxclose/cmd/enqueue").CombinedOutput(); err != nil {
		t.Fatalf("go build cmd/enqueue: %v\n%s", err, out)
	}
	return bin
}

// runEnqueue runs the enqueue command configured through the environment
// and returns its stdout and stderr; it fails the test on a non-zero exit.
func runEnqueue(t *testing.T, bin, redisURL, mchID, stdin string, args ...string) string {
	t.Helper()
	out, err := enqueueCommand(bin, redisURL, mchID, stdin, args...)
	if err != nil {
		t.Fatalf("enqueue %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func enqueueCommand(bin, redisURL, mchID, stdin string, args ...string) (string, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "REDIS_URL="+redisURL, "WECHATPAY_MCHID="+mchID,
		fmt.Sprintf("WXCLOSE_SHARDS=%d", clusterShards), "WXCLOSE_WAIT_REPLICAS=1")
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// taskKeysPerMaster counts the close task hashes on each master.
func taskKeysPerMaster(t *testing.T, c *redistest.Cluster) map[string]int {
	t.Helper()
	ctx := context.Background()
	masters, err := c.Masters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for addr := range masters {
		cl := c.Node(addr).Client()
		n := 0
		iter := cl.Scan(ctx, 0, "asynq:{close_order:*}:t:*", 1000).Iterator()
		for iter.Next(ctx) {
			n++
		}
		cl.Close()
		if err := iter.Err(); err != nil {
			t.Fatal(err)
		}
		counts[addr] = n
	}
	return counts
}

// masterOf returns the address of the master serving queue's hash slot.
func masterOf(t *testing.T, c *redistest.Cluster, queue string) string {
	t.Helper()
	ctx := context.Background()
	cl := c.Nodes[0].Client()
	slot, err := cl.ClusterKeySlot(ctx, "asynq:{"+queue+"}:pending").Result()
	cl.Close()
	if err != nil {
		t.Fatal(err)
	}
	masters, err := c.Masters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for addr, ranges := range masters {
		for _, rg := range ranges {
			if int(slot) >= rg[0] && int(slot) <= rg[1] {
				return addr
			}
		}
	}
	t.Fatalf("no master serves slot %d", slot)
	return ""
}
