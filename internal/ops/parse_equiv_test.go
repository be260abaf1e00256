package ops

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"testing"

	"github.com/wxclose/wxclose/tasks"
)

// parseOrderLineOld is ParseOrderLine before its single-pass fast path:
// encoding/json, then the key check. It is the oracle of
// FuzzParseOrderLineEquivalence.
func parseOrderLineOld(line []byte) (tasks.CloseOrder, error) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 || line[0] != '{' {
		return tasks.CloseOrder{}, fmt.Errorf("%w: not a JSON object; each line must be one object such as {\"out_trade_no\":\"ORDER-1\",\"created_at\":\"2026-11-22T10:00:00+08:00\"}", tasks.ErrInvalidPayload)
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	var l orderLine
	if err := dec.Decode(&l); err != nil {
		return tasks.CloseOrder{}, fmt.Errorf("%w: %s", tasks.ErrInvalidPayload, jsonProblem(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return tasks.CloseOrder{}, fmt.Errorf("%w: trailing data after the JSON object; put one object per line", tasks.ErrInvalidPayload)
	}
	if err := tasks.CheckJSONFields(line, lineFields...); err != nil {
		return tasks.CloseOrder{}, err
	}
	o := tasks.CloseOrder{
		OutTradeNo: l.OutTradeNo, TransactionID: l.TransactionID,
		MchID: l.MchID, SubMchID: l.SubMchID, SubAppID: l.SubAppID,
	}
	if l.CreatedAt == "" {
		return tasks.CloseOrder{}, fmt.Errorf("%w: created_at is required (RFC 3339, e.g. 2026-11-22T10:00:00+08:00)", tasks.ErrInvalidPayload)
	}
	var err error
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

func sameOrder(a tasks.CloseOrder, aerr error, b tasks.CloseOrder, berr error) bool {
	if (aerr == nil) != (berr == nil) || aerr != nil && aerr.Error() != berr.Error() {
		return false
	}
	_, ao := a.CreatedAt.Zone()
	_, bo := b.CreatedAt.Zone()
	_, aco := a.CloseAt.Zone()
	_, bco := b.CloseAt.Zone()
	return a.OutTradeNo == b.OutTradeNo && a.TransactionID == b.TransactionID && a.MchID == b.MchID &&
		a.SubMchID == b.SubMchID && a.SubAppID == b.SubAppID &&
		a.CreatedAt.Equal(b.CreatedAt) && ao == bo && a.CloseAt.Equal(b.CloseAt) && aco == bco
}

// FuzzParseOrderLineEquivalence holds ParseOrderLine to the implementation
// it replaced: the same order or the same error text for every line.
func FuzzParseOrderLineEquivalence(f *testing.F) {
	for _, s := range []string{
		`{"out_trade_no":"ORDER-1","created_at":"2026-11-22T10:00:00+08:00"}`,
		` {"transaction_id":"42","mchid":"1900000109","sub_mchid":null,"created_at":"2026-11-22T10:00:00Z","close_at":"2026-11-22T10:30:00Z"} `,
		`{"out_trade_no":"A","created_at":""}`,
		`{"out_trade_no":"A"}`,
		`{"out_trade_no":"A","created_at":"2026-11-22T10:00:00+24:00"}`,
		`{"OUT_TRADE_NO":"A","created_at":"2026-11-22T10:00:00Z"}`,
		`{"out_trade_no":"A","out_trade_no":"B","created_at":"2026-11-22T10:00:00Z"}`,
		`{"closeAt":"x","out_trade_no":"A","created_at":"2026-11-22T10:00:00Z"}`,
		`{"out_trade_no":1,"created_at":"2026-11-22T10:00:00Z"}`,
		`{"out_trade_no":"\u0041","created_at":"2026-11-22T10:00:00Z"}`,
		`{"out_trade_no":"A","created_at":"2026-11-22T10:00:00Z"} {}`,
		`{"out_trade_no":"A","created_at":"2026-11-22T10:00:00Z"`,
		`[1]`, ``, "\ufeff{}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		want, werr := parseOrderLineOld(line)
		got, err := ParseOrderLine(line)
		if !sameOrder(got, err, want, werr) {
			t.Fatalf("ParseOrderLine(%q) = %+v, %v; the previous implementation gave %+v, %v", line, got, err, want, werr)
		}
	})
}
