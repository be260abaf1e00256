package tasks

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// decodeClosePayloadOld is DecodeClosePayload as it was before the
// single-pass reader: the key check (CheckJSONFields), then encoding/json,
// then Validate. It is the oracle of FuzzDecodeClosePayloadEquivalence.
func decodeClosePayloadOld(data []byte) (ClosePayload, error) {
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

// sameDecode compares two decodes field by field, times by instant and
// offset (what a payload's time carries).
func sameDecode(a ClosePayload, aerr error, b ClosePayload, berr error) bool {
	if (aerr == nil) != (berr == nil) || aerr != nil && aerr.Error() != berr.Error() {
		return false
	}
	sameTime := func(x, y time.Time) bool {
		_, xo := x.Zone()
		_, yo := y.Zone()
		return x.Equal(y) && xo == yo && x.IsZero() == y.IsZero()
	}
	return a.OutTradeNo == b.OutTradeNo && a.TransactionID == b.TransactionID && a.MchID == b.MchID &&
		a.SubMchID == b.SubMchID && a.SubAppID == b.SubAppID &&
		sameTime(a.CreatedAt, b.CreatedAt) && sameTime(a.CloseAt, b.CloseAt)
}

var decodeSeeds = []string{
	`{"out_trade_no":"P202611221030150000001","mchid":"1900000109","created_at":"2026-11-22T10:30:15.123456789Z"}`,
	`{"out_trade_no":"O-1","transaction_id":"4200000000202611220000000001","mchid":"1900000109","sub_mchid":"1900000110","sub_appid":"wx8888888888888888","created_at":"2026-11-22T10:30:15+08:00","close_at":"2026-11-22T11:00:00+08:00"}`,
	" \t\r\n{ \"out_trade_no\" : \"A\" , \"created_at\" : \"2026-11-22T10:00:00Z\" } \n",
	`{}`,
	`{"out_trade_no":null,"transaction_id":"42","created_at":"2026-11-22T10:00:00Z","close_at":null}`,
	`{"out_trade_no":"A","out_trade_no":"B","created_at":"2026-11-22T10:00:00Z"}`,
	`{"OUT_TRADE_NO":"A","created_at":"2026-11-22T10:00:00Z"}`,
	`{"closeAt":"2026-11-22T10:00:00Z","out_trade_no":"A","created_at":"2026-11-22T10:00:00Z"}`,
	`{"out_trade_no":"A","created_at":"2026-11-22T10:00:00Z"} {}`,
	`{"out_trade_no":"A","created_at":"2026-11-22T10:00:00Z"}x`,
	`{"out_trade_no":"A","created_at":"2026-11-22 10:00:00Z"}`,
	`{"out_trade_no":"A","created_at":"2026-11-22T10:00:00+24:00"}`,
	`{"out_trade_no":"A","created_at":""}`,
	`{"out_trade_no":"A","created_at":1}`,
	`{"out_trade_no":1,"created_at":"2026-11-22T10:00:00Z"}`,
	`{"out_trade_no":"\u0041","created_at":"2026-11-22T10:00:00Z"}`,
	`{"out\u005ftrade_no":"A","created_at":"2026-11-22T10:00:00Z"}`,
	`{"out_trade_no":"订单","created_at":"2026-11-22T10:00:00Z"}`,
	`{"out_trade_no":"A","created_at":"2026-11-22T10:00:00Z",}`,
	`{"out_trade_no":"A" "created_at":"2026-11-22T10:00:00Z"}`,
	`{"out_trade_no":"A","created_at":"2026-11-22T10:00:00Z"`,
	`{"out_trade_no":"A","created_at":"2026-11-22T10:00:00Z","close_at":"2026-11-22T09:00:00Z"}`,
	`{"out_trade_no":"A","created_at":"2026-11-22T10:00:00Z","close_at":"2026-12-22T09:00:00Z"}`,
	`{"out_trade_no":"A:B","created_at":"2026-11-22T10:00:00Z"}`,
	`{"out_trade_no":"A","mchid":"abc","created_at":"2026-11-22T10:00:00Z"}`,
	`{"out_trade_no":"A","created_at":nul}`,
	`{"out_trade_no":"A","created_at":nullx}`,
	`[]`, `null`, `"x"`, ``, `{`, `}`, `{"a"`,
}

// FuzzDecodeClosePayloadEquivalence holds DecodeClosePayload to the
// implementation it replaced: for every input the same payload or the same
// error text. It also checks that the single-pass reader, when it accepts
// an input, reads what encoding/json reads.
func FuzzDecodeClosePayloadEquivalence(f *testing.F) {
	for _, s := range decodeSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		want, werr := decodeClosePayloadOld(data)
		got, err := DecodeClosePayload(data)
		if !sameDecode(got, err, want, werr) {
			t.Fatalf("DecodeClosePayload(%q) = %+v, %v; the previous implementation gave %+v, %v", data, got, err, want, werr)
		}
		if p, ok := decodeClosePayloadFast(data); ok {
			var std ClosePayload
			if CheckJSONFields(data, closePayloadFields...) != nil || json.Unmarshal(data, &std) != nil || !sameDecode(p, nil, std, nil) {
				t.Fatalf("the single-pass reader read %q as %+v; encoding/json reads %+v", data, p, std)
			}
		}
	})
}

