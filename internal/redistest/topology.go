package redistest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// Topologies: a primary with replicas watched by Sentinels, and a Redis
// Cluster, each made of private redis-server processes on free loopback
// ports, without persistence, stopped by PID in tb.Cleanup (and, on Linux,
// killed by the kernel if the test binary dies). Tests kill and restart
// single nodes to fail them over.
//
// They need real binaries: redis-server, plus redis-sentinel (Debian's
// redis-sentinel package) or redis-cli (redis-tools, for
// redis-cli --cluster create). RequireTopology decides what a test does
// without them: with WXCLOSE_TEST_REDIS=server (CI) a missing binary fails
// the test; otherwise the test is skipped with the reason logged.

// RequireTopology returns the paths of the binaries named (redis-server,
// redis-sentinel, redis-cli), or skips or fails tb as the package
// documentation describes. Topologies cannot run on the embedded store or
// on an external server, so those settings of WXCLOSE_TEST_REDIS skip.
func RequireTopology(tb testing.TB, bins ...string) map[string]string {
	tb.Helper()
	m, err := parseMode(os.Getenv(EnvVar))
	if err != nil {
		tb.Fatal(err)
	}
	switch m.kind {
	case modeEmbedded:
		tb.Skipf("redistest: %s=embedded: this test needs real redis-server processes (replication, Sentinel or Cluster)", EnvVar)
	case modeExternal:
		tb.Skipf("redistest: %s names an external server: this test starts its own replicated or clustered redis-server processes and cannot use it", EnvVar)
	}
	paths := map[string]string{}
	for _, b := range bins {
		p, err := exec.LookPath(b)
		if err != nil {
			if m.kind == modeServer {
				tb.Fatalf("redistest: %s=server but %s is not on PATH: install it (Debian: apt-get install redis-server redis-sentinel redis-tools) or unset %[1]s", EnvVar, b)
			}
			tb.Skipf("redistest: %s is not installed (not found on PATH); this test needs it. Debian: apt-get install redis-server redis-sentinel redis-tools", b)
		}
		paths[b] = p
	}
	return paths
}

// Node is one redis-server (or Sentinel) process of a topology.
type Node struct {
	// Addr is 127.0.0.1:Port.
	Addr string
	Port int

	bin  string
	dir  string
	args []string

	mu   sync.Mutex
	proc *process // nil while killed
}

// PID returns the process id, or 0 while the node is killed.
func (n *Node) PID() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.proc == nil {
		return 0
	}
	return n.proc.cmd.Process.Pid
}

// Kill stops the node with SIGKILL, as a crash would, and waits for it to
// exit. What it had not replicated is gone.
func (n *Node) Kill() {
	n.mu.Lock()
	p := n.proc
	n.proc = nil
	n.mu.Unlock()
	if p != nil {
		p.stop()
	}
}

// Restart starts a killed node again on the same port and directory, with
// no data (there is no persistence): a Sentinel or the Cluster then makes
// it a replica of the node that took over. extra are more redis-server
// arguments for this start only, such as "--replica-priority", "0".
func (n *Node) Restart(tb testing.TB, extra ...string) {
	tb.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.proc != nil {
		tb.Fatalf("redistest: Restart of %s, which is running", n.Addr)
	}
	var err error
	deadline := time.Now().Add(10 * time.Second)
	for {
		n.proc, err = launchArgs(n.bin, n.dir, n.Port, append(slices.Clone(n.args), extra...)...)
		// A killed server's port can linger for a moment; another process
		// taking it meanwhile would need a new port, which a topology
		// cannot change.
		if err == nil || !errors.Is(err, errPortTaken) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		tb.Fatalf("redistest: restarting %s: %v", n.Addr, err)
	}
}

// Client returns a new client of this node alone (not following
// failovers); the caller closes it.
func (n *Node) Client() *redis.Client {
	return redis.NewClient(&redis.Options{Addr: n.Addr, MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: 3 * time.Second})
}

func (n *Node) stop() { n.Kill() }

