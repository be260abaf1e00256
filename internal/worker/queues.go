package worker

// CloseQueues returns the close queues this worker consumes now: every
// shard of WXCLOSE_SHARDS, and the close queues of another shard count that
// still hold closes (see internal/consumer).
func (w *Worker) CloseQueues() []string { return w.server.Queues() }
