package dashboard

import (
	"strings"
	"testing"

	"github.com/wxclose/wxclose/tasks"
)

func TestFormatPayload(t *testing.T) {
	tests := []struct {
		name     string
		taskType string
		payload  string
		want     string
	}{
		{"close", tasks.TypeClose,
			`{"out_trade_no":"ORDER-1","mchid":"1900000109","created_at":"2026-11-22T10:00:00Z"}`,
			"order out_trade_no=ORDER-1 mchid=1900000109 created 2026-11-22T10:00:00Z (close due after 10:05:00Z)"},
		{"close in another zone, due the next day", tasks.TypeClose,
			`{"out_trade_no":"ORDER-2","mchid":"1900000109","created_at":"2026-11-23T07:57:30+08:00"}`,
			"order out_trade_no=ORDER-2 mchid=1900000109 created 2026-11-22T23:57:30Z (close due after 2026-11-23T00:02:30Z)"},
		{"close, institutional, by transaction id", tasks.TypeClose,
			`{"transaction_id":"4200000000202611220000000001","mchid":"1900000100","sub_mchid":"1900000109","sub_appid":"wx8888888888888888","created_at":"2026-11-22T10:00:00Z"}`,
			"order transaction_id=4200000000202611220000000001 mchid=1900000100 sub_mchid=1900000109 sub_appid=wx8888888888888888 created 2026-11-22T10:00:00Z (close due after 10:05:00Z)"},
		// Unknown fields make a close payload invalid (the worker archives
		// it, issue 7 defect 5); their values are never shown.
		{"close with unknown fields is invalid and hides them", tasks.TypeClose,
			`{"out_trade_no":"ORDER-1","created_at":"2026-11-22T10:00:00Z","api_key":"0123456789abcdef0123456789abcdef"}`,
			"invalid payload (107 bytes)"},
		{"close that is not JSON", tasks.TypeClose, `-----BEGIN PRIVATE KEY-----`, "invalid payload (27 bytes)"},
		{"close that fails validation", tasks.TypeClose, `{"out_trade_no":"bad order <script>","created_at":"2026-11-22T10:00:00Z"}`, "invalid payload (73 bytes)"},
		{"close without created_at", tasks.TypeClose, `{"out_trade_no":"ORDER-1"}`, "invalid payload (26 bytes)"},
		{"close, empty", tasks.TypeClose, ``, "invalid payload (0 bytes)"},
		{"reconcile", tasks.TypeReconcile,
			`{"out_trade_no":"ORDER-1","mchid":"1900000109","created_at":"2026-11-22T10:00:00Z","detected_at":"2026-11-22T10:05:02Z","reason":"ORDERPAID"}`,
			"order out_trade_no=ORDER-1 mchid=1900000109 created 2026-11-22T10:00:00Z: reason=ORDERPAID detected_at=2026-11-22T10:05:02Z"},
		{"reconcile with a strange reason", tasks.TypeReconcile,
			`{"out_trade_no":"ORDER-1","reason":"paid by <b>card</b>"}`,
			"order out_trade_no=ORDER-1: reason=(unrecognised)"},
		{"reconcile without order", tasks.TypeReconcile, `{"reason":"ORDERPAID"}`, "invalid payload (22 bytes)"},
		{"other task type", "email:welcome", `{"to":"a@example.com","token":"s3cr3t"}`, "payload not shown (39 bytes)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := FormatPayload(tt.taskType, []byte(tt.payload)); got != tt.want {
				t.Errorf("FormatPayload() =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestFormatResult(t *testing.T) {
	tests := []struct {
		name     string
		taskType string
		result   string
		want     string
	}{
		{"closed", tasks.TypeClose,
			`{"outcome":"closed","http_status":204,"request_id":"08F4C1A2B6061-0","finished_at":"2026-11-22T10:05:02.123Z"}`,
			"outcome=closed http_status=204 request_id=08F4C1A2B6061-0 finished_at=2026-11-22T10:05:02Z"},
		{"paid", tasks.TypeClose,
			`{"outcome":"paid","code":"ORDERPAID","message":"订单已支付","http_status":400,"finished_at":"2026-11-22T18:05:02+08:00"}`,
			`outcome=paid code=ORDERPAID message="订单已支付" http_status=400 finished_at=2026-11-22T10:05:02Z`},
		{"message with control characters", tasks.TypeClose,
			`{"outcome":"already_closed","code":"ORDERCLOSED","message":"closed\n\u001b[31mred","finished_at":"2026-11-22T10:05:02Z"}`,
			`outcome=already_closed code=ORDERCLOSED message="closed  [31mred" finished_at=2026-11-22T10:05:02Z`},
		{"long message is cut", tasks.TypeClose,
			`{"outcome":"not_found","message":"` + strings.Repeat("x", 300) + `"}`,
			`outcome=not_found message="` + strings.Repeat("x", 120) + `…"`},
		{"odd code and request id are dropped", tasks.TypeClose,
			`{"outcome":"closed","code":"<img src=x>","request_id":"a b","http_status":99999}`,
			"outcome=closed"},
		// asynqmon shows results only of completed tasks: a failure record
		// there is an earlier attempt's, left by a plain close, which
		// stores none (tasks.CompletedCloseResult).
		{"plain close: no record", tasks.TypeClose, ``, "outcome=closed"},
		{"plain close after a retried failure", tasks.TypeClose,
			`{"outcome":"retry","code":"SYSTEM_ERROR","class":"retryable","message":"系统错误","http_status":500,"request_id":"req-9","attempt":2,"at":"2026-11-22T18:05:02+08:00"}`,
			`outcome=closed`},
		{"plain close after a possibly early refusal", tasks.TypeClose,
			`{"outcome":"possibly_early","code":"INVALID_REQUEST","class":"permanent","at":"2026-11-22T10:05:02Z"}`,
			`outcome=closed`},
		{"unknown outcome", tasks.TypeClose, `{"outcome":"pwned","message":"hi"}`, "invalid result (34 bytes)"},
		{"not JSON", tasks.TypeClose, `APIv3 key 0123456789abcdef`, "invalid result (26 bytes)"},
		{"empty, other task type", tasks.TypeReconcile, ``, ""},
		{"other task type", tasks.TypeReconcile, `{"booked":true}`, "result not shown (15 bytes)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := FormatResult(tt.taskType, []byte(tt.result)); got != tt.want {
				t.Errorf("FormatResult() =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func FuzzFormat(f *testing.F) {
	f.Add(tasks.TypeClose, []byte(`{"out_trade_no":"ORDER-1","created_at":"2026-11-22T10:00:00Z"}`))
	f.Add(tasks.TypeReconcile, []byte(`{"out_trade_no":"ORDER-1","reason":"ORDERPAID"}`))
	f.Add(tasks.TypeClose, []byte(`{"outcome":"closed","message":"x"}`))
	f.Fuzz(func(t *testing.T, taskType string, data []byte) {
		// Neither may panic, and neither may echo input it did not check.
		p := FormatPayload(taskType, data)
		r := FormatResult(taskType, data)
		for _, s := range []string{p, r} {
			if len(data) >= 16 && strings.Contains(s, string(data)) {
				t.Fatalf("formatted %q echoes the raw input", s)
			}
		}
	})
}
