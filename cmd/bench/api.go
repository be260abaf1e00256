package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"

	"github.com/wxclose/wxclose/tasks"
)

// The api section measures issue 11's figure for the HTTP close API:
// POST /v1/closes from apiClients keep-alive clients against the built
// `worker -api-only`, configured as an operator would (REDIS_URL,
// WECHATPAY_MCHID, WXCLOSE_HTTP_ADDR, WXCLOSE_API_TOKENS_FILE holding the
// SHA-256 of a generated token, so every request goes through the Bearer
// check), over -api-orders unique orders created just now (each answer a
// 201 with a close scheduled 5 minutes ahead). The baseline, measured right
// before on the same Redis, is the Go producer: sequential
// tasks.Producer.EnqueueClose calls of as many orders.
//
//	go run ./cmd/bench -only api -api-orders 50000

// apiClients is how many keep-alive clients post at once (issue 11).
const apiClients = 16

// Issue 11's targets for the API.
const (
	apiRatioTarget = 0.5
	apiP99Target   = 5 * time.Millisecond
)

func (b *bench) measureAPI(ctx context.Context) error {
	n := b.o.apiOrders
	seqRate, seqUse, err := b.sequentialEnqueueRate(ctx, n)
	if err != nil {
		return fmt.Errorf("baseline: %w", err)
	}
	if err := b.redis.reset(ctx); err != nil {
		return err
	}
	token, tokensFile, err := b.writeAPIToken()
	if err != nil {
		return err
	}
	w, err := b.startAPIOnly(ctx, tokensFile)
	if err != nil {
		return err
	}
	defer w.kill()
	res, err := b.postCloses(ctx, w, token, n)
	if err != nil {
		return err
	}
	// Every 201 must be a close in Redis: otherwise the rate measures
	// answers, not scheduling.
	insp := asynq.NewInspectorFromRedisClient(b.redis.rdb)
	qi, err := insp.GetQueueInfo(tasks.QueueClose)
	if err != nil {
		return fmt.Errorf("after the API run: %w", err)
	}
	if res.created != res.total || qi.Scheduled != res.total {
		return fmt.Errorf("after %d POST /v1/closes: %d answered 201 (other answers %v; first: %s), %d closes scheduled in %s",
			res.total, res.created, res.others, res.firstProblem, qi.Scheduled, tasks.QueueClose)
	}
	if err := w.shutdown(); err != nil {
		return err
	}
	u := res.use
	apiRate := float64(len(res.latencies)) / u.wall.Seconds()
	ratio := apiRate / seqRate
	p50, p99 := percentile(res.latencies, 0.50), percentile(res.latencies, 0.99)
	details := fmt.Sprintf("%d timed requests after %d warm-up requests, each a new order answered 201; CPU per request: worker %s, clients (bench) %s, redis %s; %s; "+
		"baseline: %d sequential EnqueueClose calls on the same Redis after a warm-up, CPU per call: producer %s, redis %s, other processes %.2f CPUs",
		len(res.latencies), res.warm, perOp(u.worker, len(res.latencies)), perOp(u.self, len(res.latencies)), perOp(u.redis, len(res.latencies)),
		u.redisCommands(len(res.latencies)), n, perOp(seqUse.self, n), perOp(seqUse.redis, n), deref(seqUse.otherCPUs()))
	// The clients share the machine's CPUs with the API here, not in
	// production; CPU time per request does not depend on that share.
	if server := (u.worker + u.redis) / time.Duration(len(res.latencies)); server > 0 {
		bound := float64(runtime.NumCPU()) / server.Seconds()
		details += fmt.Sprintf("; CPU-normalized: %d CPUs / %s per request in the worker and Redis = %s requests/s, %.2f × the baseline",
			runtime.NumCPU(), perOp(server, 1), thousands(bound), bound/seqRate)
	}
	r := row{
		Key: "api.post_closes_per_s", Figure: fmt.Sprintf("POST /v1/closes, worker -api-only, %d keep-alive clients, Bearer token", apiClients),
		Value: apiRate, Unit: "requests/s", Text: thousands(apiRate) + " requests/s",
		Baseline: "sequential Producer.EnqueueClose " + thousands(seqRate) + "/s", BaselineValue: seqRate, Ratio: ratio,
		Target: fmt.Sprintf("≥ %.2f", apiRatioTarget), OtherCPUs: u.otherCPUs(), Details: details,
	}
	r.judge(ratio >= apiRatioTarget, row{OtherCPUs: seqUse.otherCPUs()})
	b.report.add(r)
	b.report.add(row{
		Key: "api.post_close_p99_ms", Figure: fmt.Sprintf("POST /v1/closes latency (%d clients, loopback)", apiClients),
		Value: float64(p99) / float64(time.Millisecond), Unit: "ms",
		Text:   fmt.Sprintf("p50 %s, p99 %s", ms(p50), ms(p99)),
		Target: fmt.Sprintf("p99 ≤ %g ms", float64(apiP99Target)/float64(time.Millisecond)), Met: met(p99 <= apiP99Target), OtherCPUs: u.otherCPUs(),
		Details: fmt.Sprintf("client-side, from sending the request to the end of the answer's body; max %s",
			ms(res.latencies[len(res.latencies)-1])),
	})
	return nil
}

