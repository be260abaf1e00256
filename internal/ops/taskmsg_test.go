package ops

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/wxclose/wxclose/internal/asynqwire"
	"github.com/wxclose/wxclose/tasks"
)

// fieldsOf lists the top-level fields of an encoded message by number, each
// as its whole encoding.
func fieldsOf(t *testing.T, raw []byte) map[protowire.Number][][]byte {
	t.Helper()
	m := map[protowire.Number][][]byte{}
	err := eachField(raw, func(num protowire.Number, _ protowire.Type, field, _ []byte) error {
		m[num] = append(m[num], field)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestTaskMsg reads a message asynq itself wrote for an archived task (with
// every field replay cares about set), and checks the rewrite against
// asynq's own decoding of it.
func TestTaskMsg(t *testing.T) {
	e := newEnv(t)
	w := e.startWorker(t)
	p, id := order("M-1", time.Now().Add(-time.Hour))
	payload := mustJSON(t, p)
	w.set(id, behaviour{err: errText, failure: failSystem()})
	cl := asynq.NewClientFromRedisClient(e.srv.Client())
	_, err := cl.Enqueue(asynq.NewTaskWithHeaders(tasks.TypeClose, payload, map[string]string{tasks.HeaderDueAt: "old", "other": "kept"}),
		asynq.Queue(tasks.QueueClose), asynq.TaskID(id), asynq.MaxRetry(1),
		asynq.Timeout(2*time.Minute), asynq.Retention(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	before := e.waitState(t, id, asynq.TaskStateArchived)
	w.srv.Shutdown()
	raw, err := e.srv.Client().HGet(context.Background(), asynqKey("t:"+id), "msg").Bytes()
	if err != nil {
		t.Fatal(err)
	}

	m, err := decodeTaskMsg(raw)
	if err != nil {
		t.Fatal(err)
	}
	if m.Type != tasks.TypeClose || m.ID != id || m.Queue != tasks.QueueClose || !bytes.Equal(m.Payload, payload) ||
		m.GroupKey != "" || m.UniqueKey != "" || m.Headers["other"] != "kept" || m.Headers[tasks.HeaderDueAt] != "old" {
		t.Errorf("decoded %+v", m)
	}
	if before.Retried != 1 || before.LastErr == "" || before.LastFailedAt.IsZero() {
		t.Fatalf("the archived task lacks the fields the rewrite drops: %+v", before)
	}

	out := m.rewriteForReplay(tasks.HeaderDueAt, "new")
	in, got := fieldsOf(t, raw), fieldsOf(t, out)
	for num := range in {
		switch num {
		case asynqwire.Retried, asynqwire.ErrorMsg, asynqwire.LastFailedAt:
			if len(got[num]) != 0 {
				t.Errorf("field %d kept", num)
			}
		case asynqwire.Headers:
		default:
			if len(got[num]) != len(in[num]) || !bytes.Equal(bytes.Join(got[num], nil), bytes.Join(in[num], nil)) {
				t.Errorf("field %d changed", num)
			}
		}
	}
	m2, err := decodeTaskMsg(out)
	if err != nil {
		t.Fatal(err)
	}
	if m2.Headers[tasks.HeaderDueAt] != "new" || m2.Headers["other"] != "kept" || len(got[asynqwire.Headers]) != 2 {
		t.Errorf("headers after rewrite: %v (%d entries)", m2.Headers, len(got[asynqwire.Headers]))
	}

	// asynq reads the rewrite as the same task with a fresh budget.
	rdb := e.srv.Client()
	if err := rdb.HSet(context.Background(), asynqKey("t:"+id), "msg", out).Err(); err != nil {
		t.Fatal(err)
	}
	after := e.info(t, id)
	if after.Retried != 0 || after.LastErr != "" || !after.LastFailedAt.IsZero() ||
		after.MaxRetry != before.MaxRetry || after.Timeout != before.Timeout || after.Retention != before.Retention ||
		after.Type != before.Type || !bytes.Equal(after.Payload, before.Payload) || after.Queue != before.Queue {
		t.Errorf("asynq reads the rewrite as %+v; before %+v", after, before)
	}
}

func TestDecodeTaskMsgRejectsGarbage(t *testing.T) {
	valid := protowire.AppendString(protowire.AppendTag(nil, asynqwire.Type, protowire.BytesType), tasks.TypeClose)
	for name, raw := range map[string][]byte{
		"unterminated varint": {0xff, 0xff, 0xff},
		"cut string":          valid[:len(valid)-2],
		"field number 0":      {0x00, 0x01},
		"bad header entry":    protowire.AppendBytes(protowire.AppendTag(nil, asynqwire.Headers, protowire.BytesType), []byte{0x0a, 0x09, 'x'}),
		"json":                []byte(`{"out_trade_no":"A"}`),
	} {
		if _, err := decodeTaskMsg(raw); err == nil || !strings.Contains(err.Error(), "not an asynq") {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	if m, err := decodeTaskMsg(valid); err != nil || m.Type != tasks.TypeClose {
		t.Errorf("valid: %+v, %v", m, err)
	}
}
