package redistest

import (
	"context"
	"testing"
)

// TestSentinelFailsOver: the helper's topology fails over when its primary
// is killed, and a killed node comes back as a replica.
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
	s.Primary.Restart(t)
	if s.Primary.PID() == 0 {
		t.Fatal("no PID after Restart")
	}
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
