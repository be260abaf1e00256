package dashboard

import (
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/wxclose/wxclose/tasks"
)

// maxMessageRunes caps the WeChat Pay message shown for a result.
const maxMessageRunes = 120

// FormatPayload renders a task payload for the dashboard, for example
//
//	order out_trade_no=ORDER-1 mchid=1900000109 created 2026-11-22T10:00:00Z (close due after 10:05:00Z)
//
// It prints only the known, validated fields of order:close and
// order:reconcile payloads, never the raw bytes: a payload that does not
// decode is shown as "invalid payload (N bytes)" and one of another task
// type as "payload not shown (N bytes)". It matches
// asynqmon.PayloadFormatterFunc.
func FormatPayload(taskType string, payload []byte) string {
	switch taskType {
	case tasks.TypeClose:
		p, err := tasks.DecodeClosePayload(payload)
		if err != nil {
			return invalid("payload", payload)
		}
		var b strings.Builder
		b.WriteString("order")
		writeRef(&b, p.Ref())
		field(&b, "sub_appid", p.SubAppID)
		created := p.CreatedAt.UTC()
		// The real due time depends on the merchant's deadline and the
		// worker's margin, which the payload does not carry; WeChat Pay's
		// 5-minute rule is the bound that always holds. asynqmon shows the
		// scheduled time beside the payload.
		fmt.Fprintf(&b, " created %s (close due after %s)", stamp(created), stampOnDay(tasks.EarliestClose(created), created))
		return b.String()
	case tasks.TypeReconcile:
		p, err := tasks.DecodeReconcilePayload(payload)
		if err != nil {
			return invalid("payload", payload)
		}
		var b strings.Builder
		b.WriteString("order")
		writeRef(&b, tasks.OrderRef{OutTradeNo: p.OutTradeNo, TransactionID: p.TransactionID, MchID: p.MchID, SubMchID: p.SubMchID})
		if !p.CreatedAt.IsZero() {
			fmt.Fprintf(&b, " created %s", stamp(p.CreatedAt))
		}
		reason := p.Reason
		if !isCode(reason) {
			reason = "(unrecognised)"
		}
		fmt.Fprintf(&b, ": reason=%s", reason)
		if !p.DetectedAt.IsZero() {
			fmt.Fprintf(&b, " detected_at=%s", stamp(p.DetectedAt))
		}
		return b.String()
	}
	return fmt.Sprintf("payload not shown (%d bytes)", len(payload))
}

// FormatResult renders the result of a completed task for the dashboard.
// asynqmon v0.7.2 calls it with the task type only when it lists completed
// tasks (its task detail page passes an empty type, shown as "result not
// shown"), so a close's result is read as a completed close's
// (tasks.CompletedCloseResult): the stored CloseResult, for example
//
//	outcome=paid code=ORDERPAID message="订单已支付" http_status=400 finished_at=2026-11-22T10:05:02Z
//
// or, for a plain close, which stores no record (or keeps an earlier
// attempt's failure), "outcome=closed". It prints only the known fields of
// the record, each checked; anything else is summarised by its size. It
// matches asynqmon.ResultFormatterFunc.
func FormatResult(taskType string, result []byte) string {
	if taskType != tasks.TypeClose {
		if len(result) == 0 {
			return ""
		}
		return fmt.Sprintf("result not shown (%d bytes)", len(result))
	}
	r, err := tasks.CompletedCloseResult(result, time.Time{})
	if err != nil {
		return invalid("result", result)
	}
	var b strings.Builder
	writeAnswer(&b, r.Outcome, r.Code, r.Message, r.HTTPStatus, r.RequestID)
	if !r.FinishedAt.IsZero() {
		field(&b, "finished_at", stamp(r.FinishedAt))
	}
	return b.String()
}

// writeAnswer writes the fields results and failures share, dropping
// values that do not look like what WeChat Pay sends.
func writeAnswer(b *strings.Builder, outcome, code, message string, status int, requestID string) {
	b.WriteString("outcome=" + outcome)
	if isCode(code) {
		field(b, "code", code)
	}
	if m := cleanMessage(message); m != "" {
		fmt.Fprintf(b, " message=%q", m)
	}
	if status >= 100 && status <= 599 {
		fmt.Fprintf(b, " http_status=%d", status)
	}
	if isRequestID(requestID) {
		field(b, "request_id", requestID)
	}
}

func invalid(what string, data []byte) string {
	return fmt.Sprintf("invalid %s (%d bytes)", what, len(data))
}

// writeRef writes the order's identifiers, which tasks' validation has
// restricted to letters, digits and a few punctuation marks.
func writeRef(b *strings.Builder, r tasks.OrderRef) {
	field(b, "out_trade_no", r.OutTradeNo)
	field(b, "transaction_id", r.TransactionID)
	field(b, "mchid", r.MchID)
	field(b, "sub_mchid", r.SubMchID)
}

func field(b *strings.Builder, name, value string) {
	if value != "" {
		b.WriteString(" " + name + "=" + value)
	}
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// stampOnDay shortens t to its time of day when it falls on the same UTC
// day as ref.
func stampOnDay(t, ref time.Time) string {
	t, ref = t.UTC(), ref.UTC()
	if t.YearDay() == ref.YearDay() && t.Year() == ref.Year() {
		return t.Format("15:04:05Z07:00")
	}
	return stamp(t)
}

// isCode accepts WeChat Pay's error codes and wxclose's reasons
// (ORDERPAID, NO_AUTH, ...).
func isCode(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

func isRequestID(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// cleanMessage keeps WeChat Pay's human-readable message (often Chinese)
// printable and short.
func cleanMessage(m string) string {
	if !utf8.ValidString(m) {
		return ""
	}
	m = strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return ' '
	}, strings.TrimSpace(m))
	if utf8.RuneCountInString(m) > maxMessageRunes {
		m = string([]rune(m)[:maxMessageRunes]) + "…"
	}
	return m
}
