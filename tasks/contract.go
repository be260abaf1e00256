package tasks

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/wxclose/wxclose/internal/ids"
)

// Queue names and task types. Other systems (the merchant's reconciler,
// dashboards, alert rules) depend on these exact strings.
const (
	QueueClose     = "close_order"
	TypeClose      = "order:close"
	QueueReconcile = "reconciliation"
	TypeReconcile  = "order:reconcile"
)

// MinCloseAge is WeChat Pay's rule: an order cannot be closed sooner than
// this after it was created.
const MinCloseAge = 5 * time.Minute

// MaxCreatedAtAhead bounds how far in the future created_at may lie when a
// close is enqueued or run: a larger value is a wrong clock or time zone, and
// would park the close (and leave the order payable) for a long time. The
// producer rejects such an order; the worker archives such a task with the
// reason, whoever wrote it.
const MaxCreatedAtAhead = time.Hour

// MaxCloseDelay bounds close_at, the merchant's own deadline: it may lie at
// most this long after created_at (and not before it). WeChat Pay orders
// expire long before; a later close_at is a unit or time-zone mistake.
const MaxCloseDelay = 7 * 24 * time.Hour

// ReasonOrderPaid is the reconciliation reason for an order that WeChat Pay
// reported as paid when wxclose tried to close it.
const ReasonOrderPaid = "ORDERPAID"

// ErrInvalidPayload is wrapped by every validation error; the message names
// the offending field.
var ErrInvalidPayload = errors.New("invalid close order")

// ClosePayload is the JSON payload of an order:close task.
type ClosePayload struct {
	// OutTradeNo is the merchant's order number. One of OutTradeNo and
	// TransactionID is required; when both are set, OutTradeNo is used.
	OutTradeNo string `json:"out_trade_no,omitempty"`
	// TransactionID is WeChat Pay's order number.
	TransactionID string `json:"transaction_id,omitempty"`
	// MchID is the merchant (or the institution, in institutional mode).
	// If empty, the worker's configured merchant is used.
	MchID string `json:"mchid,omitempty"`
	// SubMchID is the sub-merchant; setting it selects institutional mode.
	SubMchID string `json:"sub_mchid,omitempty"`
	// SubAppID is the sub-merchant's app id (v2 institutional mode).
	SubAppID string `json:"sub_appid,omitempty"`
	// CreatedAt is when the order was created at WeChat Pay. Required.
	CreatedAt time.Time `json:"created_at"`
	// CloseAt is the merchant's own deadline (its payment timeout): the
	// close never runs before it. At most MaxCloseDelay after CreatedAt,
	// and not before it. If zero, as early as WeChat Pay allows.
	CloseAt time.Time `json:"close_at,omitzero"`
}

// closePayloadFields are ClosePayload's JSON names, exactly as spelled.
var closePayloadFields = []string{"out_trade_no", "transaction_id", "mchid", "sub_mchid", "sub_appid", "created_at", "close_at"}

// ClosePayloadFields returns the JSON field names of a close payload, for
// CheckJSONFields.
func ClosePayloadFields() []string { return append([]string(nil), closePayloadFields...) }

// ReconcilePayload is the JSON payload of an order:reconcile task: an order
// that could not be closed because the payer paid, to be booked as paid (or
// refunded) by the merchant's reconciler.
type ReconcilePayload struct {
	OutTradeNo    string    `json:"out_trade_no,omitempty"`
	TransactionID string    `json:"transaction_id,omitempty"`
	MchID         string    `json:"mchid,omitempty"`
	SubMchID      string    `json:"sub_mchid,omitempty"`
	CreatedAt     time.Time `json:"created_at"`
	DetectedAt    time.Time `json:"detected_at"`
	Reason        string    `json:"reason"`
	// TradeState is WeChat Pay's signed trade_state ("SUCCESS", "REFUND")
	// when the paid answer was confirmed with Query Order; empty otherwise.
	TradeState string `json:"trade_state,omitempty"`
}

// OrderRef identifies one order; it is what task ids are derived from.
type OrderRef struct {
	OutTradeNo    string
	TransactionID string
	MchID         string
	SubMchID      string
}

