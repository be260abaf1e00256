// Package asynqwire is the wire format of the task message asynq v0.26.0
// stores in the "msg" field of a task's hash: the protobuf encoding of its
// internal TaskMessage (internal/proto/asynq.proto). asynq's own types are
// internal, yet wxclose must write that message itself (the producer's
// pipelined batch enqueue) and rewrite it inside a Lua script (replay), so
// the field numbers live here, once.
//
// A change of asynq's version must be checked against this package: the
// tests that compare what wxclose writes with what asynq writes
// (tasks.TestBatchWritesWhatAsynqWrites, ops.TestReplayWritesWhatAsynqWrites)
// fail when the format moves.
package asynqwire

import "google.golang.org/protobuf/encoding/protowire"

// Field numbers of asynq's TaskMessage.
const (
	Type         protowire.Number = 1
	Payload      protowire.Number = 2
	ID           protowire.Number = 3
	Queue        protowire.Number = 4
	Retry        protowire.Number = 5
	Retried      protowire.Number = 6
	ErrorMsg     protowire.Number = 7
	Timeout      protowire.Number = 8
	Deadline     protowire.Number = 9
	UniqueKey    protowire.Number = 10
	LastFailedAt protowire.Number = 11
	Retention    protowire.Number = 12
	CompletedAt  protowire.Number = 13
	GroupKey     protowire.Number = 14
	Headers      protowire.Number = 15
)

// Fields of a map<string,string> entry (the headers).
const (
	EntryKey   protowire.Number = 1
	EntryValue protowire.Number = 2
)

// AppendHeader appends one headers entry. Both of the entry's fields are
// written even when empty, as protobuf-go writes map entries.
func AppendHeader(b []byte, key, value string) []byte {
	size := protowire.SizeTag(EntryKey) + protowire.SizeBytes(len(key)) +
		protowire.SizeTag(EntryValue) + protowire.SizeBytes(len(value))
	b = protowire.AppendTag(b, Headers, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(size))
	b = protowire.AppendTag(b, EntryKey, protowire.BytesType)
	b = protowire.AppendString(b, key)
	b = protowire.AppendTag(b, EntryValue, protowire.BytesType)
	return protowire.AppendString(b, value)
}

// NewTask is what asynq's Client puts in the message of a new task that
// has no deadline, unique key or group. Zero fields are not written
// (proto3).
type NewTask struct {
	Type    string
	Payload []byte
	// Headers are written in the order given; asynq takes them from a Go
	// map, whose order is random, so with more than one header only the
	// decoded message, not its bytes, is comparable with asynq's.
	Headers   [][2]string
	ID        string
	Queue     string
	Retry     int
	Timeout   int64 // seconds
	Retention int64 // seconds
}

// Append appends the encoded message to b. Fields come in field-number
// order, as protobuf-go's Marshal writes them, so that the bytes match
// asynq's for the same task.
func (t NewTask) Append(b []byte) []byte {
	b = appendString(b, Type, t.Type)
	b = appendString(b, Payload, string(t.Payload))
	b = appendString(b, ID, t.ID)
	b = appendString(b, Queue, t.Queue)
	// int32 in the .proto: a negative value is sign-extended to ten bytes.
	b = appendInt(b, Retry, int64(int32(t.Retry)))
	b = appendInt(b, Timeout, t.Timeout)
	b = appendInt(b, Retention, t.Retention)
	for _, h := range t.Headers {
		b = AppendHeader(b, h[0], h[1])
	}
	return b
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendInt(b []byte, num protowire.Number, v int64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, uint64(v))
}
