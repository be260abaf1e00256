package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// Defaults used when the matching ProducerConfig field is zero. The worker
// uses the same margin and retry budget when its configuration leaves them
// unset (internal/config, internal/closehandler): they are defined here
// once.
const (
	DefaultCloseMargin     = time.Second
	DefaultMaxRetry        = 20
	DefaultCloseRetention  = 24 * time.Hour
	DefaultReconcileRetain = 30 * 24 * time.Hour
	// DefaultCloseTimeout bounds one close attempt; it covers the HTTP
	// timeout (30 s by default) with room to spare.
	DefaultCloseTimeout = 2 * time.Minute
)

// Errors returned by Producer methods; test with errors.Is.
var (
	// ErrNoClose means the order has no close task (never enqueued, or
	// already completed and past its retention).
	ErrNoClose = errors.New("no close task for this order")
	// ErrCloseInProgress means the close is running right now and cannot be
	// cancelled; its outcome will be known in seconds.
	ErrCloseInProgress = errors.New("close is in progress and cannot be cancelled")
	// ErrCloseFinished means the close already completed.
	ErrCloseFinished = errors.New("close already completed")
)

// ProducerConfig configures a Producer. The zero value is usable.
type ProducerConfig struct {
	// MchID fills CloseOrder.MchID when it is empty, so task ids are stable
	// whichever service enqueues. If empty, such orders use the worker's
	// merchant and the "_" merchant segment in their task id.
	MchID string
	// CloseMargin is added after creation + 5 minutes. If zero,
	// DefaultCloseMargin (1 s); negative values count as zero.
	CloseMargin time.Duration
	// MaxRetry is the retry budget stored with each close task. If zero,
	// DefaultMaxRetry (20).
	MaxRetry int
	// Retention keeps a completed close task (and its outcome) so that a
	// late duplicate enqueue is recognised as such. If zero,
	// DefaultCloseRetention (24 h).
	Retention time.Duration
	// ReconcileRetention keeps a completed reconciliation task so the same
	// paid order is never handed to the reconciler twice. If zero,
	// DefaultReconcileRetain (30 days).
	ReconcileRetention time.Duration
	// Now returns the current time. If nil, time.Now.
	Now func() time.Time
	// Shards is the number of close queues (WXCLOSE_SHARDS): with more than
	// one, each close goes to close_order:<CloseShard(id, Shards)> (see
	// CloseQueue). Every producer and worker of one Redis should use the
	// same value. If zero, 1: the one queue close_order.
	Shards int
	// PreviousShards is the number of shards before the last change of
	// Shards. While it is set (keep it for the completed-task retention,
	// 24 h, after a change), EnqueueClose first looks for the order's task
	// in the queue the previous layout gives it and reports a duplicate
	// found there, instead of creating a second task under the new layout;
	// CancelClose and LookupClose look there too. If zero, only the current
	// layout is looked in first (other close queues are searched only when
	// the task is not found there).
	PreviousShards int
	// WaitReplicas makes every enqueue wait until this many replicas of the
	// Redis primary that holds the task have it (Redis WAIT), for at most
	// WaitTimeout. An enqueue that is not replicated in time returns an
	// error wrapping ErrNotReplicated: the task may exist on the primary
	// only and be lost if it fails over, so enqueue again (a duplicate is
	// harmless). Set it to 1 on Sentinel and Cluster deployments with
	// replicas so that a failover loses no acknowledged close. If zero, an
	// enqueue returns as soon as the primary has the task.
	WaitReplicas int
	// WaitTimeout bounds the wait for replicas. Keep it below the Redis
	// client's read timeout (3 s by default). If zero, DefaultWaitTimeout
	// (1 s).
	WaitTimeout time.Duration
}

// DefaultWaitTimeout is ProducerConfig.WaitTimeout when zero.
const DefaultWaitTimeout = time.Second

