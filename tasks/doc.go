// Package tasks is wxclose's contract with every other system: the queue
// names, task types, payloads and task ids of close-order and reconciliation
// tasks; the producer API that a checkout service imports to schedule and
// cancel closes; and the asynq handler that turns a WeChat Pay outcome into
// asynq's language (done, retry, postpone, archive).
//
// A checkout service needs only Producer:
//
//	p := tasks.NewProducer(asynq.RedisClientOpt{Addr: "127.0.0.1:6379"}, tasks.ProducerConfig{MchID: "1900000109"})
//	defer p.Close()
//	s, err := p.EnqueueClose(ctx, tasks.CloseOrder{OutTradeNo: "ORDER-1", CreatedAt: createdAt})
//
// The 5-minute rule (WeChat Pay refuses to close an order sooner than five
// minutes after it was created) and the merchant's own deadline (close_at)
// are enforced twice: the producer schedules the task no earlier than the
// later of close_at and creation + 5 minutes + a margin, rounded up to a
// whole second, and the handler refuses to call WeChat Pay before that
// instant, waiting briefly in place or postponing the task without spending a
// retry.
//
// The handler trusts nothing about a task it did not check: the payload is
// decoded strictly (exact, known, single field names; see CheckJSONFields),
// the task id must be the one its order gives (CloseTaskID), and created_at
// may lie at most MaxCreatedAtAhead in the future. A task failing any of
// these is archived at once, with the reason, without calling WeChat Pay.
package tasks
