package ops

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/wxclose/wxclose/internal/strictjson"
	"github.com/wxclose/wxclose/tasks"
)

// DefaultMaxLineBytes is the longest JSON Lines record EnqueueBulk accepts
// when BulkOptions.MaxLineBytes is zero. A close order is a few hundred
// bytes; the limit only protects memory from a file that is not JSON Lines.
const DefaultMaxLineBytes = 1 << 20

// Statuses of an EnqueueRecord.
const (
	StatusEnqueued         = "enqueued"
	StatusAlreadyScheduled = "already_scheduled"
	StatusRejected         = "rejected"
	StatusFailed           = "failed"
)

// EnqueueRecord is the outcome of enqueueing one order, printed one per line
// by the command (as JSON with --json).
type EnqueueRecord struct {
	// Line is the input line number (from 1), zero for a single order.
	Line int `json:"line,omitempty"`
	// Status is one of the Status* constants.
	Status string `json:"status"`
	// TaskID is the close task's id; empty when the line was rejected
	// before an id could be derived.
	TaskID string `json:"task_id,omitempty"`
	// State is the asynq state of the (new or existing) task.
	State string `json:"state,omitempty"`
	// DueAt is when the close runs; zero for a duplicate that is not
	// waiting to run (completed, archived, active).
	DueAt time.Time `json:"due_at,omitzero"`
	// Error says why the order was rejected or failed.
	Error string `json:"error,omitempty"`
	// Note points out how an accepted order was read, when that may
	// surprise: a line with both out_trade_no and transaction_id is closed
	// by its out_trade_no.
	Note string `json:"note,omitempty"`
}

// RecordOf turns the result of enqueueing o into a record.
func RecordOf(line int, o tasks.CloseOrder, s tasks.Scheduled, err error) EnqueueRecord {
	r := EnqueueRecord{Line: line, TaskID: s.TaskID, State: s.State, DueAt: s.DueAt}
	if err == nil {
		r.Note = orderNote(o)
	}
	switch {
	case err != nil && errors.Is(err, tasks.ErrInvalidPayload):
		r.Status, r.Error = StatusRejected, Message(err)
	case err != nil:
		r.Status, r.Error = StatusFailed, err.Error()
	case s.Duplicate:
		r.Status = StatusAlreadyScheduled
	default:
		r.Status = StatusEnqueued
	}
	return r
}

// WriteRecord prints r as one line: JSON, or text relative to now.
func WriteRecord(w io.Writer, r EnqueueRecord, asJSON bool, now time.Time) error {
	if asJSON {
		data, err := json.Marshal(r)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", data)
		return err
	}
	prefix := ""
	if r.Line > 0 {
		prefix = fmt.Sprintf("line %d: ", r.Line)
	}
	note := ""
	if r.Note != "" {
		note = "; " + r.Note
	}
	var err error
	switch r.Status {
	case StatusEnqueued:
		_, err = fmt.Fprintf(w, "%senqueued %s %s%s\n", prefix, r.TaskID, describeDue(r.DueAt, now), note)
	case StatusAlreadyScheduled:
		_, err = fmt.Fprintf(w, "%salready scheduled %s (%s) %s%s\n", prefix, r.TaskID, r.State, describeDue(r.DueAt, now), note)
	default:
		_, err = fmt.Fprintf(w, "%s%s\n", prefix, r.Error)
	}
	return err
}

// DefaultBatchSize is the most orders EnqueueBulk sends to Redis in one
// pipeline when BulkOptions.BatchSize is zero. Larger batches save little
// more: at a few hundred orders per round trip, Redis's own work dominates.
const DefaultBatchSize = 256

