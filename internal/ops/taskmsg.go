package ops

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/wxclose/wxclose/internal/asynqwire"
)

// asynq v0.26.0 stores a task as a hash whose "msg" field is the protobuf
// encoding of its internal TaskMessage (see internal/asynqwire). Replay
// must rewrite that message inside one Lua script, and asynq's own types are
// internal, so the few fields replay reads or changes are handled here at
// the wire level, with asynqwire's field numbers.

// errBadMsg is wrapped by decodeTaskMsg's errors.
var errBadMsg = errors.New("stored task message is not an asynq v0.26 TaskMessage")

// taskMsg is the part of asynq's TaskMessage replay looks at. raw is the
// message as stored, which rewrite starts from so that every field replay
// does not name (timeout, retention, retry budget, fields added by later
// asynq versions) survives byte for byte.
type taskMsg struct {
	raw       []byte
	Type      string
	Payload   []byte
	ID        string
	Queue     string
	UniqueKey string
	GroupKey  string
	Headers   map[string]string
}

// decodeTaskMsg reads the fields of taskMsg from an encoded TaskMessage,
// checking that the whole message is well-formed protobuf.
func decodeTaskMsg(raw []byte) (taskMsg, error) {
	m := taskMsg{raw: raw, Headers: map[string]string{}}
	err := eachField(raw, func(num protowire.Number, typ protowire.Type, field, value []byte) error {
		if typ != protowire.BytesType {
			return nil
		}
		v, n := protowire.ConsumeBytes(value)
		if n < 0 {
			return protowire.ParseError(n)
		}
		switch num {
		case asynqwire.Type:
			m.Type = string(v)
		case asynqwire.Payload:
			m.Payload = v
		case asynqwire.ID:
			m.ID = string(v)
		case asynqwire.Queue:
			m.Queue = string(v)
		case asynqwire.UniqueKey:
			m.UniqueKey = string(v)
		case asynqwire.GroupKey:
			m.GroupKey = string(v)
		case asynqwire.Headers:
			k, val, err := decodeEntry(v)
			if err != nil {
				return err
			}
			m.Headers[k] = val // a repeated key: the last wins, as in protobuf
		}
		return nil
	})
	if err != nil {
		return taskMsg{}, fmt.Errorf("%w: %v", errBadMsg, err)
	}
	return m, nil
}

// rewriteForReplay returns the message with a fresh retry budget: retried,
// error_msg and last_failed_at are dropped (proto3 omits zero values, so
// dropping a field is setting it to zero, exactly what asynq's encoder
// writes for a new task), and the header key is set to value (an empty
// value leaves the headers as they are). Every other field is copied
// unchanged, in its original order.
func (m taskMsg) rewriteForReplay(headerKey, headerValue string) []byte {
	if headerValue == "" {
		headerKey = ""
	}
	out := make([]byte, 0, len(m.raw)+len(headerKey)+len(headerValue)+8)
	// m.raw decoded without error in decodeTaskMsg, so eachField cannot
	// fail here.
	_ = eachField(m.raw, func(num protowire.Number, typ protowire.Type, field, value []byte) error {
		switch num {
		case asynqwire.Retried, asynqwire.ErrorMsg, asynqwire.LastFailedAt:
			return nil
		case asynqwire.Headers:
			if typ == protowire.BytesType && headerKey != "" {
				v, _ := protowire.ConsumeBytes(value)
				if k, _, err := decodeEntry(v); err == nil && k == headerKey {
					return nil
				}
			}
		}
		out = append(out, field...)
		return nil
	})
	if headerKey == "" {
		return out
	}
	return asynqwire.AppendHeader(out, headerKey, headerValue)
}

// eachField calls fn for every top-level field of b with the field's whole
// encoding (tag and value) and its value alone.
func eachField(b []byte, fn func(num protowire.Number, typ protowire.Type, field, value []byte) error) error {
	for len(b) > 0 {
		num, typ, tagLen := protowire.ConsumeTag(b)
		if tagLen < 0 {
			return protowire.ParseError(tagLen)
		}
		valLen := protowire.ConsumeFieldValue(num, typ, b[tagLen:])
		if valLen < 0 {
			return protowire.ParseError(valLen)
		}
		n := tagLen + valLen
		if err := fn(num, typ, b[:n], b[tagLen:n]); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// decodeEntry reads one map<string,string> entry.
func decodeEntry(b []byte) (key, value string, err error) {
	err = eachField(b, func(num protowire.Number, typ protowire.Type, _, v []byte) error {
		if typ != protowire.BytesType {
			return nil
		}
		s, n := protowire.ConsumeString(v)
		if n < 0 {
			return protowire.ParseError(n)
		}
		switch num {
		case asynqwire.EntryKey:
			key = s
		case asynqwire.EntryValue:
			value = s
		}
		return nil
	})
	return key, value, err
}
