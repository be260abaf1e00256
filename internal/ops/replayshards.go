package ops

import (
	"context"
	"io"

	"github.com/wxclose/wxclose/tasks"
)

// collectShards collects the archived tasks of q, which for closes means
// the archives of every close queue Redis holds (close_order and its
// shards close_order:<n>, of any WXCLOSE_SHARDS): archived closes stay in
// the queue they failed in, and replay moves each back within its own
// queue, the only move one atomic Redis script can make on a Cluster.
func (c *Client) collectShards(ctx context.Context, q replayQueue, f ReplayFilter, sum *ReplaySummary, errw io.Writer, prog *progress) ([]candidate, error) {
	if q.name != tasks.QueueClose {
		return c.collectArchived(ctx, q, f, sum, errw, prog)
	}
	queues, err := tasks.ExistingCloseQueues(c.inspector)
	if err != nil {
		return nil, err
	}
	var cands []candidate
	for _, name := range queues {
		cs, err := c.collectArchived(ctx, q.in(name), f, sum, errw, prog)
		if err != nil {
			return nil, err
		}
		cands = append(cands, cs...)
	}
	return cands, nil
}

// in returns q for the physical queue name: one shard of the close queue.
func (q replayQueue) in(name string) replayQueue {
	q.name = name
	return q
}