// Ref returns the identifiers of the order p closes.
func (p ClosePayload) Ref() OrderRef {
	return OrderRef{OutTradeNo: p.OutTradeNo, TransactionID: p.TransactionID, MchID: p.MchID, SubMchID: p.SubMchID}
}

// Number returns the order number used for the close call and the task id:
// OutTradeNo if set, else TransactionID.
func (r OrderRef) Number() string {
	if r.OutTradeNo != "" {
		return r.OutTradeNo
	}
	return r.TransactionID
}

// CloseTaskID returns the id of the close task of an order. One order has
// one task id, so a second enqueue of the same order is recognised as a
// duplicate. The layout is
//
//	close:<merchant>:out_trade_no:<out_trade_no>
//	close:<merchant>:transaction_id:<transaction_id>
//
// where <merchant> is the mchid, "<mchid>.<sub_mchid>" in institutional mode,
// or "_" when the payload leaves the merchant to the worker's default. Order
// numbers cannot contain ':', so the id is unambiguous, and it never contains
// '{' or '}', which Redis Cluster would read as a hash tag.
func CloseTaskID(r OrderRef) string { return "close:" + r.idSuffix() }

// ReconcileTaskID returns the id of the reconciliation task of an order
// ("reconcile:" followed by the same suffix as CloseTaskID), so an order gets
// at most one reconciliation task however often its close runs.
func ReconcileTaskID(r OrderRef) string { return "reconcile:" + r.idSuffix() }

func (r OrderRef) idSuffix() string {
	merchant := r.MchID
	if merchant == "" {
		merchant = "_"
	}
	if r.SubMchID != "" {
		merchant += "." + r.SubMchID
	}
	if r.OutTradeNo != "" {
		return merchant + ":out_trade_no:" + r.OutTradeNo
	}
	return merchant + ":transaction_id:" + r.TransactionID
}

// Validate checks every field and returns an error wrapping
// ErrInvalidPayload that names the first bad field.
func (p ClosePayload) Validate() error {
	if err := p.Ref().Validate(); err != nil {
		return err
	}
	if p.SubAppID != "" && !ids.ValidAppID(p.SubAppID) {
		return fieldError("sub_appid", p.SubAppID, ids.AppIDRule)
	}
	if p.CreatedAt.IsZero() {
		return fmt.Errorf("%w: created_at is required (RFC 3339, e.g. 2026-11-22T10:00:00+08:00)", ErrInvalidPayload)
	}
	if p.CloseAt.IsZero() {
		return nil
	}
	if p.CloseAt.Before(p.CreatedAt) {
		return fmt.Errorf("%w: close_at %s is before created_at %s", ErrInvalidPayload,
			p.CloseAt.Format(time.RFC3339Nano), p.CreatedAt.Format(time.RFC3339Nano))
	}
	if p.CloseAt.Sub(p.CreatedAt) > MaxCloseDelay {
		return fmt.Errorf("%w: close_at %s is more than %s after created_at %s; check the unit or the time zone", ErrInvalidPayload,
			p.CloseAt.Format(time.RFC3339Nano), formatLimit(MaxCloseDelay), p.CreatedAt.Format(time.RFC3339Nano))
	}
	return nil
}

// ValidateAt is Validate plus the rules that depend on the current time:
// created_at may lie at most MaxCreatedAtAhead after now. The producer checks
// it at enqueue and the worker again before every attempt, so a task written
// by any producer is held to the same limit.
func (p ClosePayload) ValidateAt(now time.Time) error {
	if err := p.Validate(); err != nil {
		return err
	}
	if p.CreatedAt.Sub(now) > MaxCreatedAtAhead {
		return fmt.Errorf("%w: created_at %s is more than %s in the future; check the clock or the time zone", ErrInvalidPayload,
			p.CreatedAt.Format(time.RFC3339), formatLimit(MaxCreatedAtAhead))
	}
	return nil
}

// NotBefore is the first instant at which the close of p may be attempted:
// the later of creation + 5 minutes (WeChat Pay's rule) and close_at (the
// merchant's). Producers schedule after it (see DueAt); the handler never
// calls WeChat Pay before it.
func (p ClosePayload) NotBefore() time.Time {
	t := EarliestClose(p.CreatedAt)
	if p.CloseAt.After(t) {
		return p.CloseAt
	}
	return t
}

