package tasks

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestClosePayloadValidate(t *testing.T) {
	created := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	valid := ClosePayload{OutTradeNo: "ORDER_1-a|b*c@d", MchID: "1900000109", CreatedAt: created}
	tests := []struct {
		name      string
		mutate    func(*ClosePayload)
		wantField string // "" = valid
	}{
		{"valid", func(*ClosePayload) {}, ""},
		{"transaction id only", func(p *ClosePayload) { p.OutTradeNo, p.TransactionID = "", "4200000000202611220000000001" }, ""},
		{"institutional", func(p *ClosePayload) { p.SubMchID, p.SubAppID = "1900000110", "wx_sub01" }, ""},
		{"32 chars", func(p *ClosePayload) { p.OutTradeNo = strings.Repeat("a", 32) }, ""},
		{"no order number", func(p *ClosePayload) { p.OutTradeNo = "" }, "out_trade_no and transaction_id"},
		{"33 chars", func(p *ClosePayload) { p.OutTradeNo = strings.Repeat("a", 33) }, "out_trade_no"},
		{"space", func(p *ClosePayload) { p.OutTradeNo = "ORDER 1" }, "out_trade_no"},
		{"colon", func(p *ClosePayload) { p.OutTradeNo = "a:b" }, "out_trade_no"},
		{"brace", func(p *ClosePayload) { p.OutTradeNo = "{a}" }, "out_trade_no"},
		{"unicode", func(p *ClosePayload) { p.OutTradeNo = "订单1" }, "out_trade_no"},
		{"bad transaction id", func(p *ClosePayload) { p.TransactionID = "42-00" }, "transaction_id"},
		{"letters in mchid", func(p *ClosePayload) { p.MchID = "19000x" }, "mchid"},
		{"letters in sub_mchid", func(p *ClosePayload) { p.SubMchID = "sub" }, "sub_mchid"},
		{"bad sub_appid", func(p *ClosePayload) { p.SubAppID = "wx-1" }, "sub_appid"},
		{"no created_at", func(p *ClosePayload) { p.CreatedAt = time.Time{} }, "created_at"},
		{"close_at later", func(p *ClosePayload) { p.CloseAt = created.Add(15 * time.Minute) }, ""},
		{"close_at equal to created_at", func(p *ClosePayload) { p.CloseAt = created }, ""},
		{"close_at at the limit", func(p *ClosePayload) { p.CloseAt = created.Add(MaxCloseDelay) }, ""},
		{"close_at past the limit", func(p *ClosePayload) { p.CloseAt = created.Add(MaxCloseDelay + time.Nanosecond) }, "close_at"},
		{"close_at in 2400", func(p *ClosePayload) { p.CloseAt = time.Date(2400, 1, 1, 0, 0, 0, 0, time.UTC) }, "more than 7 days after created_at"},
		{"close_at before created_at", func(p *ClosePayload) { p.CloseAt = created.Add(-time.Second) }, "close_at"},
		// The limit is absolute: a far-future created_at is checked
		// against the clock by ValidateAt, not here.
		{"both order numbers", func(p *ClosePayload) { p.TransactionID = "4200000000202611220000000001" }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := valid
			tt.mutate(&p)
			err := p.Validate()
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidPayload) || !strings.Contains(err.Error(), tt.wantField) {
				t.Fatalf("Validate() = %v, want ErrInvalidPayload naming %q", err, tt.wantField)
			}
		})
	}
}

