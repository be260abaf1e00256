package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/wxclose/wxclose/tasks"
)

// The webhook section measures issue 11's delivery figure: -webhook-orders
// paid orders put on the reconciliation queue with
// tasks.Producer.EnqueueReconcile, as the close handler does, then
// delivered by the built worker, configured with
// WXCLOSE_RECONCILE_WEBHOOK_URL and WXCLOSE_RECONCILE_WEBHOOK_SECRET_FILE
// and otherwise at its defaults (WXCLOSE_RECONCILE_WEBHOOK_CONCURRENCY
// included; -worker-env changes them), to a receiver in the bench process.
// The receiver verifies every delivery with the Standard Webhooks library,
// which shares no code with internal/webhook, checks that webhook-id names
// the order in the body, and answers 204. The rate runs from the first
// delivery to the last.
//
//	go run ./cmd/bench -only webhook -webhook-orders 20000 -worker-env WXCLOSE_RECONCILE_WEBHOOK_CONCURRENCY=8

// webhookTarget is issue 11's target, deliveries per second.
const webhookTarget = 1000.0

func (b *bench) measureWebhook(ctx context.Context) error {
	n := b.o.webhookOrders
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	secret := "whsec_" + base64.StdEncoding.EncodeToString(key)
	secretFile := filepath.Join(b.dir, "webhook.secret")
	if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
		return err
	}
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		return err
	}
	recv := &hookReceiver{wh: wh, seen: map[string]bool{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: recv, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }() // ends with ErrServerClosed below
	defer srv.Close()

	detected := time.Now().UTC()
	stamp := detected.Format("20060102150405")
	payloads := make([]tasks.ReconcilePayload, n)
	for i := range payloads {
		payloads[i] = tasks.ReconcilePayload{
			OutTradeNo: fmt.Sprintf("W%s%07d", stamp, i), MchID: b.creds.MchID,
			CreatedAt: detected.Add(-10 * time.Minute), DetectedAt: detected, Reason: tasks.ReasonOrderPaid,
		}
	}
	if err := enqueueReconciles(ctx, b.producer, payloads); err != nil {
		return err
	}
	w, err := b.startLimitedWorker(ctx, "worker-webhook", b.o.concurrency,
		"WXCLOSE_RECONCILE_WEBHOOK_URL=http://"+ln.Addr().String()+"/wxclose/paid",
		"WXCLOSE_RECONCILE_WEBHOOK_SECRET_FILE="+secretFile)
	if err != nil {
		return err
	}
	defer w.kill()

	var (
		c0           cpuSnap
		started      bool
		at0, last    int
		lastProgress = time.Now()
	)
	for {
		seen := recv.orders()
		if !started && seen > 0 {
			started, at0 = true, seen
			c0 = b.snap(ctx, w.pid())
		}
		// Every order answered, 204 or refused: a refused one comes back
		// only after the retry backoff, which is not what is measured.
		if seen >= n {
			break
		}
		if seen != last {
			last, lastProgress = seen, time.Now()
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if !w.running() {
			return fmt.Errorf("%s exited after %d of %d deliveries: %v\n%s", w.name, seen, n, w.exitErr(), w.logTail())
		}
		if time.Since(lastProgress) > time.Minute {
			return fmt.Errorf("%s delivered nothing for a minute (%d of %d orders received)\n%s", w.name, seen, n, w.logTail())
		}
		time.Sleep(10 * time.Millisecond)
	}
	u := between(c0, b.snap(ctx, w.pid()))
	st := recv.stats()
	completed := "not checked: some deliveries were refused and wait for a retry"
	if st.failed == 0 {
		qi, err := b.drained(ctx, tasks.QueueReconcile, time.Minute)
		if err != nil {
			return err
		}
		if qi.Completed != n || qi.Archived != 0 {
			return fmt.Errorf("%d of %d reconciliation tasks completed, %d archived", qi.Completed, n, qi.Archived)
		}
		completed = fmt.Sprintf("%d reconciliation tasks completed", qi.Completed)
	}
	counted := "not read"
	if s, err := scrapeSeries(ctx, w.httpAddr, "wxclose_webhook_deliveries_total"); err == nil {
		counted = fmt.Sprintf("delivered %v, failed %v, invalid %v", s[`{result="delivered"}`], s[`{result="failed"}`], s[`{result="invalid"}`])
	}
	if err := w.shutdown(); err != nil {
		return err
	}
	window := st.last.Sub(st.first)
	rate := 0.0
	if st.verified >= 2 && window > 0 {
		rate = float64(st.verified-1) / window.Seconds()
	}
	done := n - at0
	details := fmt.Sprintf("%d paid orders enqueued before the worker started; %d deliveries verified in %.2f s (%d timed for CPU), %d refused (%s), %d duplicates at the receiver; the worker's wxclose_webhook_deliveries_total: %s; %s; "+
		"CPU per delivery: worker %s, receiver (bench) %s, redis %s; Redis commands per delivery (Lua-internal included; evalsha = round trips): %s",
		n, st.verified, window.Seconds(), done, st.failed, firstOr(st.firstFailure, "none"), st.duplicates, counted, completed,
		perOp(u.worker, done), perOp(u.self, done), perOp(u.redis, done), commandsPer(u.calls0, u.calls1, done))
	b.report.add(row{
		Key: "webhook.deliveries_per_s", Figure: fmt.Sprintf("webhook delivery of %s paid orders to a local receiver", thousands(float64(n))),
		Value: rate, Unit: "deliveries/s",
		Text:   fmt.Sprintf("%s deliveries/s, %s verified, %s failed", thousands(rate), thousands(float64(st.verified)), thousands(float64(st.failed))),
		Target: "≥ " + thousands(webhookTarget) + "/s, 0 failed", Met: met(rate >= webhookTarget && st.failed == 0 && st.verified == n),
		OtherCPUs: u.otherCPUs(), Details: details,
	})
	return nil
}

func firstOr(s, alt string) string {
	if s == "" {
		return alt
	}
	return s
}

// enqueueReconciles enqueues payloads with a few goroutines and fails on
// any error or duplicate.
func enqueueReconciles(ctx context.Context, p *tasks.Producer, payloads []tasks.ReconcilePayload) error {
	return inParallel(ctx, len(payloads), func(i int) error {
		dup, err := p.EnqueueReconcile(ctx, payloads[i])
		if err == nil && dup {
			err = fmt.Errorf("%s already had a reconciliation task", payloads[i].OutTradeNo)
		}
		return err
	})
}

// hookReceiver is the merchant's reconciler endpoint: it verifies each
// delivery and answers 204, or 400 to one that does not verify.
type hookReceiver struct {
	wh *standardwebhooks.Webhook

	mu                           sync.Mutex
	seen                         map[string]bool // webhook-ids answered, 204 or not
	verified, failed, duplicates int
	first, last                  time.Time // first and last verified delivery
	firstFailure                 string
}

func (r *hookReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	at := time.Now()
	id := req.Header.Get("webhook-id")
	problem := ""
	if err != nil {
		problem = "reading the body: " + err.Error()
	} else if err := r.wh.Verify(body, req.Header); err != nil {
		problem = "signature: " + err.Error()
	} else if p, err := tasks.DecodeReconcilePayload(body); err != nil {
		problem = "body: " + err.Error()
	} else if want := tasks.ReconcileTaskID(tasks.OrderRef{OutTradeNo: p.OutTradeNo, TransactionID: p.TransactionID, MchID: p.MchID, SubMchID: p.SubMchID}); id != want {
		problem = fmt.Sprintf("webhook-id %q does not name the order in the body (%s)", id, want)
	}
	r.mu.Lock()
	if r.seen[id] {
		r.duplicates++
	}
	r.seen[id] = true
	if problem == "" {
		r.verified++
		if r.first.IsZero() {
			r.first = at
		}
		r.last = at
	} else {
		r.failed++
		if r.firstFailure == "" {
			r.firstFailure = problem
		}
	}
	r.mu.Unlock()
	if problem != "" {
		http.Error(w, problem, http.StatusBadRequest)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// orders returns how many distinct webhook-ids were answered.
func (r *hookReceiver) orders() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seen)
}

type receiverStats struct {
	verified, failed, duplicates int
	first, last                  time.Time
	firstFailure                 string
}

func (r *hookReceiver) stats() receiverStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return receiverStats{verified: r.verified, failed: r.failed, duplicates: r.duplicates,
		first: r.first, last: r.last, firstFailure: r.firstFailure}
}

// scrapeSeries reads the worker's /metrics and returns the samples of the
// metric name, keyed by their labels ("{result=\"delivered\"}").
func scrapeSeries(ctx context.Context, addr, name string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), name)
		if !ok || (rest != "" && rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		labels, value, ok := strings.Cut(rest, " ")
		if !ok {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(value), 64); err == nil {
			out[labels] = v
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, errors.New("no " + name + " in /metrics")
	}
	return out, nil
}
