package redistest

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// TestSentinelFailsOver: the helper's topology fails over when its primary
// is killed, and a killed node comes back as a replica. Brought back as the
// README tells operators (replicaof the new primary, replica-priority 0),
// the Sentinels refuse to promote it: the emptied node cannot win a second
// failover and empty the new primary with its full sync.
func TestSentinelFailsOver(t *testing.T) {
	t.Parallel()
	s := StartSentinel(t, SentinelOptions{})
	old := s.Primary.Addr
	if got, err := s.PrimaryAddr(context.Background()); err != nil || got != old {
		t.Fatalf("PrimaryAddr = %s, %v; want %s", got, err, old)
	}
	s.Primary.Kill()
	if s.Primary.PID() != 0 {
		t.Fatal("PID after Kill")
	}
	if got := s.WaitFailover(t, old); got != s.Replicas[0].Addr {
		t.Fatalf("new primary %s, want the replica %s", got, s.Replicas[0].Addr)
	}
	promoted := s.Replicas[0].Addr
	host, port, _ := net.SplitHostPort(promoted)
	s.Primary.Restart(t, "--replicaof", host, port, "--replica-priority", "0")
	if s.Primary.PID() == 0 {
		t.Fatal("no PID after Restart")
	}
	s.Primary.WaitReplicating(t, promoted)
	ctx := context.Background()
	c := s.Sentinels[0].Client()
	defer c.Close()
	waitUntil(t, 30*time.Second, "the Sentinel to see replica-priority 0", func() (bool, string) {
		reps, err := c.Do(ctx, "SENTINEL", "REPLICAS", s.MasterName).Slice()
		if err != nil {
			return false, err.Error()
		}
		for _, r := range reps {
			f := fields(r)
			if f["name"] == old {
				return f["slave-priority"] == "0", fmt.Sprintf("%v", f)
			}
		}
		return false, fmt.Sprintf("%s not among %v", old, reps)
	})
	err := c.Do(ctx, "SENTINEL", "FAILOVER", s.MasterName).Err()
	if err == nil || !strings.Contains(err.Error(), "NOGOODSLAVE") {
		t.Fatalf("SENTINEL FAILOVER with only the emptied node as replica: %v, want NOGOODSLAVE", err)
	}
}

// fields reads one entry of SENTINEL REPLICAS (a flat name, value list).
func fields(entry any) map[string]string {
	f := map[string]string{}
	switch e := entry.(type) {
	case []any:
		for i := 0; i+1 < len(e); i += 2 {
			f[fmt.Sprint(e[i])] = fmt.Sprint(e[i+1])
		}
	case map[any]any:
		for k, v := range e {
			f[fmt.Sprint(k)] = fmt.Sprint(v)
		}
	}
	return f
}

// TestClusterStarts: three masters with a replica each cover every slot.
func TestClusterStarts(t *testing.T) {
	t.Parallel()
	c := StartCluster(t, ClusterOptions{Masters: 3, ReplicasPerMaster: 1})
	m, err := c.Masters(context.Background())
	if err != nil || len(m) != 3 {
		t.Fatalf("Masters = %v, %v; want 3", m, err)
	}
	if len(c.Nodes) != 6 {
		t.Fatalf("%d nodes, want 6", len(c.Nodes))
	}
}