func TestDecodeClosePayload(t *testing.T) {
	tests := []struct {
		name    string
		data    string
		wantErr string
	}{
		{"ok", `{"out_trade_no":"A1","created_at":"2026-11-22T10:00:00+08:00"}`, ""},
		{"every field", `{"out_trade_no":"A1","transaction_id":"42","mchid":"1","sub_mchid":"2","sub_appid":"wx_1",` +
			`"created_at":"2026-11-22T10:00:00Z","close_at":"2026-11-22T10:15:00Z"}`, ""},
		{"escaped key is the same key", `{"out\u005ftrade_no":"A1","created_at":"2026-11-22T10:00:00Z"}`, ""},
		{"whitespace around", " \n{ \"out_trade_no\" : \"A1\" ,\"created_at\":\"2026-11-22T10:00:00Z\"}\n\t", ""},
		{"null close_at is none", `{"out_trade_no":"A1","created_at":"2026-11-22T10:00:00Z","close_at":null}`, ""},
		// Strictness: a producer's typo must not drop a field silently.
		{"unknown field", `{"out_trade_no":"A1","created_at":"2026-11-22T10:00:00Z","note":"x"}`, `unknown field "note"`},
		{"camelCase close_at", `{"out_trade_no":"A1","created_at":"2026-11-22T10:00:00Z","closeAt":"2026-11-22T11:00:00Z"}`,
			`unknown field "closeAt"; did you mean "close_at"?`},
		{"upper-case key", `{"OUT_TRADE_NO":"A1","created_at":"2026-11-22T10:00:00Z"}`, `field "OUT_TRADE_NO" must be spelt "out_trade_no"`},
		{"mixed-case key", `{"out_trade_no":"A1","Created_At":"2026-11-22T10:00:00Z"}`, `"Created_At" must be spelt "created_at"`},
		{"duplicate key", `{"out_trade_no":"A1","out_trade_no":"A2","created_at":"2026-11-22T10:00:00Z"}`, `field "out_trade_no" appears more than once`},
		{"duplicate via escape", `{"out_trade_no":"A1","out\u005ftrade_no":"A2","created_at":"2026-11-22T10:00:00Z"}`, `appears more than once`},
		{"unknown object value", `{"out_trade_no":"A1","created_at":"2026-11-22T10:00:00Z","x":{"close_at":1}}`, `unknown field "x"`},
		{"long unknown key is clipped", `{"` + strings.Repeat("k", 100) + `":1}`, `unknown field "` + strings.Repeat("k", 40) + `..."`},
		{"not json", `garbage`, "not a close order JSON object"},
		{"array", `[1,2]`, "not a close order JSON object"},
		{"null", `null`, "not a close order JSON object"},
		{"string", `"x"`, "not a close order JSON object"},
		{"unterminated", `{"out_trade_no":"A1"`, "not a close order JSON object"},
		{"trailing comma", `{"out_trade_no":"A1",}`, "not a close order JSON object"},
		{"bad value", `{"out_trade_no":"A1","created_at":tru}`, `value of field "created_at" is not valid JSON`},
		{"wrong type", `{"out_trade_no":1,"created_at":"2026-11-22T10:00:00Z"}`, "out_trade_no"},
		{"bad time", `{"out_trade_no":"A1","created_at":"yesterday"}`, "not a close order JSON object"},
		{"missing created_at", `{"out_trade_no":"A1"}`, "created_at is required"},
		{"close_at before created_at", `{"out_trade_no":"A1","created_at":"2026-11-22T10:00:00Z","close_at":"2026-11-22T09:00:00Z"}`, "close_at"},
		{"trailing data", `{"out_trade_no":"A1","created_at":"2026-11-22T10:00:00Z"} {}`, "trailing data"},
		{"trailing garbage", `{"out_trade_no":"A1","created_at":"2026-11-22T10:00:00Z"}x`, "trailing data"},
		{"empty", ``, "not a close order JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeClosePayload([]byte(tt.data))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("DecodeClosePayload = %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidPayload) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("DecodeClosePayload = %v, want ErrInvalidPayload containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestCheckJSONFields(t *testing.T) {
	known := []string{"out_trade_no", "created_at", "close_at"}
	tests := []struct {
		data    string
		wantErr string
	}{
		{`{}`, ""},
		{`{"out_trade_no":"A","created_at":"x","close_at":{"nested":[1,{"a":null}]}}`, ""},
		{`{"OUT_TRADE_NO":"A"}`, `"OUT_TRADE_NO" must be spelt "out_trade_no"`},
		{`{"outTradeNo":"A"}`, `did you mean "out_trade_no"?`},
		{`{"close_at":1,"close_at":2}`, `"close_at" appears more than once`},
		{`{"mchid":"1"}`, `unknown field "mchid" (known: out_trade_no, created_at, close_at)`},
		{`{"close_at":1}{"b":2}`, "trailing data"},
		{`[]`, "it starts with '['"},
		{`1`, "it starts with a number"},
		{`true`, "it starts with a boolean"},
		{``, "empty payload"},
	}
	for _, tt := range tests {
		err := CheckJSONFields([]byte(tt.data), known...)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("CheckJSONFields(%s) = %v, want nil", tt.data, err)
		case tt.wantErr != "" && (!errors.Is(err, ErrInvalidPayload) || !strings.Contains(fmt.Sprint(err), tt.wantErr)):
			t.Errorf("CheckJSONFields(%s) = %v, want ErrInvalidPayload containing %q", tt.data, err, tt.wantErr)
		}
	}
	if got := ClosePayloadFields(); len(got) != 7 || got[len(got)-1] != "close_at" {
		t.Errorf("ClosePayloadFields() = %v", got)
	}
}

// TestClosePayloadFieldsMatchJSON keeps the strict decoder's list in step
// with the struct: every JSON name of ClosePayload is known, and nothing else.
func TestClosePayloadFieldsMatchJSON(t *testing.T) {
	full := ClosePayload{OutTradeNo: "A", TransactionID: "1", MchID: "1", SubMchID: "2", SubAppID: "wx",
		CreatedAt: time.Unix(1, 0), CloseAt: time.Unix(2, 0)}
	data, err := json.Marshal(full)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	if len(m) != len(ClosePayloadFields()) {
		t.Fatalf("ClosePayload marshals %d fields, ClosePayloadFields lists %d", len(m), len(ClosePayloadFields()))
	}
	for _, f := range ClosePayloadFields() {
		if _, ok := m[f]; !ok {
			t.Errorf("ClosePayloadFields lists %q, which ClosePayload does not marshal", f)
		}
	}
	// A payload without close_at is stored without it.
	data, _ = json.Marshal(ClosePayload{OutTradeNo: "A", CreatedAt: time.Unix(1, 0).UTC()})
	if strings.Contains(string(data), "close_at") {
		t.Fatalf("zero close_at is stored: %s", data)
	}
	got, err := DecodeClosePayload(data)
	if err != nil || !got.CloseAt.IsZero() {
		t.Fatalf("round trip = %+v, %v", got, err)
	}
}

func FuzzDecodeClosePayload(f *testing.F) {
	for _, s := range []string{
		`{"out_trade_no":"A1","created_at":"2026-11-22T10:00:00Z"}`,
		`{"out_trade_no":"A1","created_at":"2026-11-22T10:00:00Z","close_at":"2026-11-22T10:30:00Z"}`,
		`{"OUT_TRADE_NO":"A1","created_at":"2026-11-22T10:00:00Z"}`,
		`{"out_trade_no":"A1","out_trade_no":"A2","created_at":"2026-11-22T10:00:00Z"}`,
		`{"out\u005Ftrade_no":"A1","created_at":"2026-11-22T10:00:00Z"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := DecodeClosePayload(data)
		if err != nil {
			if !errors.Is(err, ErrInvalidPayload) {
				t.Fatalf("error %v does not wrap ErrInvalidPayload", err)
			}
			return
		}
		// Whatever is accepted has only exact, known, single keys, and
		// survives a round trip unchanged.
		var m map[string]json.RawMessage
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatalf("accepted %q, which is not a JSON object: %v", data, err)
		}
		for k := range m {
			if !slices.Contains(ClosePayloadFields(), k) {
				t.Fatalf("accepted unknown key %q in %q", k, data)
			}
		}
		again, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		p2, err := DecodeClosePayload(again)
		if err != nil || !p2.CreatedAt.Equal(p.CreatedAt) || !p2.CloseAt.Equal(p.CloseAt) || p2.Ref() != p.Ref() || p2.SubAppID != p.SubAppID {
			t.Fatalf("round trip of %q: %+v, %v; want %+v", again, p2, err, p)
		}
	})
}

func TestValidateAtCreatedAtLimit(t *testing.T) {
	now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	p := ClosePayload{OutTradeNo: "A1", CreatedAt: now}
	for _, tt := range []struct {
		created time.Time
		ok      bool
	}{
		{now.Add(-24 * time.Hour), true},
		{now.Add(MaxCreatedAtAhead), true},
		{now.Add(MaxCreatedAtAhead + time.Nanosecond), false},
		{time.Date(2400, 1, 1, 0, 0, 0, 0, time.UTC), false},
		{time.Unix(1<<40, 0), false},
	} {
		p.CreatedAt = tt.created
		err := p.ValidateAt(now)
		if tt.ok != (err == nil) || (err != nil && (!errors.Is(err, ErrInvalidPayload) || !strings.Contains(err.Error(), "created_at"))) {
			t.Errorf("ValidateAt with created_at %v = %v, want ok=%v", tt.created, err, tt.ok)
		}
	}
	// ValidateAt includes Validate.
	if err := (ClosePayload{CreatedAt: now}).ValidateAt(now); !errors.Is(err, ErrInvalidPayload) {
		t.Errorf("ValidateAt without an order number = %v", err)
	}
}

func TestNotBefore(t *testing.T) {
	created := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		closeAt, want time.Time
	}{
		{time.Time{}, created.Add(MinCloseAge)},
		{created.Add(time.Minute), created.Add(MinCloseAge)},
		{created.Add(time.Hour), created.Add(time.Hour)},
	} {
		p := ClosePayload{OutTradeNo: "A1", CreatedAt: created, CloseAt: tt.closeAt}
		if got := p.NotBefore(); !got.Equal(tt.want) {
			t.Errorf("NotBefore with close_at %v = %v, want %v", tt.closeAt, got, tt.want)
		}
		if due := p.DueAt(0); due.Before(p.NotBefore()) {
			t.Errorf("DueAt %v is before NotBefore %v", due, p.NotBefore())
		}
	}
}

// TestProducerPayload covers what EnqueueClose stores, without Redis.
func TestProducerPayload(t *testing.T) {
	now := time.Date(2026, 11, 22, 10, 0, 0, 300_000_000, time.UTC)
	p := &Producer{cfg: ProducerConfig{MchID: "1900000109", Now: func() time.Time { return now }}.withDefaults()}
	tests := []struct {
		name    string
		o       CloseOrder
		wantDue time.Time
		wantErr string
	}{
		{"defaults", CloseOrder{OutTradeNo: "A1"}, time.Date(2026, 11, 22, 10, 5, 2, 0, time.UTC), ""},
		{"close_at is stored and decides the due time", CloseOrder{OutTradeNo: "A1", CreatedAt: now, CloseAt: now.Add(15 * time.Minute)},
			now.Add(15 * time.Minute).Truncate(time.Second).Add(time.Second), ""},
		{"close_at before created_at", CloseOrder{OutTradeNo: "A1", CreatedAt: now, CloseAt: now.Add(-time.Minute)}, time.Time{}, "close_at"},
		{"close_at beyond 7 days", CloseOrder{OutTradeNo: "A1", CreatedAt: now, CloseAt: now.Add(8 * 24 * time.Hour)}, time.Time{}, "7 days"},
		{"created_at too far ahead", CloseOrder{OutTradeNo: "A1", CreatedAt: now.Add(2 * time.Hour)}, time.Time{}, "in the future"},
		{"both numbers: out_trade_no names the task", CloseOrder{OutTradeNo: "A1", TransactionID: "42", CreatedAt: now},
			time.Date(2026, 11, 22, 10, 5, 2, 0, time.UTC), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pl, due, err := p.Payload(tt.o)
			if tt.wantErr != "" {
				if !errors.Is(err, ErrInvalidPayload) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Payload = %v, want ErrInvalidPayload containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !due.Equal(tt.wantDue) || !pl.CloseAt.Equal(tt.o.CloseAt) || pl.MchID != "1900000109" {
				t.Fatalf("Payload = %+v due %v, want close_at %v due %v", pl, due, tt.o.CloseAt, tt.wantDue)
			}
			// What is stored decodes strictly, and the worker accepts its id.
			data, _ := json.Marshal(pl)
			back, err := DecodeClosePayload(data)
			if err != nil || !back.CloseAt.Equal(pl.CloseAt) || CloseTaskID(back.Ref()) != CloseTaskID(pl.Ref()) {
				t.Fatalf("stored payload %s decodes to %+v, %v", data, back, err)
			}
			if want := "close:1900000109:out_trade_no:A1"; CloseTaskID(pl.Ref()) != want {
				t.Fatalf("task id %s, want %s", CloseTaskID(pl.Ref()), want)
			}
		})
	}
}

func TestTaskIDs(t *testing.T) {
	tests := []struct {
		ref        OrderRef
		close, rec string
	}{
		{OrderRef{OutTradeNo: "A1", MchID: "1900000109"}, "close:1900000109:out_trade_no:A1", "reconcile:1900000109:out_trade_no:A1"},
		{OrderRef{OutTradeNo: "A1"}, "close:_:out_trade_no:A1", "reconcile:_:out_trade_no:A1"},
		{OrderRef{TransactionID: "42", MchID: "1", SubMchID: "2"}, "close:1.2:transaction_id:42", "reconcile:1.2:transaction_id:42"},
		{OrderRef{OutTradeNo: "A1", TransactionID: "42", MchID: "1"}, "close:1:out_trade_no:A1", "reconcile:1:out_trade_no:A1"},
	}
	for _, tt := range tests {
		if got := CloseTaskID(tt.ref); got != tt.close {
			t.Errorf("CloseTaskID(%+v) = %q, want %q", tt.ref, got, tt.close)
		}
		if got := ReconcileTaskID(tt.ref); got != tt.rec {
			t.Errorf("ReconcileTaskID(%+v) = %q, want %q", tt.ref, got, tt.rec)
		}
		if strings.ContainsAny(CloseTaskID(tt.ref), "{}") {
			t.Errorf("task id %q contains a Redis Cluster hash tag", CloseTaskID(tt.ref))
		}
	}
}

func TestDueAt(t *testing.T) {
	created := time.Date(2026, 11, 22, 10, 0, 0, 250_000_000, time.UTC)
	tests := []struct {
		name    string
		closeAt time.Time
		margin  time.Duration
		want    time.Time
	}{
		{"rounds up after 5m + margin", time.Time{}, time.Second, time.Date(2026, 11, 22, 10, 5, 2, 0, time.UTC)},
		{"zero margin still rounds up", time.Time{}, 0, time.Date(2026, 11, 22, 10, 5, 1, 0, time.UTC)},
		{"negative margin counts as zero", time.Time{}, -time.Minute, time.Date(2026, 11, 22, 10, 5, 1, 0, time.UTC)},
		{"earlier close_at ignored", created.Add(time.Minute), time.Second, time.Date(2026, 11, 22, 10, 5, 2, 0, time.UTC)},
		{"later close_at wins", created.Add(30 * time.Minute), time.Second, time.Date(2026, 11, 22, 10, 30, 1, 0, time.UTC)},
		{"whole-second close_at kept", time.Date(2026, 11, 22, 11, 0, 0, 0, time.UTC), time.Second, time.Date(2026, 11, 22, 11, 0, 0, 0, time.UTC)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := DueAt(created, tt.closeAt, tt.margin)
			if !got.Equal(tt.want) {
				t.Fatalf("DueAt = %s, want %s", got, tt.want)
			}
			if got.Before(EarliestClose(created)) {
				t.Fatalf("DueAt %s is before creation + 5 minutes", got)
			}
		})
	}
}
