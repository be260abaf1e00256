package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wxclose/wxclose/internal/ops"
	"github.com/wxclose/wxclose/tasks"
)

// batchConcurrency is how many items of a batch are enqueued at once: a
// few round trips in flight hide Redis latency without crowding out other
// requests.
const batchConcurrency = 8

// scheduled is the answer to POST /v1/closes (schema Scheduled).
type scheduled struct {
	TaskID    string    `json:"task_id"`
	DueAt     time.Time `json:"due_at,omitzero"`
	State     string    `json:"state"`
	Duplicate bool      `json:"duplicate"`
}

func (a *API) postClose(w http.ResponseWriter, r *http.Request) {
	if !isContentType(r, "application/json") {
		writeProblem(w, newProblem(http.StatusUnsupportedMediaType, CodeUnsupportedMediaType, "Content-Type",
			"send the close request as JSON with Content-Type: application/json"))
		return
	}
	body, p := readBody(w, r, MaxBodyBytes)
	if p != nil {
		writeProblem(w, p)
		return
	}
	s, p, err := a.schedule(r.Context(), body)
	switch {
	case err != nil:
		a.unavailable(w, err, "Redis did not answer in time; the close may or may not be scheduled. Send the same request again: a close that was scheduled is reported as a duplicate.")
		return
	case p != nil:
		writeProblem(w, p)
		return
	}
	status := http.StatusCreated
	if s.Duplicate {
		status = http.StatusOK
	}
	w.Header().Set("Location", taskPath(s.TaskID))
	writeJSON(w, status, s)
}

// schedule parses one close request, as a `cmd/enqueue --file` line is
// parsed (ops.ParseOrderLine), and enqueues it with the Go producer. It
// returns a problem for an invalid order and an error when Redis failed.
func (a *API) schedule(ctx context.Context, data []byte) (scheduled, *Problem, error) {
	o, err := ops.ParseOrderLine(data)
	if err != nil {
		return scheduled{}, invalidOrder(err), nil
	}
	s, err := a.producer.EnqueueClose(ctx, o)
	if err != nil {
		if isInvalid(err) {
			return scheduled{}, invalidOrder(err), nil
		}
		return scheduled{}, nil, err
	}
	if s.Duplicate && s.State == "" {
		// The producer looks up a duplicate's state on a best-effort basis;
		// the API promises it, so ask again and fail as a whole otherwise.
		info, err := a.inspector.GetTaskInfo(s.Queue, s.TaskID)
		if err != nil {
			return scheduled{}, nil, fmt.Errorf("look up %s: %w", s.TaskID, err)
		}
		s.State, s.DueAt = info.State.String(), info.NextProcessAt
	}
	return scheduled{TaskID: s.TaskID, DueAt: s.DueAt, State: s.State, Duplicate: s.Duplicate}, nil, nil
}

// taskPath is the Location of a close task.
func taskPath(id string) string { return "/v1/closes/" + url.PathEscape(id) }

// batchResult is one item's result (schema BatchItemResult).
type batchResult struct {
	Index     int       `json:"index"`
	Line      int       `json:"line,omitempty"`
	Status    int       `json:"status"`
	TaskID    string    `json:"task_id,omitempty"`
	DueAt     time.Time `json:"due_at,omitzero"`
	State     string    `json:"state,omitempty"`
	Duplicate *bool     `json:"duplicate,omitempty"`
	Error     *Problem  `json:"error,omitempty"`
}

type batchSummary struct {
	Scheduled  int `json:"scheduled"`
	Duplicates int `json:"duplicates"`
	Rejected   int `json:"rejected"`
}

type batchResponse struct {
	Results []batchResult `json:"results"`
	Summary batchSummary  `json:"summary"`
}

// batchItem is one item of a batch body: its JSON and, for NDJSON, its
// line number.
type batchItem struct {
	data []byte
	line int
}