// startNode launches a node on a free port with the arguments args gives
// for that port, retrying with another port if the first is taken.
func startNode(tb testing.TB, bin, dir string, args func(port int) []string) *Node {
	tb.Helper()
	var err error
	for range 5 {
		var port int
		if port, err = freePort(); err != nil {
			break
		}
		n := &Node{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Port: port, bin: bin, dir: dir, args: args(port)}
		var p *process
		p, err = launchArgs(bin, dir, port, n.args...)
		if errors.Is(err, errPortTaken) {
			continue
		}
		if err != nil {
			break
		}
		n.proc = p
		tb.Cleanup(n.stop)
		return n
	}
	tb.Fatalf("redistest: starting %s: %v", bin, err)
	return nil
}

// serverArgs are the settings of every data node: loopback, no
// persistence, logs to the process log file.
func serverArgs(port int, dir string, extra ...string) []string {
	return append([]string{
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", dir,
		"--daemonize", "no", "--logfile", "",
	}, extra...)
}

// Sentinel is a primary, its replicas and the Sentinels watching them.
type Sentinel struct {
	Primary   *Node
	Replicas  []*Node
	Sentinels []*Node
	// MasterName is the name the Sentinels monitor the primary under.
	MasterName string
	// URL is the redis-sentinel:// URL of the Sentinels, as REDIS_URL
	// takes it.
	URL string
}

// SentinelOptions shapes StartSentinel's topology. Zero values give one
// replica, three Sentinels, quorum 2, a primary declared down after 1 s.
type SentinelOptions struct {
	Replicas  int
	Sentinels int
	// DownAfter is how long the primary must be unreachable before a
	// Sentinel considers it down. If zero, 1 s.
	DownAfter time.Duration
	// ServerArgs are added to every data node's command line, for example
	// "--min-replicas-to-write", "1".
	ServerArgs []string
}

// ConnOpt returns the Sentinel connection option asynq takes.
func (s *Sentinel) ConnOpt() asynq.RedisFailoverClientOpt {
	addrs := make([]string, len(s.Sentinels))
	for i, n := range s.Sentinels {
		addrs[i] = n.Addr
	}
	return asynq.RedisFailoverClientOpt{MasterName: s.MasterName, SentinelAddrs: addrs}
}

// StartSentinel starts a primary, its replicas and Sentinels, and returns
// once the replicas are in sync and every Sentinel knows the replicas and
// the other Sentinels, so that a failover can start at once.
func StartSentinel(tb testing.TB, o SentinelOptions) *Sentinel {
	tb.Helper()
	bins := RequireTopology(tb, "redis-server", "redis-sentinel")
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.Sentinels == 0 {
		o.Sentinels = 3
	}
	if o.DownAfter == 0 {
		o.DownAfter = time.Second
	}
	s := &Sentinel{MasterName: "wxclose"}
	dir := tb.TempDir()
	s.Primary = startNode(tb, bins["redis-server"], dir, func(port int) []string {
		return serverArgs(port, dir, o.ServerArgs...)
	})
	for range o.Replicas {
		dir := tb.TempDir()
		n := startNode(tb, bins["redis-server"], dir, func(port int) []string {
			return serverArgs(port, dir, append([]string{"--replicaof", "127.0.0.1", strconv.Itoa(s.Primary.Port)}, o.ServerArgs...)...)
		})
		s.Replicas = append(s.Replicas, n)
	}
	quorum := o.Sentinels/2 + 1
	for range o.Sentinels {
		dir := tb.TempDir()
		n := startNode(tb, bins["redis-sentinel"], dir, func(port int) []string {
			// Sentinel rewrites its configuration file: it lives in the
			// node's own directory.
			conf := filepath.Join(dir, "sentinel.conf")
			m := s.MasterName
			body := strings.Join([]string{
				"port " + strconv.Itoa(port), "bind 127.0.0.1", "dir " + dir, "daemonize no", `logfile ""`,
				fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d %d", m, s.Primary.Port, quorum),
				fmt.Sprintf("sentinel down-after-milliseconds %s %d", m, o.DownAfter.Milliseconds()),
				fmt.Sprintf("sentinel failover-timeout %s 5000", m),
				fmt.Sprintf("sentinel parallel-syncs %s 1", m),
			}, "\n") + "\n"
			if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
				tb.Fatal(err)
			}
			return []string{conf}
		})
		s.Sentinels = append(s.Sentinels, n)
	}
	addrs := make([]string, len(s.Sentinels))
	for i, n := range s.Sentinels {
		addrs[i] = n.Addr
	}
	s.URL = "redis-sentinel://" + strings.Join(addrs, ",") + "?master=" + s.MasterName
	s.waitReady(tb, o.Replicas)
	return s
}

