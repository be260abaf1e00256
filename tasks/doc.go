// Package tasks is wxclose's contract with every other system, and the
// producer a checkout service imports to schedule and cancel closes:
//
//   - the queue names, task types, payloads (ClosePayload, ReconcilePayload)
//     and task ids (CloseTaskID, ReconcileTaskID) of close-order and
//     reconciliation tasks, with their validation (strict decoding,
//     CheckJSONFields) and limits (MaxCreatedAtAhead, MaxCloseDelay);
//   - the record the worker stores with each close task: the CloseResult of
//     a completed close, or the CloseFailure of its last failed attempt, with
//     the Outcome* and Class* strings they contain (ReadCloseRecord reads
//     either as the task's state requires: a plain close stores none, see
//     CloseResult.NeedsRecord);
//   - Producer, which enqueues, requeues and cancels closes.
//
// A checkout service needs only Producer:
//
//	p := tasks.NewProducer(asynq.RedisClientOpt{Addr: "127.0.0.1:6379"}, tasks.ProducerConfig{MchID: "1900000109"})
//	defer p.Close()
//	s, err := p.EnqueueClose(ctx, tasks.CloseOrder{OutTradeNo: "ORDER-1", CreatedAt: createdAt})
//
// and tasks/taskstest helps it test that use against its own Redis.
//
// The package depends on asynq, go-redis and the standard library only (a
// test keeps it so): importing it does not link the WeChat Pay client, the
// worker's logger or its retry policy. The handler that runs close tasks
// lives with the worker, in internal/closehandler.
//
// The 5-minute rule (WeChat Pay refuses to close an order sooner than five
// minutes after it was created) and the merchant's own deadline (close_at)
// are enforced twice: the producer schedules the task no earlier than the
// later of close_at and creation + 5 minutes + a margin, rounded up to a
// whole second (DueAt), and the worker's handler refuses to call WeChat Pay
// before that instant (NotBefore plus its own margin).
//
// Every reader of a close task trusts nothing it did not check: payloads are
// decoded strictly (exact, known, single field names; see CheckJSONFields),
// the task id must be the one its order gives (CloseTaskID), and created_at
// may lie at most MaxCreatedAtAhead in the future. The worker archives a
// task failing any of these at once, with the reason, without calling WeChat
// Pay. Identifiers follow one set of rules shared with the worker's
// configuration and the WeChat Pay client (internal/ids).
package tasks