// BulkOptions configures EnqueueBulk. The zero value enqueues with
// DefaultConcurrency and DefaultBatchSize and prints nothing.
type BulkOptions struct {
	// Concurrency is the number of batches in flight. If zero,
	// DefaultConcurrency.
	Concurrency int
	// BatchSize is the most orders sent to Redis in one pipeline
	// (tasks.Producer.EnqueueCloses). Batches are never waited for: a
	// batch goes as soon as the input has no further complete line ready,
	// so orders typed or piped in one at a time are enqueued at once. If
	// zero, DefaultBatchSize; 1 enqueues each order on its own
	// (tasks.Producer.EnqueueClose), one round trip each.
	BatchSize int
	// Out receives one record per enqueued or already scheduled order (and,
	// with JSON, per rejected or failed line too). If nil, discarded.
	Out io.Writer
	// Err receives rejected and failed lines as text ("line 17: ...").
	// If nil, discarded. Unused for those lines when JSON is set.
	Err io.Writer
	// Quiet suppresses the records of enqueued and already scheduled orders.
	Quiet bool
	// JSON prints records as JSON objects on Out.
	JSON bool
	// Progress, if not nil, receives a self-overwriting progress line; set
	// it only when it is a terminal.
	Progress io.Writer
	// MaxLineBytes is the longest accepted line. If zero,
	// DefaultMaxLineBytes.
	MaxLineBytes int
}

// BulkSummary counts the outcomes of EnqueueBulk.
type BulkSummary struct {
	// Lines is the number of non-blank input lines read.
	Lines            int `json:"lines"`
	Enqueued         int `json:"enqueued"`
	AlreadyScheduled int `json:"already_scheduled"`
	Rejected         int `json:"rejected"`
	Failed           int `json:"failed"`
}

// Unprocessed is the number of lines read but not enqueued because the run
// was interrupted.
func (s BulkSummary) Unprocessed() int {
	return s.Lines - s.Enqueued - s.AlreadyScheduled - s.Rejected - s.Failed
}

// OK reports whether every line was enqueued or already scheduled.
func (s BulkSummary) OK() bool {
	return s.Rejected == 0 && s.Failed == 0 && s.Unprocessed() == 0
}

func (s BulkSummary) String() string {
	msg := fmt.Sprintf("%d enqueued, %d already scheduled, %d rejected, %d failed", s.Enqueued, s.AlreadyScheduled, s.Rejected, s.Failed)
	if n := s.Unprocessed(); n > 0 {
		msg += fmt.Sprintf(", %d not processed (interrupted)", n)
	}
	return msg
}

// orderNote explains how an accepted order is read when it names the order
// twice. The README's rule, applied by the producer, the task id and the
// worker alike: out_trade_no wins.
func orderNote(o tasks.CloseOrder) string {
	if o.OutTradeNo == "" || o.TransactionID == "" {
		return ""
	}
	return fmt.Sprintf("both out_trade_no and transaction_id are set: the close uses out_trade_no %s (transaction_id %s is only kept in the payload)", o.OutTradeNo, o.TransactionID)
}

func (s *BulkSummary) add(r EnqueueRecord) {
	switch r.Status {
	case StatusEnqueued:
		s.Enqueued++
	case StatusAlreadyScheduled:
		s.AlreadyScheduled++
	case StatusRejected:
		s.Rejected++
	default:
		s.Failed++
	}
}

type bulkJob struct {
	line  int
	order tasks.CloseOrder
}