// waitReady waits until the replicas are in sync and the Sentinels know
// each other and the replicas.
func (s *Sentinel) waitReady(tb testing.TB, replicas int) {
	tb.Helper()
	ctx := context.Background()
	waitUntil(tb, 30*time.Second, "replicas in sync", func() (bool, string) {
		for _, r := range s.Replicas {
			c := r.Client()
			info, err := c.Info(ctx, "replication").Result()
			c.Close()
			if err != nil || infoField(info, "master_link_status") != "up" {
				return false, fmt.Sprintf("%s: %v %s", r.Addr, err, infoField(info, "master_link_status"))
			}
		}
		return true, ""
	})
	waitUntil(tb, 30*time.Second, "Sentinels to discover each other and the replicas", func() (bool, string) {
		for _, n := range s.Sentinels {
			c := n.Client()
			others, err1 := c.Do(ctx, "SENTINEL", "SENTINELS", s.MasterName).Slice()
			reps, err2 := c.Do(ctx, "SENTINEL", "REPLICAS", s.MasterName).Slice()
			c.Close()
			if err1 != nil || err2 != nil || len(others) < len(s.Sentinels)-1 || len(reps) < replicas {
				return false, fmt.Sprintf("sentinel %s knows %d sentinels, %d replicas (%v %v)", n.Addr, len(others), len(reps), err1, err2)
			}
		}
		return true, ""
	})
}

// PrimaryAddr asks the Sentinels which node is the primary now.
func (s *Sentinel) PrimaryAddr(ctx context.Context) (string, error) {
	var lastErr error
	for _, n := range s.Sentinels {
		if n.PID() == 0 {
			continue
		}
		addr, err := s.primaryNamedBy(ctx, n)
		if err == nil {
			return addr, nil
		}
		lastErr = err
	}
	return "", fmt.Errorf("no Sentinel named the primary: %w", lastErr)
}

// primaryNamedBy asks the Sentinel n which node is the primary.
func (s *Sentinel) primaryNamedBy(ctx context.Context, n *Node) (string, error) {
	c := n.Client()
	defer c.Close()
	addr, err := c.Do(ctx, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", s.MasterName).StringSlice()
	if err != nil {
		return "", fmt.Errorf("the Sentinel at %s: %w", n.Addr, err)
	}
	if len(addr) != 2 {
		return "", fmt.Errorf("the Sentinel at %s named no primary (%v)", n.Addr, addr)
	}
	return net.JoinHostPort(addr[0], addr[1]), nil
}

// Log returns the end of the node's log (its stdout and stderr), for a
// failure message.
func (n *Node) Log() string {
	return string(readLog(filepath.Join(n.dir, fmt.Sprintf("redis-%d.log", n.Port))))
}

// WaitFailover waits until every running Sentinel names the same primary,
// other than old, and that node answers as a primary. One Sentinel is not
// enough: the others learn of the failover a moment later, and a client
// that asks one of them meanwhile is sent to old, which, restarted empty,
// answers as a primary until the Sentinels make it a replica.
func (s *Sentinel) WaitFailover(tb testing.TB, old string) string {
	tb.Helper()
	var addr string
	defer func() {
		if addr == "" { // waitUntil failed the test
			for _, n := range append(append([]*Node{}, s.Sentinels...), s.Replicas...) {
				tb.Logf("log of %s:\n%s", n.Addr, n.Log())
			}
		}
	}()
	waitUntil(tb, 60*time.Second, "every Sentinel to name a promoted replica", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		a, err := s.agreedPrimary(ctx)
		if err != nil || a == old {
			return false, fmt.Sprintf("primary %s (%v)", a, err)
		}
		c := redis.NewClient(&redis.Options{Addr: a, MaxRetries: -1})
		defer c.Close()
		info, err := c.Info(ctx, "replication").Result()
		if err != nil || infoField(info, "role") != "master" {
			return false, fmt.Sprintf("%s is not a primary yet (%v)", a, err)
		}
		addr = a
		return true, ""
	})
	return addr
}