// FuzzDecodeClosePayloadFields builds payloads from fuzzed keys and values,
// so that most inputs reach deep into the single-pass reader.
func FuzzDecodeClosePayloadFields(f *testing.F) {
	f.Add("out_trade_no", "A-1", "created_at", "2026-11-22T10:00:00Z", "close_at", `"2026-11-22T10:10:00+08:00"`, " ")
	f.Add("transaction_id", "42", "created_at", "2026-11-22T10:00:00.5-01:30", "mchid", `null`, "")
	f.Add("out_trade_no", "A", "Created_At", "2026-11-22T10:00:00Z", "sub_appid", `"wx1"`, "\n")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2, k3, raw3, ws string) {
		q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
		data := []byte("{" + ws + q(k1) + ws + ":" + q(v1) + "," + q(k2) + ":" + ws + q(v2) + ws + "," + q(k3) + ":" + raw3 + ws + "}")
		want, werr := decodeClosePayloadOld(data)
		got, err := DecodeClosePayload(data)
		if !sameDecode(got, err, want, werr) {
			t.Fatalf("DecodeClosePayload(%q) = %+v, %v; the previous implementation gave %+v, %v", data, got, err, want, werr)
		}
	})
}

// TestDecodeClosePayloadSeeds runs the seeds with their expected kind of
// answer, so that a change in what the seeds exercise is noticed, and
// checks that the payloads the producer writes take the single pass.
func TestDecodeClosePayloadSeeds(t *testing.T) {
	for _, s := range decodeSeeds {
		want, werr := decodeClosePayloadOld([]byte(s))
		got, err := DecodeClosePayload([]byte(s))
		if !sameDecode(got, err, want, werr) {
			t.Errorf("DecodeClosePayload(%q) = %+v, %v; want %+v, %v", s, got, err, want, werr)
		}
	}
	for _, p := range []ClosePayload{
		{OutTradeNo: "P202611221030150000001", MchID: "1900000109", CreatedAt: time.Date(2026, 11, 22, 10, 30, 15, 123456789, time.UTC)},
		{TransactionID: "4200000000202611220000000001", SubMchID: "1900000110", SubAppID: "wx8888888888888888",
			CreatedAt: time.Date(2026, 11, 22, 10, 30, 15, 0, time.FixedZone("", 8*3600)), CloseAt: time.Date(2026, 11, 22, 11, 0, 0, 0, time.FixedZone("", 8*3600))},
	} {
		data, _ := json.Marshal(p)
		if _, ok := decodeClosePayloadFast(data); !ok {
			t.Errorf("the producer's payload %s does not take the single pass", data)
		}
	}
	if _, err := DecodeClosePayload([]byte(`{"out_trade_no":"A","OUT_TRADE_NO":"B","created_at":"2026-11-22T10:00:00Z"}`)); err == nil ||
		!strings.Contains(err.Error(), `"OUT_TRADE_NO" must be spelt "out_trade_no"`) {
		t.Errorf("wrong-case key: %v", err)
	}
}
