package config

import (
	"fmt"
	"strconv"
	"time"

	"github.com/wxclose/wxclose/tasks"
)

// Layout is how closes are spread over Redis and how an enqueue is
// acknowledged; the same settings configure every producer (the Go API,
// the close API, cmd/enqueue), so that they agree on where an order's close
// lives. See tasks.ProducerConfig for each field.
type Layout struct {
	Shards         int           // WXCLOSE_SHARDS, default 1 (the one queue close_order)
	PreviousShards int           // WXCLOSE_PREVIOUS_SHARDS, default 0 (none); set for 24 h after changing WXCLOSE_SHARDS
	WaitReplicas   int           // WXCLOSE_WAIT_REPLICAS, default 0; 1 on Sentinel and Cluster with replicas
	WaitTimeout    time.Duration // WXCLOSE_WAIT_TIMEOUT, default tasks.DefaultWaitTimeout (1 s)
}

// String is the Layout's part of Worker.String: " shards=N" and the
// other settings when they are set.
func (l Layout) String() string {
	s := fmt.Sprintf(" shards=%d", l.Shards)
	if l.PreviousShards != 0 {
		s += fmt.Sprintf(" previous_shards=%d", l.PreviousShards)
	}
	if l.WaitReplicas != 0 {
		s += fmt.Sprintf(" wait_replicas=%d wait_timeout=%s", l.WaitReplicas, l.WaitTimeout)
	}
	return s
}

// loadLayout reads the Layout variables.
func (w *Worker) loadLayout(r *reader) {
	w.Layout = Layout{
		Shards:       r.positiveInt("WXCLOSE_SHARDS", 1),
		WaitReplicas: r.nonNegativeInt("WXCLOSE_WAIT_REPLICAS", 0),
		WaitTimeout:  r.duration("WXCLOSE_WAIT_TIMEOUT", tasks.DefaultWaitTimeout),
	}
	if r.str("WXCLOSE_PREVIOUS_SHARDS", "") != "" {
		w.PreviousShards = r.positiveInt("WXCLOSE_PREVIOUS_SHARDS", 0)
	}
	if err := tasks.ValidateShards("", w.Shards); err != nil {
		r.fail("WXCLOSE_SHARDS", "must be a whole number from 1 to %d", tasks.MaxShards)
	}
	if w.PreviousShards != 0 {
		if err := tasks.ValidateShards("", w.PreviousShards); err != nil {
			r.fail("WXCLOSE_PREVIOUS_SHARDS", "must be a whole number from 1 to %d, or unset", tasks.MaxShards)
		}
	}
	if w.WaitTimeout <= 0 || w.WaitTimeout > 2*time.Second {
		// Redis WAIT blocks the connection; go-redis gives up reading after
		// 3 s by default.
		r.fail("WXCLOSE_WAIT_TIMEOUT", "must be a positive duration of at most 2s, such as 500ms")
	}
}

// Producer returns the producer settings of this configuration: the
// merchant, margin and retry budget, and the Layout.
func (w Worker) Producer() tasks.ProducerConfig {
	return tasks.ProducerConfig{
		MchID: w.MchID, CloseMargin: w.CloseMargin, MaxRetry: w.MaxRetry,
		Shards: w.Shards, PreviousShards: w.PreviousShards,
		WaitReplicas: w.WaitReplicas, WaitTimeout: w.WaitTimeout,
	}
}

func (r *reader) nonNegativeInt(name string, def int) int {
	v := r.str(name, "")
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		r.fail(name, "must be a whole number, 0 or more, not %q", v)
		return def
	}
	return n
}