// agreedPrimary returns the primary every running Sentinel names, or an
// error saying how they differ.
func (s *Sentinel) agreedPrimary(ctx context.Context) (string, error) {
	var agreed string
	for _, n := range s.Sentinels {
		if n.PID() == 0 {
			continue
		}
		a, err := s.primaryNamedBy(ctx, n)
		if err != nil {
			return "", err
		}
		if agreed != "" && a != agreed {
			return "", fmt.Errorf("the Sentinels disagree: %s and %s", agreed, a)
		}
		agreed = a
	}
	if agreed == "" {
		return "", errors.New("no Sentinel is running")
	}
	return agreed, nil
}

// WaitReplicating waits until n replicates primary with its link up: after
// a failed primary is restarted, until then it answers as a primary of its
// own (empty) data.
func (n *Node) WaitReplicating(tb testing.TB, primary string) {
	tb.Helper()
	host, port, _ := net.SplitHostPort(primary)
	waitUntil(tb, 60*time.Second, n.Addr+" to replicate "+primary, func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c := n.Client()
		defer c.Close()
		info, err := c.Info(ctx, "replication").Result()
		if err != nil {
			return false, err.Error()
		}
		ok := infoField(info, "role") == "slave" && infoField(info, "master_host") == host &&
			infoField(info, "master_port") == port && infoField(info, "master_link_status") == "up"
		return ok, "replication: " + strings.Join(strings.Fields(info), " ")
	})
}

// Cluster is a Redis Cluster of masters, each with its replicas.
type Cluster struct {
	Nodes []*Node
	// URL is the redis-cluster:// URL of every node, as REDIS_URL takes it.
	URL string
}

// ClusterOptions shapes StartCluster's cluster. Zero values give three
// masters without replicas.
type ClusterOptions struct {
	Masters           int
	ReplicasPerMaster int
	// NodeTimeout is cluster-node-timeout: how long a master may be
	// unreachable before its replica takes over. If zero, 1 s.
	NodeTimeout time.Duration
}

// ConnOpt returns the Cluster connection option asynq takes.
func (c *Cluster) ConnOpt() asynq.RedisClusterClientOpt {
	addrs := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		addrs[i] = n.Addr
	}
	return asynq.RedisClusterClientOpt{Addrs: addrs}
}

