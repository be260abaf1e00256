package sandbox

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// Admin endpoints let other processes (the dev-mode worker, docker compose
// smoke tests) drive a sandbox started by cmd/sandbox. They are not part of
// WeChat Pay, carry no authentication and must never be exposed beyond a
// development machine.

func (s *Server) adminRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /sandbox/orders", s.adminAddOrder)
	mux.HandleFunc("GET /sandbox/orders/{no}", s.adminGetOrder)
	mux.HandleFunc("POST /sandbox/orders/{no}/script", s.adminScript)
	mux.HandleFunc("POST /sandbox/orders/{no}/query-script", s.adminQueryScript)
	mux.HandleFunc("GET /sandbox/settings", s.adminGetSettings)
	mux.HandleFunc("POST /sandbox/settings", s.adminSetSettings)
	mux.HandleFunc("GET /sandbox/calls", s.adminCalls)
	mux.HandleFunc("POST /sandbox/platform-cert/rotate", s.adminRotate)
	mux.HandleFunc("GET /sandbox/rate-limit", s.adminGetRateLimits)
	mux.HandleFunc("POST /sandbox/rate-limit", s.adminSetRateLimit)
}

// orderJSON is the admin representation of an Order.
type orderJSON struct {
	OutTradeNo    string `json:"out_trade_no,omitempty"`
	TransactionID string `json:"transaction_id,omitempty"`
	MchID         string `json:"mchid,omitempty"`
	SubMchID      string `json:"sub_mchid,omitempty"`
	CreatedAt     string `json:"created_at,omitempty"` // RFC 3339
	State         string `json:"state,omitempty"`
}

func toOrderJSON(o Order) orderJSON {
	j := orderJSON{
		OutTradeNo: o.OutTradeNo, TransactionID: o.TransactionID,
		MchID: o.MchID, SubMchID: o.SubMchID, State: o.State.String(),
	}
	if !o.CreatedAt.IsZero() {
		j.CreatedAt = o.CreatedAt.Format(time.RFC3339Nano)
	}
	return j
}

func adminError(w http.ResponseWriter, status int, format string, args ...any) {
	writeJSON(w, status, map[string]string{"error": fmt.Sprintf(format, args...)})
}

func decodeStrict(r *http.Request, v any) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("invalid JSON body: %v", err)
	}
	return nil
}

// adminAddOrder: POST /sandbox/orders {"out_trade_no","transaction_id",
// "mchid","sub_mchid","created_at"(RFC 3339; if absent, now),"state"}.
func (s *Server) adminAddOrder(w http.ResponseWriter, r *http.Request) {
	var j orderJSON
	if err := decodeStrict(r, &j); err != nil {
		adminError(w, http.StatusBadRequest, "%v", err)
		return
	}
	if j.OutTradeNo == "" && j.TransactionID == "" {
		adminError(w, http.StatusBadRequest, "out_trade_no or transaction_id is required")
		return
	}
	st, err := parseState(j.State)
	if err != nil {
		adminError(w, http.StatusBadRequest, "%v", err)
		return
	}
	created := s.opts.Now()
	if j.CreatedAt != "" {
		if created, err = time.Parse(time.RFC3339Nano, j.CreatedAt); err != nil {
			adminError(w, http.StatusBadRequest, "created_at %q is not RFC 3339 (e.g. 2025-01-02T15:04:05+08:00)", j.CreatedAt)
			return
		}
	}
	o := Order{MchID: j.MchID, SubMchID: j.SubMchID, OutTradeNo: j.OutTradeNo, TransactionID: j.TransactionID, CreatedAt: created, State: st}
	s.AddOrder(o)
	if o.MchID == "" {
		o.MchID = s.opts.MchID
	}
	writeJSON(w, http.StatusCreated, toOrderJSON(o))
}

// adminGetOrder: GET /sandbox/orders/{order_no}.
func (s *Server) adminGetOrder(w http.ResponseWriter, r *http.Request) {
	o, ok := s.Order(r.PathValue("no"))
	if !ok {
		adminError(w, http.StatusNotFound, "no order %q", r.PathValue("no"))
		return
	}
	writeJSON(w, http.StatusOK, toOrderJSON(o))
}