// sequentialEnqueueRate times n sequential EnqueueClose calls of new orders
// after a short warm-up, as a Go checkout service would schedule them.
func (b *bench) sequentialEnqueueRate(ctx context.Context, n int) (float64, cpuUse, error) {
	warm := min(100, n/10)
	orders := b.orders('G', warm+n, justNow, false)
	var c0 cpuSnap
	for i, o := range orders {
		if i == warm {
			c0 = b.snap(ctx, 0)
		}
		s, err := b.producer.EnqueueClose(ctx, o)
		if err != nil {
			return 0, cpuUse{}, err
		}
		if s.Duplicate {
			return 0, cpuUse{}, fmt.Errorf("%s was already scheduled", o.OutTradeNo)
		}
	}
	u := between(c0, b.snap(ctx, 0))
	return float64(n) / u.wall.Seconds(), u, nil
}

// writeAPIToken generates a bearer token and writes its SHA-256 line to a
// tokens file, as the README tells operators to.
func (b *bench) writeAPIToken() (token, path string, err error) {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", "", err
	}
	token = base64.RawURLEncoding.EncodeToString(raw)
	sum := sha256.Sum256([]byte(token))
	path = filepath.Join(b.dir, "api-tokens")
	return token, path, os.WriteFile(path, []byte("# bench client\nsha256:"+hex.EncodeToString(sum[:])+"\n"), 0o600)
}