// StartCluster starts the nodes with cluster-enabled, joins them with
// redis-cli --cluster create (masters get equal slot ranges, replicas are
// assigned by redis-cli), and returns once every node reports the cluster
// ok.
func StartCluster(tb testing.TB, o ClusterOptions) *Cluster {
	tb.Helper()
	bins := RequireTopology(tb, "redis-server", "redis-cli")
	if o.Masters == 0 {
		o.Masters = 3
	}
	if o.NodeTimeout == 0 {
		o.NodeTimeout = time.Second
	}
	c := &Cluster{}
	total := o.Masters * (1 + o.ReplicasPerMaster)
	for range total {
		dir := tb.TempDir()
		n := startNode(tb, bins["redis-server"], dir, func(port int) []string {
			return serverArgs(port, dir, "--cluster-enabled", "yes",
				"--cluster-config-file", filepath.Join(dir, "nodes.conf"),
				"--cluster-node-timeout", strconv.FormatInt(o.NodeTimeout.Milliseconds(), 10),
				// A restarted, empty node must rejoin as a replica, never
				// serve its old slots empty: it gets no votes for that, and
				// the cluster stops rather than answer for lost slots.
				"--cluster-require-full-coverage", "yes")
		})
		c.Nodes = append(c.Nodes, n)
	}
	args := []string{"--cluster", "create"}
	addrs := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		addrs[i] = n.Addr
	}
	args = append(args, addrs...)
	args = append(args, "--cluster-replicas", strconv.Itoa(o.ReplicasPerMaster), "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, bins["redis-cli"], args...).CombinedOutput(); err != nil {
		tb.Fatalf("redistest: redis-cli --cluster create: %v\n%s", err, out)
	}
	c.URL = "redis-cluster://" + strings.Join(addrs, ",")
	c.WaitHealthy(tb)
	return c
}

// WaitHealthy waits until every running node reports cluster_state:ok,
// the running masters cover all 16,384 slots, and every running replica is
// in sync with its master.
func (c *Cluster) WaitHealthy(tb testing.TB) {
	tb.Helper()
	ctx := context.Background()
	waitUntil(tb, 60*time.Second, "the cluster to be ok", func() (bool, string) {
		for _, n := range c.Nodes {
			if n.PID() == 0 {
				continue
			}
			cl := n.Client()
			info, err := cl.ClusterInfo(ctx).Result()
			cl.Close()
			if err != nil || infoField(info, "cluster_state") != "ok" || infoField(info, "cluster_slots_ok") != "16384" {
				return false, fmt.Sprintf("%s: %v %q", n.Addr, err, infoField(info, "cluster_state"))
			}
			cl = n.Client()
			repl, err := cl.Info(ctx, "replication").Result()
			cl.Close()
			if err != nil || infoField(repl, "role") == "slave" && infoField(repl, "master_link_status") != "up" {
				return false, fmt.Sprintf("replica %s: %v link %q", n.Addr, err, infoField(repl, "master_link_status"))
			}
		}
		return true, ""
	})
}

// Masters returns the running nodes that are masters now, with the slot
// ranges each serves, as the nodes themselves report.
func (c *Cluster) Masters(ctx context.Context) (map[string][][2]int, error) {
	for _, n := range c.Nodes {
		if n.PID() == 0 {
			continue
		}
		cl := n.Client()
		shards, err := cl.ClusterShards(ctx).Result()
		cl.Close()
		if err != nil {
			continue
		}
		m := map[string][][2]int{}
		for _, sh := range shards {
			for _, node := range sh.Nodes {
				if node.Role != "master" || node.Health != "online" {
					continue
				}
				addr := net.JoinHostPort(node.IP, strconv.FormatInt(node.Port, 10))
				for _, r := range sh.Slots {
					m[addr] = append(m[addr], [2]int{int(r.Start), int(r.End)})
				}
			}
		}
		return m, nil
	}
	return nil, errors.New("no running node answered CLUSTER SHARDS")
}

// Node returns the node with the given address, or nil.
func (c *Cluster) Node(addr string) *Node {
	for _, n := range c.Nodes {
		if n.Addr == addr {
			return n
		}
	}
	return nil
}

// Signal sends sig to the node's process (for example SIGSTOP and SIGCONT
// to freeze it), by PID.
func (n *Node) Signal(sig syscall.Signal) error {
	pid := n.PID()
	if pid == 0 {
		return errors.New("node is not running")
	}
	return syscall.Kill(pid, sig)
}

// waitUntil polls cond until it holds; the deadline only bounds a broken
// setup, and the last state cond reported is in the failure.
func waitUntil(tb testing.TB, limit time.Duration, what string, cond func() (bool, string)) {
	tb.Helper()
	deadline := time.Now().Add(limit)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("redistest: timed out after %v waiting for %s: %s", limit, what, state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
