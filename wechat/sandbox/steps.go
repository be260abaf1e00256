package sandbox

import (
	"fmt"
	"net/http"
	"time"
)

// SignatureFault says how a reply's signature is spoiled.
type SignatureFault int

const (
	// SigValid signs the reply correctly. It is the zero value.
	SigValid SignatureFault = iota
	// SigBad sends a real RSA signature (v2: a well-formed sign) that does
	// not match the reply, as a tampered response would carry.
	SigBad
	// SigMissing sends no Wechatpay-* headers (v2: no sign field).
	SigMissing
)

// String returns "valid", "bad" or "missing".
func (f SignatureFault) String() string {
	switch f {
	case SigValid:
		return "valid"
	case SigBad:
		return "bad"
	case SigMissing:
		return "missing"
	}
	return fmt.Sprintf("SignatureFault(%d)", int(f))
}

// Step is a scripted reply for one close call of one order (see
// Server.Script). The zero Step means "normal behaviour", which is useful
// combined with Delay, Signature or RetryAfter.
//
// Which reply a Step produces:
//   - Malformed: a garbled body (v3: Status, or 200 if zero, with broken
//     JSON; v2: HTTP 200 with broken XML). The order is not touched.
//   - Status != 0 and Code == "": a bare HTTP error, as a gateway sends it:
//     a plain-text body and no Wechatpay-* headers (v2 as well). The order
//     is not touched.
//   - Status != 0 and Code != "": a WeChat error (v3: Status with
//     {"code","message"}, signed; v2: HTTP 200, result_code FAIL, err_code
//     derived from Code, signed). The order is not touched.
//   - Status == 0: the normal behaviour; the order may be closed.
//
// Delay then holds the reply back (after the order was processed, so a
// client that gives up has an ambiguous result to deal with, as with the
// real service), Signature spoils its signature and RetryAfter adds a
// Retry-After header.
type Step struct {
	// Status is the HTTP status to reply with; 0 means normal behaviour.
	Status int
	// Code is the WeChat error code to reply with, e.g. "SYSTEM_ERROR".
	Code string
	// Message is the error message. If empty with a Code, a generic one.
	Message string
	// Delay holds the reply back for this long, or until the request's
	// context ends.
	Delay time.Duration
	// Malformed replies with a garbled body.
	Malformed bool
	// Signature spoils the reply's signature. If zero, SigValid.
	Signature SignatureFault
	// RetryAfter adds a Retry-After header in whole seconds (rounded up).
	// If zero, no header.
	RetryAfter time.Duration
}

// bare reports whether the step is a bare HTTP error without a WeChat body.
func (st Step) bare() bool { return st.Status != 0 && st.Code == "" && !st.Malformed }

// replaces reports whether the step replaces the normal behaviour.
func (st Step) replaces() bool { return st.Status != 0 || st.Malformed }

// SystemError is a WeChat system error: v3 500 SYSTEM_ERROR; v2
// return_code SUCCESS, result_code FAIL, err_code SYSTEMERROR.
func SystemError() Step {
	return Step{Status: http.StatusInternalServerError, Code: "SYSTEM_ERROR", Message: "系统错误 (sandbox system error)"}
}

// RateLimited is a throttling reply: v3 429 RATE_LIMITED; v2 err_code
// FREQUENCY_LIMITED. A positive retryAfter adds a Retry-After header.
func RateLimited(retryAfter time.Duration) Step {
	return Step{Status: http.StatusTooManyRequests, Code: "RATE_LIMITED", Message: "请求频率超限 (sandbox rate limit)", RetryAfter: retryAfter}
}

// ServerError is a bare 5xx from a gateway, e.g. ServerError(502): a
// plain-text body, no WeChat code and no signature, for v3 and v2 alike.
func ServerError(status int) Step {
	return Step{Status: status, Signature: SigMissing}
}

// Slow processes the close normally and replies after d, or when the
// request's context ends.
func Slow(d time.Duration) Step { return Step{Delay: d} }

// MalformedBody replies with a body that does not parse (v3 status 200
// with broken JSON; v2 broken XML), leaving the order untouched.
func MalformedBody() Step { return Step{Malformed: true} }

// BadSignature processes the close normally and replies with a signature
// that does not verify.
func BadSignature() Step { return Step{Signature: SigBad} }

// MissingSignature processes the close normally and replies without
// signature headers (v2: without sign).
func MissingSignature() Step { return Step{Signature: SigMissing} }

// Fail replies with a WeChat error, e.g. Fail(403, "NO_AUTH", "no
// permission"), leaving the order untouched.
func Fail(status int, code, message string) Step {
	return Step{Status: status, Code: code, Message: message}
}

// Script queues steps for the next close calls of orderNo (an out_trade_no
// or a transaction_id): each call consumes one step, in order, then normal
// behaviour resumes. Steps add to any still queued. Only calls that pass
// authentication and request validation consume a step, so a client's
// signing bug cannot silently use up a script.
func (s *Server) Script(orderNo string, steps ...Step) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.scripts[orderNo] = append(s.scripts[orderNo], steps...)
}

// ScriptQuery queues steps for the next Query Order calls of orderNo, as
// Script does for closes: a Step with Signature SigBad gives a forged
// (badly signed) answer, one with a Status and Code a WeChat error, a zero
// Step the normal answer. Query Order calls never consume close steps, and
// random faults (Options.Rates) never apply to them.
func (s *Server) ScriptQuery(orderNo string, steps ...Step) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.qscripts[orderNo] = append(s.qscripts[orderNo], steps...)
}

// nextQueryStep pops the next scripted Query Order step for q, or returns
// the zero Step (normal behaviour).
func (s *Server) nextQueryStep(q closeReq) Step {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, _ := popStep(s.qscripts, s.queryKeys(q))
	return st
}

func (s *Server) queryKeys(q closeReq) []string {
	keys := []string{q.orderNo}
	if o := s.findLocked(q); o != nil {
		keys = append(keys, o.OutTradeNo, o.TransactionID)
	}
	return keys
}

// popStep removes and returns the first step queued under any of keys, and
// whether there was one.
func popStep(scripts map[string][]Step, keys []string) (Step, bool) {
	for _, k := range keys {
		if queue := scripts[k]; k != "" && len(queue) > 0 {
			if len(queue) == 1 {
				delete(scripts, k)
			} else {
				scripts[k] = queue[1:]
			}
			return queue[0], true
		}
	}
	return Step{}, false
}

// nextStep pops the next scripted step for the order a call names (by the
// number in the call, then by the order's other number), or draws a random
// fault (fault is then true). The zero Step means normal behaviour.
func (s *Server) nextStep(q closeReq) (st Step, fault bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, ok := popStep(s.scripts, s.queryKeys(q)); ok {
		return st, false
	}
	r := s.opts.Rates
	x := s.rng.Float64()
	for _, f := range []struct {
		p    float64
		step func() Step
	}{
		{r.SystemError, SystemError},
		{r.RateLimited, func() Step { return RateLimited(time.Second) }},
		{r.ServerError, func() Step { return ServerError(http.StatusBadGateway) }},
		{r.Slow, func() Step { return Slow(r.SlowDelay) }},
		{r.Malformed, MalformedBody},
		{r.BadSignature, BadSignature},
	} {
		if x < f.p {
			return f.step(), true
		}
		x -= f.p
	}
	return Step{}, false
}