// stepJSON is the admin representation of a Step.
type stepJSON struct {
	Status     int    `json:"status"`
	Code       string `json:"code"`
	Message    string `json:"message"`
	Delay      string `json:"delay"` // Go duration, e.g. "2s"
	Malformed  bool   `json:"malformed"`
	Signature  string `json:"signature"`   // "", "valid", "bad", "missing"
	RetryAfter string `json:"retry_after"` // Go duration
}

func (j stepJSON) step(i int) (Step, error) {
	st := Step{Status: j.Status, Code: j.Code, Message: j.Message, Malformed: j.Malformed}
	if j.Status != 0 && (j.Status < 100 || j.Status > 599) {
		return Step{}, fmt.Errorf("step %d: status %d is not an HTTP status", i, j.Status)
	}
	for _, d := range []struct {
		name string
		in   string
		out  *time.Duration
	}{{"delay", j.Delay, &st.Delay}, {"retry_after", j.RetryAfter, &st.RetryAfter}} {
		if d.in == "" {
			continue
		}
		v, err := time.ParseDuration(d.in)
		if err != nil || v < 0 {
			return Step{}, fmt.Errorf("step %d: %s %q is not a non-negative Go duration like \"2s\"", i, d.name, d.in)
		}
		*d.out = v
	}
	switch j.Signature {
	case "", "valid":
	case "bad":
		st.Signature = SigBad
	case "missing":
		st.Signature = SigMissing
	default:
		return Step{}, fmt.Errorf(`step %d: signature %q is not one of "valid", "bad", "missing"`, i, j.Signature)
	}
	return st, nil
}

// adminScript: POST /sandbox/orders/{order_no}/script [step, ...].
func (s *Server) adminScript(w http.ResponseWriter, r *http.Request) {
	s.adminSteps(w, r, s.Script)
}

// adminQueryScript: POST /sandbox/orders/{order_no}/query-script
// [step, ...], steps for Query Order calls (see ScriptQuery); for example
// [{"signature":"bad"}] forges the next answer.
func (s *Server) adminQueryScript(w http.ResponseWriter, r *http.Request) {
	s.adminSteps(w, r, s.ScriptQuery)
}

func (s *Server) adminSteps(w http.ResponseWriter, r *http.Request, queue func(string, ...Step)) {
	var js []stepJSON
	if err := decodeStrict(r, &js); err != nil {
		adminError(w, http.StatusBadRequest, "%v (want a JSON list of steps)", err)
		return
	}
	steps := make([]Step, 0, len(js))
	for i, j := range js {
		st, err := j.step(i)
		if err != nil {
			adminError(w, http.StatusBadRequest, "%v", err)
			return
		}
		steps = append(steps, st)
	}
	queue(r.PathValue("no"), steps...)
	writeJSON(w, http.StatusOK, map[string]int{"queued": len(steps)})
}

// settingsJSON is the admin representation of the settings that can change
// at run time. A field left out of a POST is left unchanged.
type settingsJSON struct {
	UnsignedFinalAnswers *bool `json:"unsigned_final_answers,omitempty"`
}

func (s *Server) settings() settingsJSON {
	u := s.UnsignedFinalAnswers()
	return settingsJSON{UnsignedFinalAnswers: &u}
}

// adminGetSettings: GET /sandbox/settings.
func (s *Server) adminGetSettings(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.settings())
}

// adminSetSettings: POST /sandbox/settings {"unsigned_final_answers":true};
// replies with the settings now in force.
func (s *Server) adminSetSettings(w http.ResponseWriter, r *http.Request) {
	var j settingsJSON
	if err := decodeStrict(r, &j); err != nil {
		adminError(w, http.StatusBadRequest, "%v (want {\"unsigned_final_answers\": true|false})", err)
		return
	}
	if j.UnsignedFinalAnswers != nil {
		s.SetUnsignedFinalAnswers(*j.UnsignedFinalAnswers)
	}
	writeJSON(w, http.StatusOK, s.settings())
}

// adminCalls: GET /sandbox/calls.
func (s *Server) adminCalls(w http.ResponseWriter, r *http.Request) {
	calls := s.Calls()
	if calls == nil {
		calls = []Call{}
	}
	writeJSON(w, http.StatusOK, calls)
}

// adminRotate: POST /sandbox/platform-cert/rotate.
func (s *Server) adminRotate(w http.ResponseWriter, r *http.Request) {
	serial, err := s.RotatePlatformCert()
	if err != nil {
		adminError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"serial_no": serial})
}
