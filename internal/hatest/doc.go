// Package hatest holds end-to-end tests of wxclose on the Redis
// deployments that outgrow one server: a primary with a replica watched by
// Sentinels (failover while orders are enqueued and closed), a Redis
// Cluster with sharded close queues (WXCLOSE_SHARDS), and a change of the
// number of shards on a live system. Every test starts its own redis-server
// processes on free loopback ports (internal/redistest), the WeChat Pay
// sandbox over real HTTP and in-process workers, and checks the money
// rules: every acknowledged close ends closed, none is attempted before
// creation + 5 minutes.
//
// The package has no code of its own besides these tests.
package hatest