// formatLimit writes whole days and hours the way people say them.
func formatLimit(d time.Duration) string {
	if d%(24*time.Hour) == 0 {
		if d == 24*time.Hour {
			return "1 day"
		}
		return fmt.Sprintf("%d days", d/(24*time.Hour))
	}
	return d.String()
}

// Validate checks the order identifiers.
func (r OrderRef) Validate() error {
	if r.OutTradeNo == "" && r.TransactionID == "" {
		return fmt.Errorf("%w: one of out_trade_no and transaction_id is required", ErrInvalidPayload)
	}
	if r.OutTradeNo != "" && !ids.ValidOutTradeNo(r.OutTradeNo) {
		return fieldError("out_trade_no", r.OutTradeNo, ids.OutTradeNoRule)
	}
	if r.TransactionID != "" && !ids.ValidTransactionID(r.TransactionID) {
		return fieldError("transaction_id", r.TransactionID, ids.TransactionIDRule)
	}
	if r.MchID != "" && !ids.ValidMchID(r.MchID) {
		return fieldError("mchid", r.MchID, ids.MchIDRule)
	}
	if r.SubMchID != "" && !ids.ValidMchID(r.SubMchID) {
		return fieldError("sub_mchid", r.SubMchID, ids.MchIDRule)
	}
	return nil
}

// fieldError quotes the bad value (truncated) so an operator can find the
// offending record; values here are identifiers, never secrets.
func fieldError(field, value, rule string) error {
	const maxShown = 40
	if len(value) > maxShown {
		value = value[:maxShown] + "..."
	}
	return fmt.Errorf("%w: %s %q %s", ErrInvalidPayload, field, value, rule)
}

// DecodeClosePayload parses and validates an order:close payload as it was
// read from Redis. Decoding is strict, because a misspelt field would be lost
// silently (a "closeAt" would drop the merchant's deadline): the payload must
// be one JSON object whose keys are ClosePayload's JSON names exactly, each at
// most once (see CheckJSONFields). Any error wraps ErrInvalidPayload and
// names the field.
//
// The payloads producers write are read in one pass (decodeClosePayloadFast);
// any other input, valid or not, is read by CheckJSONFields and
// encoding/json, which also word every error.
func DecodeClosePayload(data []byte) (ClosePayload, error) {
	if p, ok := decodeClosePayloadFast(data); ok {
		if err := p.Validate(); err != nil {
			return ClosePayload{}, err
		}
		return p, nil
	}
	return decodeClosePayloadJSON(data)
}

// decodeClosePayloadJSON is DecodeClosePayload with CheckJSONFields and
// encoding/json, for every payload the single-pass reader leaves.
func decodeClosePayloadJSON(data []byte) (ClosePayload, error) {
	if err := CheckJSONFields(data, closePayloadFields...); err != nil {
		return ClosePayload{}, err
	}
	var p ClosePayload
	if err := json.Unmarshal(data, &p); err != nil {
		return ClosePayload{}, fmt.Errorf("%w: payload is not a close order JSON object: %v", ErrInvalidPayload, err)
	}
	if err := p.Validate(); err != nil {
		return ClosePayload{}, err
	}
	return p, nil
}

// CheckJSONFields checks that data is exactly one JSON object whose keys are
// all among known, spelt exactly (encoding/json matches keys without regard
// to case, and DisallowUnknownFields does too, so "OUT_TRADE_NO" would
// otherwise pass), each appearing once (encoding/json keeps the last of
// duplicates silently). Values are not checked beyond being valid JSON. The
// error wraps ErrInvalidPayload and names the offending key.
func CheckJSONFields(data []byte, known ...string) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("%w: payload is not a close order JSON object: %v", ErrInvalidPayload, emptyAsEOF(err))
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return fmt.Errorf("%w: payload is not a close order JSON object: it starts with %s", ErrInvalidPayload, describeToken(tok))
	}
	seen := make(map[string]bool, len(known))
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("%w: payload is not a close order JSON object: %v", ErrInvalidPayload, err)
		}
		key, _ := tok.(string) // inside an object, the decoder yields only string keys here
		if err := checkKey(key, known); err != nil {
			return err
		}
		if seen[key] {
			return fmt.Errorf("%w: field %q appears more than once", ErrInvalidPayload, clipKey(key))
		}
		seen[key] = true
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return fmt.Errorf("%w: value of field %q is not valid JSON: %v", ErrInvalidPayload, clipKey(key), err)
		}
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return fmt.Errorf("%w: payload is not a close order JSON object: %v", ErrInvalidPayload, emptyAsEOF(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: payload has trailing data after the JSON object", ErrInvalidPayload)
	}
	return nil
}