func (a *API) postBatch(w http.ResponseWriter, r *http.Request) {
	var ndjson bool
	switch {
	case isContentType(r, "application/json"):
	case isContentType(r, "application/x-ndjson"):
		ndjson = true
	default:
		writeProblem(w, newProblem(http.StatusUnsupportedMediaType, CodeUnsupportedMediaType, "Content-Type",
			"send a batch as a JSON array (Content-Type: application/json) or as one JSON object per line (Content-Type: application/x-ndjson)"))
		return
	}
	body, p := readBody(w, r, MaxBatchBodyBytes)
	if p != nil {
		writeProblem(w, p)
		return
	}
	var items []batchItem
	if ndjson {
		items, p = splitNDJSON(body)
	} else {
		items, p = splitArray(body)
	}
	if p != nil {
		writeProblem(w, p)
		return
	}

	results := make([]batchResult, len(items))
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	var (
		next     atomic.Int64
		stored   atomic.Int64
		errOnce  sync.Once
		redisErr error
		wg       sync.WaitGroup
	)
	for range min(batchConcurrency, len(items)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(items) || ctx.Err() != nil {
					return
				}
				res := batchResult{Index: i, Line: items[i].line}
				s, p, err := a.schedule(ctx, items[i].data)
				switch {
				case err != nil:
					// Redis failed: stop the batch, so that the answer comes
					// in bounded time, and answer 503 as a whole.
					errOnce.Do(func() { redisErr = err; cancel() })
					return
				case p != nil:
					res.Status, res.Error = p.Status, p
				default:
					dup := s.Duplicate
					res.Status, res.TaskID, res.DueAt, res.State, res.Duplicate = http.StatusCreated, s.TaskID, s.DueAt, s.State, &dup
					if dup {
						res.Status = http.StatusOK
					}
					stored.Add(1)
				}
				results[i] = res
			}
		})
	}
	wg.Wait()
	if redisErr != nil {
		a.unavailable(w, redisErr, fmt.Sprintf("Redis did not answer in time; at least %d of the %d items were scheduled or found scheduled before it stopped. "+
			"Send the whole batch again: items already scheduled are reported as duplicates.", stored.Load(), len(items)))
		return
	}
	resp := batchResponse{Results: results}
	for _, res := range results {
		switch res.Status {
		case http.StatusCreated:
			resp.Summary.Scheduled++
		case http.StatusOK:
			resp.Summary.Duplicates++
		default:
			resp.Summary.Rejected++
		}
	}
	writeJSON(w, http.StatusOK, resp)
}

// splitArray splits a JSON array into its items, undecoded: each is
// checked on its own, so a bad item does not spoil the others. Only an
// array that is not well-formed JSON rejects the whole batch.
func splitArray(body []byte) ([]batchItem, *Problem) {
	const want = "a batch is a JSON array of close requests (or one request per line with Content-Type: application/x-ndjson)"
	dec := json.NewDecoder(bytes.NewReader(body))
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('[') {
		return nil, newProblem(http.StatusBadRequest, CodeInvalidJSON, "", want)
	}
	var items []batchItem
	for dec.More() {
		if len(items) == MaxBatchItems {
			return nil, tooManyItems()
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, newProblem(http.StatusBadRequest, CodeInvalidJSON, "",
				fmt.Sprintf("item %d is not valid JSON (%v); %s", len(items), err, want))
		}
		items = append(items, batchItem{data: raw})
	}
	if _, err := dec.Token(); err != nil {
		return nil, newProblem(http.StatusBadRequest, CodeInvalidJSON, "", fmt.Sprintf("the array is not closed (%v); %s", err, want))
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, newProblem(http.StatusBadRequest, CodeInvalidJSON, "", "trailing data after the array; "+want)
	}
	return items, nil
}

// splitNDJSON splits newline-delimited JSON into lines, skipping blank
// ones. A line that is not valid JSON is that item's error, not the batch's.
func splitNDJSON(body []byte) ([]batchItem, *Problem) {
	var items []batchItem
	for n, line := range bytes.Split(body, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		if len(items) == MaxBatchItems {
			return nil, tooManyItems()
		}
		items = append(items, batchItem{data: line, line: n + 1})
	}
	return items, nil
}

func tooManyItems() *Problem {
	return newProblem(http.StatusBadRequest, CodeTooManyItems, "",
		fmt.Sprintf("a batch holds at most %d items; split it", MaxBatchItems))
}