// startAPIOnly runs the built worker with -api-only, configured by the
// environment an operator gives an API process: no WeChat Pay keys.
func (b *bench) startAPIOnly(ctx context.Context, tokensFile string) (*workerRun, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	w := &workerRun{httpAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
	cmd := exec.Command(b.workerBin, "-api-only")
	cmd.Env = append(cleanEnv(),
		"REDIS_URL="+b.redis.url,
		"WECHATPAY_MCHID="+b.creds.MchID,
		"WXCLOSE_HTTP_ADDR="+w.httpAddr,
		"WXCLOSE_API_TOKENS_FILE="+tokensFile,
		"WXCLOSE_LOG_LEVEL=info",
		"WXCLOSE_LOG_FORMAT=json",
	)
	cmd.Env = append(cmd.Env, b.o.workerEnv...)
	cmd.Dir = b.dir
	if w.child, err = b.procs.start("worker-api-only", cmd, filepath.Join(b.dir, "worker-api-only.log")); err != nil {
		return nil, err
	}
	if err := w.awaitReady(ctx); err != nil {
		w.kill()
		return nil, err
	}
	return w, nil
}

// postResult is what postCloses measured.
type postResult struct {
	total, created, warm int
	latencies            []time.Duration // timed requests, sorted
	use                  cpuUse          // over the timed requests
	others               map[int]int     // answers other than 201, by status (0: transport error)
	firstProblem         string
}

// postCloses sends n timed POST /v1/closes requests, each a new order, from
// apiClients goroutines, each with its own keep-alive connection, after a
// warm-up in which every client opens its connection.
func (b *bench) postCloses(ctx context.Context, w *workerRun, token string, n int) (postResult, error) {
	perClient := max(1, min(20, n/(10*apiClients)))
	res := postResult{warm: perClient * apiClients, others: map[int]int{}}
	res.total = res.warm + n
	created := time.Now().UTC().Format(time.RFC3339Nano)
	orders := b.orders('A', res.total, justNow, false)
	requests := make([][]byte, len(orders))
	for i, o := range orders {
		body := fmt.Appendf(nil, `{"out_trade_no":%q,"created_at":%q}`, o.OutTradeNo, created)
		requests[i] = fmt.Appendf(nil, "POST /v1/closes HTTP/1.1\r\nHost: %s\r\nUser-Agent: wxclose-bench\r\nContent-Type: application/json\r\n"+
			"Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s", w.httpAddr, token, len(body), body)
	}
	var (
		mu       sync.Mutex
		createdN atomic.Int64
	)
	latencies := make([]time.Duration, res.total)
	post := func(c *keepAliveClient, i int) {
		t0 := time.Now()
		status, body, err := c.do(requests[i])
		latencies[i] = time.Since(t0)
		if err == nil && status == http.StatusCreated {
			createdN.Add(1)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		res.others[status]++
		if res.firstProblem == "" {
			if err != nil {
				res.firstProblem = err.Error()
			} else {
				res.firstProblem = fmt.Sprintf("%d %s", status, strings.TrimSpace(string(body)))
			}
		}
	}
	clients := make([]*keepAliveClient, apiClients)
	for i := range clients {
		clients[i] = &keepAliveClient{addr: w.httpAddr}
		defer clients[i].close()
	}
	var wg sync.WaitGroup
	for ci, c := range clients {
		wg.Go(func() {
			for i := ci * perClient; i < (ci+1)*perClient && ctx.Err() == nil; i++ {
				post(c, i)
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return res, err
	}
	var next atomic.Int64
	next.Store(int64(res.warm))
	c0 := b.snap(ctx, w.pid())
	for _, c := range clients {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= res.total {
					return
				}
				post(c, i)
			}
		})
	}
	wg.Wait()
	res.use = between(c0, b.snap(ctx, w.pid()))
	if err := ctx.Err(); err != nil {
		return res, err
	}
	res.created = int(createdN.Load())
	res.latencies = slices.Clone(latencies[res.warm:])
	slices.Sort(res.latencies)
	return res, nil
}

// keepAliveClient is one HTTP/1.1 client on one keep-alive connection. It
// writes prebuilt requests and parses each answer with http.ReadResponse in
// the calling goroutine: net/http's Transport hands every request to a
// reader and a writer goroutine per connection, and on a 2-CPU machine that
// took about a third of each request's CPU away from the API it measures
// (production clients run elsewhere).
type keepAliveClient struct {
	addr string
	conn net.Conn
	br   *bufio.Reader
}

// do sends one request and returns the answer's status and body. A
// transport error closes the connection; the next call dials again.
func (c *keepAliveClient) do(req []byte) (int, []byte, error) {
	if c.conn == nil {
		conn, err := net.DialTimeout("tcp", c.addr, 5*time.Second)
		if err != nil {
			return 0, nil, err
		}
		c.conn, c.br = conn, bufio.NewReader(conn)
	}
	if err := c.conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		c.close()
		return 0, nil, err
	}
	if _, err := c.conn.Write(req); err != nil {
		c.close()
		return 0, nil, err
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		c.close()
		return 0, nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.Close {
		c.close()
	}
	return resp.StatusCode, body, err
}

func (c *keepAliveClient) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn, c.br = nil, nil
	}
}
