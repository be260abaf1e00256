package tasks

import (
	"errors"
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
		{"unknown fields are kept compatible", `{"out_trade_no":"A1","created_at":"2026-11-22T10:00:00Z","note":"x"}`, ""},
		{"not json", `garbage`, "not a close order JSON object"},
		{"array", `[1,2]`, "not a close order JSON object"},
		{"bad time", `{"out_trade_no":"A1","created_at":"yesterday"}`, "not a close order JSON object"},
		{"missing created_at", `{"out_trade_no":"A1"}`, "created_at is required"},
		{"trailing data", `{"out_trade_no":"A1","created_at":"2026-11-22T10:00:00Z"} {}`, "trailing data"},
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