// checkKey reports a key that is not among known, suggesting the intended
// name when it differs only in case or in underscores ("OUT_TRADE_NO",
// "closeAt").
func checkKey(key string, known []string) error {
	if slices.Contains(known, key) {
		return nil
	}
	squash := func(s string) string { return strings.ToLower(strings.ReplaceAll(s, "_", "")) }
	for _, k := range known {
		switch {
		case strings.EqualFold(k, key):
			return fmt.Errorf("%w: field %q must be spelt %q (field names are case-sensitive)", ErrInvalidPayload, clipKey(key), k)
		case squash(k) == squash(key):
			return fmt.Errorf("%w: unknown field %q; did you mean %q?", ErrInvalidPayload, clipKey(key), k)
		}
	}
	return fmt.Errorf("%w: unknown field %q (known: %s)", ErrInvalidPayload, clipKey(key), strings.Join(known, ", "))
}

// clipKey shortens a key for an error message: it comes from the payload, so
// it may be long, but it is a name, never a secret.
func clipKey(key string) string {
	const maxShown = 40
	if len(key) > maxShown {
		return key[:maxShown] + "..."
	}
	return key
}

func describeToken(tok json.Token) string {
	switch v := tok.(type) {
	case json.Delim:
		return "'" + v.String() + "'"
	case string:
		return "a string"
	case nil:
		return "null"
	case bool:
		return "a boolean"
	}
	return "a number"
}

func emptyAsEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return errors.New("empty payload")
	}
	return err
}

// DecodeReconcilePayload parses an order:reconcile payload, for the
// merchant's reconciler.
func DecodeReconcilePayload(data []byte) (ReconcilePayload, error) {
	var p ReconcilePayload
	if err := json.Unmarshal(data, &p); err != nil {
		return ReconcilePayload{}, fmt.Errorf("%w: payload is not a reconcile JSON object: %v", ErrInvalidPayload, err)
	}
	r := OrderRef{OutTradeNo: p.OutTradeNo, TransactionID: p.TransactionID, MchID: p.MchID, SubMchID: p.SubMchID}
	if err := r.Validate(); err != nil {
		return ReconcilePayload{}, err
	}
	return p, nil
}

// EarliestClose is the first instant at which WeChat Pay accepts a close of
// an order created at createdAt.
func EarliestClose(createdAt time.Time) time.Time { return createdAt.Add(MinCloseAge) }

// DueAt is when a close should run: the later of closeAt (the merchant's own
// payment timeout, zero if none; ClosePayload.CloseAt) and creation +
// 5 minutes + margin, rounded up to a whole second. asynq stores run times in
// whole seconds, truncating, and can start a task up to a second before its
// stored time; rounding up and adding the margin keeps the start after the
// 5-minute mark.
func DueAt(createdAt, closeAt time.Time, margin time.Duration) time.Time {
	due := EarliestClose(createdAt).Add(max(margin, 0))
	if closeAt.After(due) {
		due = closeAt
	}
	return ceilSecond(due)
}

// DueAt is DueAt(p.CreatedAt, p.CloseAt, margin): when the close of p is
// scheduled.
func (p ClosePayload) DueAt(margin time.Duration) time.Time {
	return DueAt(p.CreatedAt, p.CloseAt, margin)
}

func ceilSecond(t time.Time) time.Time {
	if t.Nanosecond() == 0 {
		return t
	}
	return t.Truncate(time.Second).Add(time.Second)
}