// readBody reads the whole body, up to limit bytes and within
// bodyReadTimeout.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, *Problem) {
	if r.ContentLength > limit {
		return nil, tooLarge(limit)
	}
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(bodyReadTimeout))
	defer func() { _ = rc.SetReadDeadline(time.Time{}) }()
	// MaxBytesReader tells the server to close the connection after an
	// oversized body, which it can only do on the server's own writer.
	root := w
	for {
		u, ok := root.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			break
		}
		root = u.Unwrap()
	}
	data, err := io.ReadAll(http.MaxBytesReader(root, r.Body, limit))
	if err != nil {
		var tooBig *http.MaxBytesError
		var ne net.Error
		switch {
		case errors.As(err, &tooBig):
			return nil, tooLarge(limit)
		case errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()):
			return nil, newProblem(http.StatusRequestTimeout, CodeRequestTimeout, "",
				fmt.Sprintf("the body did not arrive within %s", bodyReadTimeout))
		}
		return nil, newProblem(http.StatusBadRequest, CodeInvalidJSON, "", "the body could not be read: "+err.Error())
	}
	return data, nil
}

func tooLarge(limit int64) *Problem {
	return newProblem(http.StatusRequestEntityTooLarge, CodeBodyTooLarge, "",
		fmt.Sprintf("the body is larger than %d KiB", limit>>10))
}

func (a *API) getClose(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("task_id")
	if _, p := parseTaskID(id); p != nil {
		writeProblem(w, p)
		return
	}
	// The lookup the producer's cancel and `enqueue status` use: the
	// order's shard, the previous layout's, then every close queue.
	info, err := a.canceller.LookupClose(r.Context(), id)
	if err != nil {
		if errors.Is(err, tasks.ErrNoClose) {
			writeProblem(w, noClose(id))
			return
		}
		a.unavailable(w, err, "Redis did not answer in time; try again")
		return
	}
	writeJSON(w, http.StatusOK, statusOf(info))
}

func (a *API) deleteClose(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("task_id")
	ref, p := parseTaskID(id)
	if p != nil {
		writeProblem(w, p)
		return
	}
	err := a.canceller.CancelClose(r.Context(), ref)
	switch {
	case err == nil:
		w.WriteHeader(http.StatusNoContent)
	case errors.Is(err, tasks.ErrNoClose):
		writeProblem(w, noClose(id))
	case errors.Is(err, tasks.ErrCloseInProgress):
		writeProblem(w, newProblem(http.StatusConflict, CodeCloseInProgress, "",
			"the close is running now and cannot be cancelled; GET it in a few seconds for its outcome"))
	case errors.Is(err, tasks.ErrCloseFinished):
		writeProblem(w, newProblem(http.StatusConflict, CodeCloseCompleted, "",
			"the close already completed; GET it for its outcome"))
	case isInvalid(err):
		writeProblem(w, newProblem(http.StatusBadRequest, CodeInvalidTaskID, "task_id", err.Error()))
	default:
		a.unavailable(w, err, "Redis did not answer in time; the close may or may not be cancelled. Send the same request again.")
	}
}

func noClose(id string) *Problem {
	return newProblem(http.StatusNotFound, CodeNoClose, "",
		fmt.Sprintf("%s has no close task: never scheduled, cancelled, or completed more than its retention ago", id))
}

// parseTaskID reads the order out of a close task id. The id must be
// exactly what tasks.CloseTaskID gives for a valid order, so anything else
// (an order number sent instead of the id, a reconciliation id) is 400.
func parseTaskID(id string) (tasks.OrderRef, *Problem) {
	bad := func(why string) (tasks.OrderRef, *Problem) {
		return tasks.OrderRef{}, newProblem(http.StatusBadRequest, CodeInvalidTaskID, "task_id",
			why+"; a close task id looks like close:1900000109:out_trade_no:ORDER-1, as returned when the close was scheduled")
	}
	rest, ok := strings.CutPrefix(id, "close:")
	if !ok {
		return bad("the task id does not start with close:")
	}
	merchant, rest, ok1 := strings.Cut(rest, ":")
	kind, number, ok2 := strings.Cut(rest, ":")
	if !ok1 || !ok2 {
		return bad("the task id is not close:<merchant>:<out_trade_no|transaction_id>:<number>")
	}
	var ref tasks.OrderRef
	ref.MchID, ref.SubMchID, _ = strings.Cut(merchant, ".")
	if ref.MchID == "_" {
		ref.MchID = ""
	}
	switch kind {
	case "out_trade_no":
		ref.OutTradeNo = number
	case "transaction_id":
		ref.TransactionID = number
	default:
		return bad("the task id names neither out_trade_no nor transaction_id")
	}
	if err := ref.Validate(); err != nil {
		return bad(err.Error())
	}
	if tasks.CloseTaskID(ref) != id {
		return bad("the task id is not in its canonical form")
	}
	return ref, nil
}