// EnqueueBulk enqueues the orders of a JSON Lines stream, one ClosePayload
// object per line (field names out_trade_no, transaction_id, mchid,
// sub_mchid, sub_appid, created_at, and optionally close_at, both times in
// RFC 3339); blank lines and a UTF-8 byte order mark at the start are
// skipped. created_at is required: a bulk file describes existing orders.
// Unknown, wrong-case and repeated fields reject the line (see
// ParseOrderLine), so that a typo such as "closeAt" cannot silently make a
// close run early. A line with both out_trade_no and transaction_id is
// enqueued under its out_trade_no and its record carries a Note saying so.
//
// The input is streamed, grouped into batches of consecutive orders and
// enqueued by opt.Concurrency workers, one pipeline per batch, so records
// come out in no particular order; each carries its line number. Each
// order's outcome is its own: a batch that fails in Redis reports each of
// its lines as failed. A bad line is reported and processing carries on.
// The returned error is non-nil only when reading r failed or ctx was
// cancelled; the summary is valid either way.
func (c *Client) EnqueueBulk(ctx context.Context, r io.Reader, opt BulkOptions) (BulkSummary, error) {
	workers := opt.Concurrency
	if workers <= 0 {
		workers = DefaultConcurrency
	}
	maxLine := opt.MaxLineBytes
	if maxLine <= 0 {
		maxLine = DefaultMaxLineBytes
	}
	batchSize := opt.BatchSize
	if batchSize <= 0 {
		batchSize = DefaultBatchSize
	}
	out, errw := orDiscard(opt.Out), orDiscard(opt.Err)

	jobs := make(chan []bulkJob, workers)
	// Room for a batch's records, so a worker hands them over and sends
	// its next batch while the output is still being written.
	results := make(chan EnqueueRecord, batchSize+workers*2)
	var lines int
	var readErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(jobs)
		lines, readErr = readOrders(ctx, r, maxLine, batchSize, jobs, results)
	})
	for range workers {
		wg.Go(func() {
			for batch := range jobs {
				if ctx.Err() != nil {
					continue // leave it unprocessed; counted by Unprocessed
				}
				c.enqueueBatch(ctx, batch, results)
			}
		})
	}
	go func() {
		wg.Wait()
		close(results)
	}()

	var sum BulkSummary
	prog := newProgress(opt.Progress)
	var writeErr error
	for rec := range results {
		sum.add(rec)
		ok := rec.Status == StatusEnqueued || rec.Status == StatusAlreadyScheduled
		var err error
		switch {
		case ok && opt.Quiet && rec.Note != "" && !opt.JSON:
			// Quiet hides routine lines, not a surprise.
			prog.clear()
			err = WriteRecord(errw, rec, false, c.now())
		case ok && opt.Quiet:
		case ok || opt.JSON:
			prog.clear() // stdout may be the same terminal
			err = WriteRecord(out, rec, opt.JSON, c.now())
		default:
			prog.clear()
			err = WriteRecord(errw, rec, false, c.now())
		}
		if err != nil && writeErr == nil {
			writeErr = err
		}
		prog.update(false, "%d enqueued, %d already scheduled, %d rejected, %d failed", sum.Enqueued, sum.AlreadyScheduled, sum.Rejected, sum.Failed)
	}
	prog.clear()
	sum.Lines = lines
	switch {
	case readErr != nil:
		return sum, readErr
	case ctx.Err() != nil:
		return sum, ctx.Err()
	case writeErr != nil:
		return sum, fmt.Errorf("write output: %w", writeErr)
	}
	return sum, nil
}

// enqueueBatch enqueues the orders of one batch and sends their records.
func (c *Client) enqueueBatch(ctx context.Context, batch []bulkJob, results chan<- EnqueueRecord) {
	if len(batch) == 1 {
		// One order gains nothing from a pipeline, and BatchSize 1 keeps
		// the path every order took before batching.
		j := batch[0]
		s, err := c.producer.EnqueueClose(ctx, j.order)
		results <- RecordOf(j.line, j.order, s, err)
		return
	}
	orders := make([]tasks.CloseOrder, len(batch))
	for i, j := range batch {
		orders[i] = j.order
	}
	for i, r := range c.producer.EnqueueCloses(ctx, orders) {
		results <- RecordOf(batch[i].line, batch[i].order, r.Scheduled, r.Err)
	}
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

// utf8BOM is the byte order mark some editors (Windows Notepad, Excel's
// "CSV UTF-8") put at the start of a UTF-8 file. It carries no data.
const utf8BOM = "\xef\xbb\xbf"

// readOrders parses r line by line, sending valid lines to jobs in batches
// of up to batchSize consecutive orders and rejected ones straight to
// results. A UTF-8 byte order mark at the start of the input is skipped.
// It returns the number of non-blank lines read.
//
// A batch is sent when it is full, and also whenever the input has no
// complete line ready: the next read could block (a terminal, a pipe fed
// slowly), and orders read so far must not wait for it.
func readOrders(ctx context.Context, r io.Reader, maxLine, batchSize int, jobs chan<- []bulkJob, results chan<- EnqueueRecord) (int, error) {
	lr := newLineReader(r, maxLine)
	n := 0
	var batch []bulkJob
	send := func() {
		if len(batch) == 0 {
			return
		}
		select {
		case jobs <- batch:
		case <-ctx.Done():
		}
		batch = nil
	}
	defer send()
	for ctx.Err() == nil {
		if len(batch) >= batchSize || !lr.lineReady() {
			send()
		}
		line, num, tooLong, err := lr.next()
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("read input after line %d: %w", lr.num, err)
		}
		if num == 1 {
			line = bytes.TrimPrefix(line, []byte(utf8BOM))
		}
		if !tooLong && len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		n++
		if tooLong {
			results <- EnqueueRecord{Line: num, Status: StatusRejected, Error: fmt.Sprintf("line is longer than %d bytes; is this a JSON Lines file?", maxLine)}
			continue
		}
		o, err := ParseOrderLine(line)
		if err != nil {
			results <- EnqueueRecord{Line: num, Status: StatusRejected, Error: Message(err)}
			continue
		}
		if batch == nil {
			batch = make([]bulkJob, 0, batchSize)
		}
		batch = append(batch, bulkJob{line: num, order: o})
	}
	return n, nil
}

