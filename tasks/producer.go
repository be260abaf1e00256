package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// HeaderDueAt is the task header that records when a close became due to
// run (RFC 3339): its due time, or the enqueue time for an order enqueued
// after its due time. The worker measures how late it started from it.
const HeaderDueAt = "wxclose-due-at"

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
}

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
	return c
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
}

// Producer enqueues and cancels close tasks. It is safe for concurrent use.
type Producer struct {
	cfg       ProducerConfig
	owned     redis.UniversalClient // closed by Close; nil when the caller owns the client
	client    *asynq.Client
	inspector *asynq.Inspector
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
func NewProducerFromRedisClient(rdb redis.UniversalClient, cfg ProducerConfig) *Producer {
	return &Producer{
		cfg:       cfg.withDefaults(),
		client:    asynq.NewClientFromRedisClient(rdb),
		inspector: asynq.NewInspectorFromRedisClient(rdb),
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
	data, err := json.Marshal(pl)
	if err != nil {
		return Scheduled{}, fmt.Errorf("encode close payload: %w", err)
	}
	id := CloseTaskID(pl.Ref())
	// The header records when the task became runnable: for an order
	// enqueued after its due time (a late producer, a replay) that is now,
	// so lateness measures the worker, not the producer.
	runnable := due
	if now := p.cfg.Now(); now.After(due) {
		runnable = now
	}
	task := asynq.NewTaskWithHeaders(TypeClose, data, map[string]string{HeaderDueAt: runnable.UTC().Format(time.RFC3339Nano)})
	info, err := p.client.EnqueueContext(ctx, task,
		asynq.Queue(QueueClose),
		asynq.TaskID(id),
		asynq.ProcessAt(due),
		asynq.MaxRetry(p.cfg.MaxRetry),
		asynq.Timeout(DefaultCloseTimeout),
		asynq.Retention(p.cfg.Retention),
	)
	switch {
	case err == nil:
		return Scheduled{TaskID: id, DueAt: due, State: info.State.String()}, nil
	case errors.Is(err, asynq.ErrTaskIDConflict):
		s := Scheduled{TaskID: id, Duplicate: true}
		if existing, ierr := p.inspector.GetTaskInfo(QueueClose, id); ierr == nil {
			s.DueAt, s.State = existing.NextProcessAt, existing.State.String()
		}
		return s, nil
	default:
		return Scheduled{}, fmt.Errorf("enqueue close %s: %w", id, err)
	}
}

// EnqueueReconcile hands a paid order to the reconciliation queue, at most
// once per order: it reports duplicate = true when the order already has a
// reconciliation task (waiting, or completed within ReconcileRetention).
func (p *Producer) EnqueueReconcile(ctx context.Context, rp ReconcilePayload) (duplicate bool, err error) {
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
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("enqueue reconcile %s: %w", id, err)
	}
	return false, nil
}

// CancelClose removes the close task of an order whose payment was
// confirmed, whatever state it waits in (scheduled, pending, retry or
// archived). It returns ErrNoClose if there is none, ErrCloseInProgress if it
// is running, and ErrCloseFinished if it already completed.
func (p *Producer) CancelClose(ctx context.Context, r OrderRef) error {
	if r.MchID == "" {
		r.MchID = p.cfg.MchID
	}
	if err := r.Validate(); err != nil {
		return err
	}
	id := CloseTaskID(r)
	info, err := p.inspector.GetTaskInfo(QueueClose, id)
	if err != nil {
		if errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound) {
			return fmt.Errorf("%s: %w", id, ErrNoClose)
		}
		return fmt.Errorf("look up %s: %w", id, err)
	}
	switch info.State {
	case asynq.TaskStateActive:
		return fmt.Errorf("%s: %w", id, ErrCloseInProgress)
	case asynq.TaskStateCompleted:
		return fmt.Errorf("%s: %w", id, ErrCloseFinished)
	}
	if err := p.inspector.DeleteTask(QueueClose, id); err != nil {
		if errors.Is(err, asynq.ErrTaskNotFound) {
			return fmt.Errorf("%s: %w", id, ErrNoClose)
		}
		// The task became active between the lookup and the delete.
		if info2, ierr := p.inspector.GetTaskInfo(QueueClose, id); ierr == nil && info2.State == asynq.TaskStateActive {
			return fmt.Errorf("%s: %w", id, ErrCloseInProgress)
		}
		return fmt.Errorf("delete %s: %w", id, err)
	}
	return nil
}
