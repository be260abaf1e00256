package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/wxclose/wxclose/tasks"
)

// Problem codes: the machine-readable "code" of every error answer. The
// OpenAPI document lists them (components.schemas.ProblemCode).
const (
	CodeInvalidJSON          = "invalid_json"
	CodeUnknownField         = "unknown_field"
	CodeDuplicateField       = "duplicate_field"
	CodeMissingField         = "missing_field"
	CodeInvalidField         = "invalid_field"
	CodeTooManyItems         = "too_many_items"
	CodeInvalidTaskID        = "invalid_task_id"
	CodeUnauthorized         = "unauthorized"
	CodeForbidden            = "forbidden"
	CodeNotFound             = "not_found"
	CodeNoClose              = "no_close"
	CodeCloseInProgress      = "close_in_progress"
	CodeCloseCompleted       = "close_completed"
	CodeMethodNotAllowed     = "method_not_allowed"
	CodeRequestTimeout       = "request_timeout"
	CodeBodyTooLarge         = "body_too_large"
	CodeUnsupportedMediaType = "unsupported_media_type"
	CodeRedisUnavailable     = "redis_unavailable"
	CodeInternal             = "internal"
)

// ProblemTypePrefix starts the "type" URI of every problem; the code
// follows it.
const ProblemTypePrefix = "urn:wxclose:problem:"

// Problem is an RFC 9457 problem detail, the body of every error answer.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
	// Code is one of the Code* constants.
	Code string `json:"code"`
	// Field is the request field, header or path parameter at fault, if
	// there is one.
	Field string `json:"field,omitempty"`
}

var titles = map[string]string{
	CodeInvalidJSON:          "Invalid JSON",
	CodeUnknownField:         "Unknown field",
	CodeDuplicateField:       "Duplicate field",
	CodeMissingField:         "Missing field",
	CodeInvalidField:         "Invalid field",
	CodeTooManyItems:         "Too many items",
	CodeInvalidTaskID:        "Invalid task id",
	CodeUnauthorized:         "Unauthorized",
	CodeForbidden:            "Forbidden",
	CodeNotFound:             "Not found",
	CodeNoClose:              "No close task",
	CodeCloseInProgress:      "Close in progress",
	CodeCloseCompleted:       "Close already completed",
	CodeMethodNotAllowed:     "Method not allowed",
	CodeRequestTimeout:       "Request timeout",
	CodeBodyTooLarge:         "Body too large",
	CodeUnsupportedMediaType: "Unsupported media type",
	CodeRedisUnavailable:     "Queue storage unavailable",
	CodeInternal:             "Internal error",
}

func newProblem(status int, code, field, detail string) *Problem {
	return &Problem{
		Type:   ProblemTypePrefix + code,
		Title:  titles[code],
		Status: status,
		Detail: detail,
		Code:   code,
		Field:  field,
	}
}

// writeProblem sends p as application/problem+json and tells the request
// log which code was answered.
func writeProblem(w http.ResponseWriter, p *Problem) {
	if rec, ok := w.(*recorder); ok {
		rec.code = p.Code
	}
	body, _ := json.Marshal(p) // a Problem always marshals
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(p.Status)
	_, _ = w.Write(body)
}

// writeJSON sends v as application/json with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		writeProblem(w, newProblem(http.StatusInternalServerError, CodeInternal, "", "the answer could not be encoded"))
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// orderFields are the close payload's fields, as they start the messages of
// tasks' and ops' validation errors.
var orderFields = tasks.ClosePayloadFields()

// invalidOrder turns a validation error (wrapping tasks.ErrInvalidPayload)
// into a 400 problem, with the code and the field at fault.
func invalidOrder(err error) *Problem {
	code, field := classifyInvalid(err)
	return newProblem(http.StatusBadRequest, code, field, err.Error())
}

// classifyInvalid reads the code and the field out of a validation error of
// package tasks or of ops.ParseOrderLine.
//
// Those errors carry the field only in their text, so this is the one place
// that reads it back; TestClassifyInvalid runs the real validators over
// every kind of bad input, so a change in their wording fails there. A
// typed error from tasks (say a *tasks.FieldError with Field and Reason)
// would make this parsing unnecessary.
func classifyInvalid(err error) (code, field string) {
	msg := err.Error()
	rest, ok := strings.CutPrefix(msg, tasks.ErrInvalidPayload.Error()+": ")
	if !ok {
		if _, after, found := strings.Cut(msg, tasks.ErrInvalidPayload.Error()+": "); found {
			rest = after
		}
	}
	switch {
	case strings.HasPrefix(rest, "unknown field "):
		return CodeUnknownField, quotedAfter(rest, "unknown field ")
	case strings.HasPrefix(rest, "field ") && strings.Contains(rest, " must be spelt "):
		return CodeUnknownField, quotedAfter(rest, "field ")
	case strings.HasPrefix(rest, "field ") && strings.HasSuffix(rest, " appears more than once"):
		return CodeDuplicateField, quotedAfter(rest, "field ")
	case strings.HasPrefix(rest, "value of field "):
		return CodeInvalidJSON, quotedAfter(rest, "value of field ")
	case strings.HasPrefix(rest, "one of out_trade_no and transaction_id is required"):
		return CodeMissingField, "out_trade_no"
	}
	for _, f := range orderFields {
		if strings.HasPrefix(rest, f+" is required") {
			return CodeMissingField, f
		}
		if strings.HasPrefix(rest, f+" ") {
			return CodeInvalidField, f
		}
	}
	return CodeInvalidJSON, ""
}

// quotedAfter returns the Go-quoted string that follows prefix in s.
func quotedAfter(s, prefix string) string {
	q, err := strconv.QuotedPrefix(strings.TrimPrefix(s, prefix))
	if err != nil {
		return ""
	}
	v, err := strconv.Unquote(q)
	if err != nil {
		return ""
	}
	return v
}

// isInvalid reports whether err is a validation error.
func isInvalid(err error) bool { return errors.Is(err, tasks.ErrInvalidPayload) }