// orderLine is one JSON Lines record. Times are strings so that a bad one
// is reported by field name.
type orderLine struct {
	OutTradeNo    string `json:"out_trade_no"`
	TransactionID string `json:"transaction_id"`
	MchID         string `json:"mchid"`
	SubMchID      string `json:"sub_mchid"`
	SubAppID      string `json:"sub_appid"`
	CreatedAt     string `json:"created_at"`
	CloseAt       string `json:"close_at"`
}

// lineFields are the keys of orderLine: a close payload's, exactly.
var lineFields = tasks.ClosePayloadFields()

// ParseOrderLine parses one JSON Lines record into a CloseOrder. It checks
// the JSON shape, the keys (exact case, known, each once: encoding/json
// would read "OUT_TRADE_NO" as out_trade_no and let a second "close_at"
// silently win) and the times; the producer validates the identifiers and
// limits. Errors wrap tasks.ErrInvalidPayload.
func ParseOrderLine(line []byte) (tasks.CloseOrder, error) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 || line[0] != '{' {
		return tasks.CloseOrder{}, fmt.Errorf("%w: not a JSON object; each line must be one object such as {\"out_trade_no\":\"ORDER-1\",\"created_at\":\"2026-11-22T10:00:00+08:00\"}", tasks.ErrInvalidPayload)
	}
	l, err := decodeOrderLine(line)
	if err != nil {
		return tasks.CloseOrder{}, err
	}
	o := tasks.CloseOrder{
		OutTradeNo: l.OutTradeNo, TransactionID: l.TransactionID,
		MchID: l.MchID, SubMchID: l.SubMchID, SubAppID: l.SubAppID,
	}
	if l.CreatedAt == "" {
		return tasks.CloseOrder{}, fmt.Errorf("%w: created_at is required (RFC 3339, e.g. 2026-11-22T10:00:00+08:00)", tasks.ErrInvalidPayload)
	}
	if o.CreatedAt, err = ParseTime("created_at", l.CreatedAt); err != nil {
		return tasks.CloseOrder{}, err
	}
	if l.CloseAt != "" {
		if o.CloseAt, err = ParseTime("close_at", l.CloseAt); err != nil {
			return tasks.CloseOrder{}, err
		}
	}
	return o, nil
}

