package hatest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/rs/zerolog"

	"github.com/wxclose/wxclose/internal/closehandler"
	"github.com/wxclose/wxclose/internal/config"
	"github.com/wxclose/wxclose/internal/worker"
	"github.com/wxclose/wxclose/retry"
	"github.com/wxclose/wxclose/tasks"
	"github.com/wxclose/wxclose/wechat"
	"github.com/wxclose/wxclose/wechat/sandbox"
)

// rig is the WeChat Pay side of a test: the sandbox over real HTTP, and
// the client configuration workers use to call it.
type rig struct {
	sb    *sandbox.Server
	creds sandbox.Credentials
	wc    wechat.Config
}

func newRig(t *testing.T) *rig {
	t.Helper()
	sb, err := sandbox.New(sandbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(sb.Handler())
	t.Cleanup(hs.Close)
	creds := sb.Credentials()
	wc := wechat.Config{API: wechat.APIv3, BaseURL: hs.URL, MchID: creds.MchID, Timeout: 5 * time.Second, CertSerial: creds.MerchantCertSerial}
	if wc.PrivateKey, err = wechat.LoadPrivateKey(creds.MerchantPrivateKeyPEM); err != nil {
		t.Fatal(err)
	}
	if wc.PlatformCerts, err = wechat.LoadCertificates(creds.PlatformCertPEM); err != nil {
		t.Fatal(err)
	}
	return &rig{sb: sb, creds: creds, wc: wc}
}

// order registers an unpaid order at the sandbox whose close is due about
// dueIn from now, and returns the producer's request.
func (r *rig) order(no string, dueIn time.Duration) tasks.CloseOrder {
	created := time.Now().Add(-tasks.MinCloseAge + dueIn)
	r.sb.AddOrder(sandbox.Order{OutTradeNo: no, CreatedAt: created})
	return tasks.CloseOrder{OutTradeNo: no, CreatedAt: created}
}

// syncBuffer collects a worker's log lines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// counter counts a worker's close attempts.
type counter struct{ attempts atomic.Int64 }

func (c *counter) ObserveAttempt(closehandler.Attempt) { c.attempts.Add(1) }

// runningWorker is one in-process worker.
type runningWorker struct {
	w        *worker.Worker
	logs     *syncBuffer
	attempts *counter
	stop     func()
}

type workerOptions struct {
	layout   config.Layout
	ui       bool
	discover time.Duration
}

// startWorker runs a worker against redis until the test ends (or stop).
func (r *rig) startWorker(t *testing.T, redis asynq.RedisConnOpt, o workerOptions) *runningWorker {
	t.Helper()
	if o.layout.Shards == 0 {
		o.layout.Shards = 1
	}
	cfg := config.Worker{
		Redis: redis, Layout: o.layout, MchID: r.creds.MchID, WeChatAPI: wechat.APIv3,
		Concurrency: 8,
		// Short retries: a close whose first attempt met the failover runs
		// again within seconds.
		Retry:    retry.Policy{Initial: time.Second, Max: 2 * time.Second, Multiplier: 2, Jitter: 0.1},
		MaxRetry: 50, HTTPAddr: "127.0.0.1:0", CloseMargin: time.Second, UI: o.ui,
	}
	logs := &syncBuffer{}
	attempts := &counter{}
	wc := r.wc
	w, err := worker.New(worker.Options{
		Config: cfg, Logger: zerolog.New(logs).Level(zerolog.InfoLevel), Observer: attempts,
		QueueDiscoveryInterval: o.discover,
		NewCloser: func(h wechat.Hooks) (wechat.Closer, error) {
			wc.Hooks = h
			return wechat.New(wc)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("worker.Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("worker log (last 4 KiB):\n%s", tail(logs.String(), 4<<10))
		}
	})
	return &runningWorker{w: w, logs: logs, attempts: attempts, stop: stop}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// get fetches a worker URL path and returns the body.
func (rw *runningWorker) get(t *testing.T, path string) string {
	t.Helper()
	resp, err := http.Get("http://" + rw.w.HTTPAddr() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v\n%s", path, resp.StatusCode, err, b)
	}
	return string(b)
}

// waitClosed waits until the sandbox has every order closed. The deadline
// only bounds a broken run; nothing asserts how fast closes are.
func (r *rig) waitClosed(t *testing.T, orders []string, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		var open []string
		for _, no := range orders {
			if o, ok := r.sb.Order(no); !ok || o.State != sandbox.StateClosed {
				open = append(open, no)
			}
		}
		if len(open) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d orders still open after %v, e.g. %s", len(open), len(orders), limit, strings.Join(open[:min(5, len(open))], ","))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// requireNoEarlyCalls fails the test if the sandbox saw a close sooner than
// creation + 5 minutes.
func (r *rig) requireNoEarlyCalls(t *testing.T) {
	t.Helper()
	if n := r.sb.EarlyCalls(); n != 0 {
		t.Fatalf("WeChat Pay received %d close calls before creation + 5 minutes", n)
	}
}

// ledger records which enqueues were acknowledged.
type ledger struct {
	mu      sync.Mutex
	acked   map[string]tasks.CloseOrder // by order number
	pending map[string]tasks.CloseOrder // not acknowledged yet
}

func newLedger() *ledger {
	return &ledger{acked: map[string]tasks.CloseOrder{}, pending: map[string]tasks.CloseOrder{}}
}

// enqueue tries once; an error leaves the order pending for retryPending.
func (l *ledger) enqueue(ctx context.Context, p *tasks.Producer, o tasks.CloseOrder) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	_, err := p.EnqueueClose(ctx, o)
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.pending[o.OutTradeNo] = o
		return err
	}
	delete(l.pending, o.OutTradeNo)
	l.acked[o.OutTradeNo] = o
	return nil
}

// enqueueAll enqueues orders with a few goroutines and returns how many
// were acknowledged.
func (l *ledger) enqueueAll(ctx context.Context, p *tasks.Producer, orders []tasks.CloseOrder) int {
	var wg sync.WaitGroup
	var ok atomic.Int64
	next := atomic.Int64{}
	for range 8 {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(orders) {
					return
				}
				if l.enqueue(ctx, p, orders[i]) == nil {
					ok.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return int(ok.Load())
}

// retryPending enqueues the unacknowledged orders again, as a producer
// would, until all are acknowledged.
func (l *ledger) retryPending(t *testing.T, p *tasks.Producer, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		l.mu.Lock()
		var todo []tasks.CloseOrder
		for _, o := range l.pending {
			todo = append(todo, o)
		}
		l.mu.Unlock()
		if len(todo) == 0 {
			return
		}
		var lastErr error
		for _, o := range todo {
			if err := l.enqueue(context.Background(), p, o); err != nil {
				lastErr = err
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d enqueues still not acknowledged after %v: %v", len(todo), limit, lastErr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (l *ledger) ackedNumbers() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var nos []string
	for no := range l.acked {
		nos = append(nos, no)
	}
	return nos
}

// lost returns the acknowledged orders whose close task no longer exists
// anywhere in Redis (tasks are kept 24 h after they complete, so a missing
// one was lost, not finished).
func (l *ledger) lost(t *testing.T, p *tasks.Producer, mchID string) []string {
	t.Helper()
	var lost []string
	for _, no := range l.ackedNumbers() {
		id := tasks.CloseTaskID(tasks.OrderRef{OutTradeNo: no, MchID: mchID})
		for attempt := 0; ; attempt++ {
			_, err := p.LookupClose(context.Background(), id)
			if err == nil {
				break
			}
			if isNoClose(err) {
				lost = append(lost, no)
				break
			}
			if attempt == 50 {
				t.Fatalf("look up %s: %v", id, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return lost
}

func isNoClose(err error) bool { return errors.Is(err, tasks.ErrNoClose) }

func numbers(prefix string, from, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d", prefix, from+i)
	}
	return out
}

func splitLines(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' })
}