func (c ProducerConfig) withDefaults() ProducerConfig {
	if c.CloseMargin == 0 {
		c.CloseMargin = DefaultCloseMargin
	}
	c.CloseMargin = max(c.CloseMargin, 0)
	if c.MaxRetry <= 0 {
		c.MaxRetry = DefaultMaxRetry
	}
	if c.Retention <= 0 {
		c.Retention = DefaultCloseRetention
	}
	if c.ReconcileRetention <= 0 {
		c.ReconcileRetention = DefaultReconcileRetain
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Shards == 0 {
		c.Shards = 1
	}
	if c.WaitTimeout <= 0 {
		c.WaitTimeout = DefaultWaitTimeout
	}
	return c
}

// check reports settings no default can repair.
func (c ProducerConfig) check() error {
	if err := ValidateShards("ProducerConfig.Shards", c.Shards); err != nil {
		return fmt.Errorf("tasks: %w", err)
	}
	if c.PreviousShards != 0 {
		if err := ValidateShards("ProducerConfig.PreviousShards", c.PreviousShards); err != nil {
			return fmt.Errorf("tasks: %w", err)
		}
	}
	if c.WaitReplicas < 0 {
		return fmt.Errorf("tasks: ProducerConfig.WaitReplicas must not be negative, not %d", c.WaitReplicas)
	}
	return nil
}

// CloseOrder asks for one order to be closed.
type CloseOrder struct {
	OutTradeNo    string
	TransactionID string
	MchID         string
	SubMchID      string
	SubAppID      string
	// CreatedAt is when the order was created. If zero, now, which is
	// always safe: the close then runs at least 5 minutes from now.
	CreatedAt time.Time
	// CloseAt is the merchant's own deadline (for example its payment
	// timeout). It is stored with the task, which runs at the later of
	// CloseAt and creation + 5 minutes + margin; the worker never closes
	// before it. At most MaxCloseDelay after CreatedAt, and not before it.
	// If zero, as early as WeChat Pay allows.
	CloseAt time.Time
}

// Scheduled reports what EnqueueClose did.
type Scheduled struct {
	TaskID string
	// DueAt is when the close will run (for a duplicate, when the existing
	// task will run next, or zero if it is not waiting to run).
	DueAt time.Time
	// Duplicate is true when the order already had a close task; nothing
	// was changed. It is not an error.
	Duplicate bool
	// State is the existing task's state for a duplicate ("scheduled",
	// "completed", ...), or the new task's state.
	State string
	// Queue is the queue that holds the task: close_order, or its shard
	// (close_order:<n>). For a duplicate found under the previous layout
	// (ProducerConfig.PreviousShards), that layout's queue.
	Queue string
}

// Producer enqueues and cancels close tasks. It is safe for concurrent use.
type Producer struct {
	cfg       ProducerConfig
	cfgErr    error                 // a setting no default repairs; returned by every call
	rdb       redis.UniversalClient // for WAIT (ProducerConfig.WaitReplicas)
	owned     redis.UniversalClient // closed by Close; nil when the caller owns the client
	client    *asynq.Client
	inspector *asynq.Inspector
	locator   closeLocator
	// registered holds the queues EnqueueCloses has added to asynq's set of
	// queues, so that it adds each once, as asynq's own client does.
	registered sync.Map
}

// NewProducer connects to Redis. Call Close when done.
func NewProducer(r asynq.RedisConnOpt, cfg ProducerConfig) *Producer {
	rdb, ok := r.MakeRedisClient().(redis.UniversalClient)
	if !ok {
		panic(fmt.Sprintf("tasks: unsupported RedisConnOpt %T", r))
	}
	p := NewProducerFromRedisClient(rdb, cfg)
	p.owned = rdb
	return p
}

// NewProducerFromRedisClient uses an existing go-redis client, which the
// caller keeps owning (Close does not close it).
//
// rdb may be a single-node client (redis.NewClient), a Sentinel client
// (redis.NewFailoverClient) or a Cluster client (redis.NewClusterClient).
// Invalid settings (Shards or PreviousShards outside 1..MaxShards, a
// negative WaitReplicas) make every call return an error naming the field.
func NewProducerFromRedisClient(rdb redis.UniversalClient, cfg ProducerConfig) *Producer {
	cfg = cfg.withDefaults()
	insp := asynq.NewInspectorFromRedisClient(rdb)
	return &Producer{
		cfg:       cfg,
		cfgErr:    cfg.check(),
		rdb:       rdb,
		client:    asynq.NewClientFromRedisClient(rdb),
		inspector: insp,
		locator:   closeLocator{insp: insp, rdb: rdb, shards: cfg.Shards, previous: cfg.PreviousShards},
	}
}

// Close releases the Redis connections the Producer opened.
func (p *Producer) Close() error {
	if p.owned != nil {
		return p.owned.Close()
	}
	return nil
}

// Payload returns the validated payload EnqueueClose would store for o, and
// when the close is due. It does not touch Redis.
func (p *Producer) Payload(o CloseOrder) (ClosePayload, time.Time, error) {
	now := p.cfg.Now()
	if o.CreatedAt.IsZero() {
		o.CreatedAt = now
	}
	if o.MchID == "" {
		o.MchID = p.cfg.MchID
	}
	pl := ClosePayload{
		OutTradeNo: o.OutTradeNo, TransactionID: o.TransactionID,
		MchID: o.MchID, SubMchID: o.SubMchID, SubAppID: o.SubAppID,
		CreatedAt: o.CreatedAt, CloseAt: o.CloseAt,
	}
	if err := pl.ValidateAt(now); err != nil {
		return ClosePayload{}, time.Time{}, err
	}
	return pl, pl.DueAt(p.cfg.CloseMargin), nil
}

// EnqueueClose schedules the close of one order. Enqueuing an order that
// already has a close task is not an error: it returns Duplicate = true and
// leaves the existing task alone.
func (p *Producer) EnqueueClose(ctx context.Context, o CloseOrder) (Scheduled, error) {
	pl, due, err := p.Payload(o)
	if err != nil {
		return Scheduled{}, err
	}
	return p.enqueueClose(ctx, pl, due)
}

// RequeueClose enqueues a stored payload again, as replay does: the due time
// is recomputed from its created_at and close_at, so a replayed task still
// respects the 5-minute rule and the merchant's deadline.
func (p *Producer) RequeueClose(ctx context.Context, pl ClosePayload) (Scheduled, error) {
	if err := pl.Validate(); err != nil {
		return Scheduled{}, err
	}
	return p.enqueueClose(ctx, pl, pl.DueAt(p.cfg.CloseMargin))
}

func (p *Producer) enqueueClose(ctx context.Context, pl ClosePayload, due time.Time) (Scheduled, error) {
	if p.cfgErr != nil {
		return Scheduled{}, p.cfgErr
	}
	data, err := json.Marshal(pl)
	if err != nil {
		return Scheduled{}, fmt.Errorf("encode close payload: %w", err)
	}
	id := CloseTaskID(pl.Ref())
	queue := CloseQueue(id, p.cfg.Shards)
	if p.cfg.PreviousShards > 0 {
		// asynq recognises a task id within one queue only: after a change
		// of the number of shards, the order's first task may sit in the
		// queue of the previous layout.
		if prev := CloseQueue(id, p.cfg.PreviousShards); prev != queue {
			// One EXISTS in the common case (no task there); the task's
			// details only for a duplicate.
			held, err := p.locator.holding(ctx, id, []string{prev})
			if err != nil {
				return Scheduled{}, fmt.Errorf("enqueue close %s: look in the previous layout's %s: %w", id, prev, err)
			}
			if len(held) > 0 {
				s := Scheduled{TaskID: id, Duplicate: true, Queue: prev}
				if info, err := p.inspector.GetTaskInfo(prev, id); err == nil {
					s.DueAt, s.State = info.NextProcessAt, info.State.String()
				}
				return s, p.waitReplicated(ctx, prev, id)
			}
		}
	}
	// The header records when the task became runnable: for an order
	// enqueued after its due time (a late producer, a replay) that is now,
	// so lateness measures the worker, not the producer.
	runnable := due
	if now := p.cfg.Now(); now.After(due) {
		runnable = now
	}
	task := asynq.NewTaskWithHeaders(TypeClose, data, map[string]string{HeaderDue: FormatDue(runnable)})
	info, err := p.client.EnqueueContext(ctx, task,
		asynq.Queue(queue),
		asynq.TaskID(id),
		asynq.ProcessAt(due),
		asynq.MaxRetry(p.cfg.MaxRetry),
		asynq.Timeout(DefaultCloseTimeout),
		asynq.Retention(p.cfg.Retention),
	)
	switch {
	case err == nil:
		s := Scheduled{TaskID: id, DueAt: due, State: info.State.String(), Queue: queue}
		return s, p.waitReplicated(ctx, queue, id)
	case errors.Is(err, asynq.ErrTaskIDConflict):
		s := Scheduled{TaskID: id, Duplicate: true, Queue: queue}
		if existing, ierr := p.inspector.GetTaskInfo(queue, id); ierr == nil {
			s.DueAt, s.State = existing.NextProcessAt, existing.State.String()
		}
		// The first enqueue may have failed its own wait (and returned an
		// error): this one is acknowledged only once the task is replicated.
		return s, p.waitReplicated(ctx, queue, id)
	default:
		return Scheduled{}, fmt.Errorf("enqueue close %s: %w", id, err)
	}
}

// EnqueueReconcile hands a paid order to the reconciliation queue, at most
// once per order: it reports duplicate = true when the order already has a
// reconciliation task (waiting, or completed within ReconcileRetention).
func (p *Producer) EnqueueReconcile(ctx context.Context, rp ReconcilePayload) (duplicate bool, err error) {
	if p.cfgErr != nil {
		return false, p.cfgErr
	}
	data, err := json.Marshal(rp)
	if err != nil {
		return false, fmt.Errorf("encode reconcile payload: %w", err)
	}
	ref := OrderRef{OutTradeNo: rp.OutTradeNo, TransactionID: rp.TransactionID, MchID: rp.MchID, SubMchID: rp.SubMchID}
	id := ReconcileTaskID(ref)
	_, err = p.client.EnqueueContext(ctx, asynq.NewTask(TypeReconcile, data),
		asynq.Queue(QueueReconcile),
		asynq.TaskID(id),
		asynq.MaxRetry(DefaultMaxRetry),
		asynq.Retention(p.cfg.ReconcileRetention),
	)
	if errors.Is(err, asynq.ErrTaskIDConflict) {
		duplicate, err = true, nil
	}
	if err != nil {
		return false, fmt.Errorf("enqueue reconcile %s: %w", id, err)
	}
	// On a Cluster the reconciliation queue and the close shard live on
	// different nodes, with separate replication streams: the hand-off must
	// be replicated before the close completes, or a failover could keep
	// the completed close and lose the paid order's hand-off.
	return duplicate, p.waitReplicated(ctx, QueueReconcile, id)
}

// CancelClose removes the close task of an order whose payment was
// confirmed, whatever state it waits in (scheduled, pending, retry or
// archived). It returns ErrNoClose if there is none, ErrCloseInProgress if it
// is running, and ErrCloseFinished if it already completed.
//
// The task is looked for as LookupClose does. After a change of the number
// of shards an order may have a copy under each layout; every copy found
// waiting is removed, and a running or completed copy decides the answer.
func (p *Producer) CancelClose(ctx context.Context, r OrderRef) error {
	if p.cfgErr != nil {
		return p.cfgErr
	}
	if r.MchID == "" {
		r.MchID = p.cfg.MchID
	}
	if err := r.Validate(); err != nil {
		return err
	}
	id := CloseTaskID(r)
	copies, err := p.locator.find(ctx, id)
	if err != nil {
		return err
	}
	var active, completed, deleted bool
	for _, info := range copies {
		switch info.State {
		case asynq.TaskStateActive:
			active = true
			continue
		case asynq.TaskStateCompleted:
			completed = true
			continue
		}
		switch err := p.inspector.DeleteTask(info.Queue, id); {
		case err == nil:
			deleted = true
		case errors.Is(err, asynq.ErrTaskNotFound):
		default:
			// The task became active between the lookup and the delete.
			if info2, ierr := p.inspector.GetTaskInfo(info.Queue, id); ierr == nil && info2.State == asynq.TaskStateActive {
				active = true
				continue
			}
			return fmt.Errorf("delete %s from %s: %w", id, info.Queue, err)
		}
	}
	switch {
	case active:
		return fmt.Errorf("%s: %w", id, ErrCloseInProgress)
	case completed:
		return fmt.Errorf("%s: %w", id, ErrCloseFinished)
	case !deleted:
		return fmt.Errorf("%s: %w", id, ErrNoClose)
	}
	return nil
}

// LookupClose returns the close task with the given id: from the queue the
// producer's layout (Shards) gives it, else from the queue of the previous
// layout (PreviousShards), else from any other close queue Redis knows, so
// that a task enqueued under another number of shards is found too. When an
// order has copies under two layouts, the one that says most is returned
// (running, then waiting, then completed, then archived). It returns an
// error wrapping ErrNoClose when no close queue holds the task.
//
// The operator commands (enqueue status) and the HTTP API (GET
// /v1/closes/{task_id}) use it, so every reader finds a task the same way.
func (p *Producer) LookupClose(ctx context.Context, taskID string) (*asynq.TaskInfo, error) {
	if p.cfgErr != nil {
		return nil, p.cfgErr
	}
	copies, err := p.locator.find(ctx, taskID)
	if err != nil {
		return nil, err
	}
	return preferred(copies), nil
}

// ErrNotReplicated means Redis accepted a task but fewer replicas than
// ProducerConfig.WaitReplicas confirmed it within WaitTimeout (or the task
// was gone when they were asked): a failover could lose it. The enqueue was
// not acknowledged; enqueue again.
var ErrNotReplicated = errors.New("task not confirmed by enough Redis replicas")

// waitReplicated returns once WaitReplicas replicas have the task id of
// queue, or an error wrapping ErrNotReplicated.
//
// Redis's WAIT counts the replicas that acknowledged the last write of the
// connection it is sent on, and asynq's client gives no access to that
// connection. So one pipeline on one connection to the node holding the
// queue checks that the task exists, writes a probe key in the queue's hash
// slot, and waits for that write: replication is one ordered stream per
// node, so a replica that has the probe has the task too. Checking
// existence on that node catches the failover in between, where the node
// now answering is a promoted replica that never had the task.
func (p *Producer) waitReplicated(ctx context.Context, queue, id string) error {
	if p.cfg.WaitReplicas <= 0 {
		return nil
	}
	probe := replicationProbeKey(queue)
	var node *redis.Client
	switch c := p.rdb.(type) {
	case *redis.ClusterClient:
		var err error
		if node, err = c.MasterForKey(ctx, probe); err != nil {
			return fmt.Errorf("%s: find the Redis node of %s: %w: %w", id, queue, err, ErrNotReplicated)
		}
	case *redis.Client:
		node = c
	default:
		return fmt.Errorf("%s: ProducerConfig.WaitReplicas needs a single-node, Sentinel or Cluster client, not %T: %w", id, p.rdb, ErrNotReplicated)
	}
	pipe := node.Pipeline()
	exists := pipe.Exists(ctx, taskKey(queue, id))
	pipe.Set(ctx, probe, "1", time.Minute)
	acked := pipe.Do(ctx, "WAIT", p.cfg.WaitReplicas, p.cfg.WaitTimeout.Milliseconds())
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("%s: wait for %d replica(s): %w: %w", id, p.cfg.WaitReplicas, err, ErrNotReplicated)
	}
	if exists.Val() == 0 {
		return fmt.Errorf("%s: the task is no longer on the primary of %s (a failover?): %w", id, queue, ErrNotReplicated)
	}
	if n, _ := acked.Int64(); n < int64(p.cfg.WaitReplicas) {
		return fmt.Errorf("%s: %d of %d replica(s) confirmed it within %v: %w", id, n, p.cfg.WaitReplicas, p.cfg.WaitTimeout, ErrNotReplicated)
	}
	return nil
}