// decodeOrderLine reads the fields of one JSON Lines record, line being
// trimmed and starting with '{'. The lines producers write (plain strings,
// exact keys) are read in one pass (strictjson.Flat); any other line by
// encoding/json and tasks.CheckJSONFields, which also word every error.
func decodeOrderLine(line []byte) (orderLine, error) {
	var raw [7][]byte // in the order of lineFields
	if strictjson.Flat(line, lineFields, raw[:]) {
		s := strictjson.String
		return orderLine{
			OutTradeNo: s(raw[0]), TransactionID: s(raw[1]), MchID: s(raw[2]), SubMchID: s(raw[3]),
			SubAppID: s(raw[4]), CreatedAt: s(raw[5]), CloseAt: s(raw[6]),
		}, nil
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	var l orderLine
	if err := dec.Decode(&l); err != nil {
		return l, fmt.Errorf("%w: %s", tasks.ErrInvalidPayload, jsonProblem(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return l, fmt.Errorf("%w: trailing data after the JSON object; put one object per line", tasks.ErrInvalidPayload)
	}
	// After Decode, so that malformed JSON keeps its precise message.
	// Decode itself matches keys ignoring case and lets a repeated key win.
	if err := tasks.CheckJSONFields(line, lineFields...); err != nil {
		return l, err
	}
	return l, nil
}

// ParseTime parses an RFC 3339 time, naming field in the error, which wraps
// tasks.ErrInvalidPayload. Go's parser accepts zone offsets that RFC 3339
// does not (+24:00, +00:60) and that encoding/json then refuses to write,
// so the offset is checked here, where the field is known.
func ParseTime(field, v string) (time.Time, error) {
	shown := v
	const maxShown = 40
	if len(shown) > maxShown {
		shown = shown[:maxShown] + "..."
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: %s %q is not an RFC 3339 time with a zone (e.g. 2026-11-22T10:00:00+08:00)", tasks.ErrInvalidPayload, field, shown)
	}
	if !validOffset(v) {
		return time.Time{}, fmt.Errorf("%w: %s %q has a zone offset out of range; use Z or -23:59 to +23:59 (e.g. +08:00)", tasks.ErrInvalidPayload, field, shown)
	}
	if _, err := t.MarshalText(); err != nil {
		return time.Time{}, fmt.Errorf("%w: %s %q is out of the range of years 0000 to 9999", tasks.ErrInvalidPayload, field, shown)
	}
	return t, nil
}

// validOffset checks the zone of an RFC 3339 time that time.Parse accepted:
// "Z", or ±hh:mm with hh <= 23 and mm <= 59 (RFC 3339 section 5.6).
func validOffset(v string) bool {
	if strings.HasSuffix(v, "Z") {
		return true
	}
	if len(v) < 6 {
		return false
	}
	off := v[len(v)-6:]
	if off[0] != '+' && off[0] != '-' || off[3] != ':' {
		return false
	}
	hh, mm := (off[1]-'0')*10+(off[2]-'0'), (off[4]-'0')*10+(off[5]-'0')
	return hh <= 23 && mm <= 59
}

// jsonProblem rewrites encoding/json errors in the operator's terms.
func jsonProblem(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("not valid JSON at byte %d: %v", syn.Offset, syn)
	case errors.As(err, &typ):
		return fmt.Sprintf("%s must be a JSON string, not a %s", typ.Field, typ.Value)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "not valid JSON: the object is cut short"
	}
	return "not valid JSON: " + err.Error()
}

// lineReader reads lines of any length with bounded memory: a line longer
// than max is skipped and reported as too long.
type lineReader struct {
	br  *bufio.Reader
	max int
	buf []byte
	num int // number of the last line returned
}

func newLineReader(r io.Reader, max int) *lineReader {
	return &lineReader{br: bufio.NewReaderSize(r, 64<<10), max: max}
}

// lineReady reports whether a whole line is buffered, so that next
// returns without reading from the underlying reader.
func (l *lineReader) lineReady() bool {
	buf, _ := l.br.Peek(l.br.Buffered()) // never reads: n <= Buffered
	return bytes.IndexByte(buf, '\n') >= 0
}

// next returns the next line without its line ending, and its number.
// The slice is valid until the next call. At the end of input it returns
// io.EOF.
func (l *lineReader) next() (line []byte, num int, tooLong bool, err error) {
	l.buf = l.buf[:0]
	seen := false
	for {
		chunk, err := l.br.ReadSlice('\n')
		if len(chunk) > 0 {
			seen = true
		}
		if !tooLong {
			if len(l.buf)+len(bytes.TrimRight(chunk, "\r\n")) > l.max {
				tooLong = true
				l.buf = l.buf[:0]
			} else {
				l.buf = append(l.buf, chunk...)
			}
		}
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case err == io.EOF && !seen:
			return nil, 0, false, io.EOF
		case err != nil && err != io.EOF:
			return nil, 0, false, err
		}
		l.num++
		return bytes.TrimRight(l.buf, "\r\n"), l.num, tooLong, nil
	}
}
