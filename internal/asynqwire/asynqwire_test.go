package asynqwire_test

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/wxclose/wxclose/internal/asynqwire"
)

// TestNewTaskEncoding pins the proto3 rules the encoder follows where
// tasks' comparison with asynq cannot reach: zero fields are left out, an
// int32 below zero takes ten bytes, and a header entry keeps an empty
// value. tasks.TestBatchWritesWhatAsynqWrites compares real tasks with
// asynq's bytes.
func TestNewTaskEncoding(t *testing.T) {
	if got := (asynqwire.NewTask{}).Append(nil); len(got) != 0 {
		t.Errorf("zero task = %x, want nothing", got)
	}
	var want []byte
	want = protowire.AppendTag(want, asynqwire.Type, protowire.BytesType)
	want = protowire.AppendString(want, "t")
	want = protowire.AppendTag(want, asynqwire.Retry, protowire.VarintType)
	want = append(want, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01)
	want = protowire.AppendTag(want, asynqwire.Timeout, protowire.VarintType)
	want = protowire.AppendVarint(want, 120)
	want = append(want, 0x7a, 0x05, 0x0a, 0x01, 'k', 0x12, 0x00) // field 15: {1: "k", 2: ""}
	got := asynqwire.NewTask{Type: "t", Retry: -1, Timeout: 120, Headers: [][2]string{{"k", ""}}}.Append(nil)
	if !bytes.Equal(got, want) {
		t.Errorf("encoded\n got %x\nwant %x", got, want)
	}
}
