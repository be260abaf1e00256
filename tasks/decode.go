package tasks

import (
	"time"

	"github.com/wxclose/wxclose/internal/strictjson"
)

// decodeClosePayloadFast reads, in a single pass, the payload shape every
// producer writes: one JSON object whose keys are ClosePayload's names
// exactly, each at most once, with values that are null or strings of
// printable ASCII without escapes (strictjson.Flat). Times are read by
// time.Time.UnmarshalJSON on the raw literal, exactly as encoding/json reads
// them. ok is false for anything else, well-formed or not (escapes,
// non-ASCII, numbers, unknown, wrong-case or repeated keys, a bad time,
// trailing data...): DecodeClosePayload then decides with encoding/json, so
// its answers and error texts are the same either way
// (FuzzDecodeClosePayloadEquivalence holds the two to it).
func decodeClosePayloadFast(data []byte) (p ClosePayload, ok bool) {
	var raw [7][]byte // in the order of closePayloadFields
	if !strictjson.Flat(data, closePayloadFields, raw[:]) {
		return p, false
	}
	p.OutTradeNo = strictjson.String(raw[0])
	p.TransactionID = strictjson.String(raw[1])
	p.MchID = strictjson.String(raw[2])
	p.SubMchID = strictjson.String(raw[3])
	p.SubAppID = strictjson.String(raw[4])
	return p, readTime(&p.CreatedAt, raw[5]) && readTime(&p.CloseAt, raw[6])
}

// readTime stores a raw JSON value in t as encoding/json would (null or
// absent leaves it alone); false if encoding/json would refuse it.
func readTime(t *time.Time, raw []byte) bool {
	return strictjson.IsNull(raw) || t.UnmarshalJSON(raw) == nil
}
