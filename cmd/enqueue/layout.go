package main

import (
	"flag"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/wxclose/wxclose/tasks"
)

// layoutFlags are the settings every producer of one Redis must share: the
// number of close queues (shards) and the replication wait. Each flag
// defaults to its environment variable, as the worker reads it, so one
// environment configures both.
type layoutFlags struct {
	shards, previous, waitReplicas, waitTimeout string
	cfg                                         tasks.ProducerConfig
}

func (l *layoutFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&l.shards, "shards", "", "number of close queues, `N` (default: $WXCLOSE_SHARDS, else 1); must match the worker's")
	fs.StringVar(&l.previous, "previous-shards", "", "number of close queues before the last change, `N` (default: $WXCLOSE_PREVIOUS_SHARDS); duplicates under it are recognised")
	fs.StringVar(&l.waitReplicas, "wait-replicas", "", "replicas that must confirm each enqueue, `N` (default: $WXCLOSE_WAIT_REPLICAS, else 0)")
	fs.StringVar(&l.waitTimeout, "wait-timeout", "", "how long to wait for them, `DUR` (default: $WXCLOSE_WAIT_TIMEOUT, else 1s)")
}

// resolve reads the flags, else the environment, into cfg. Errors name the
// flag or variable and are usage errors (exit 2).
func (l *layoutFlags) resolve() error {
	// num reads a whole number from the flag, else the variable; max 0
	// means unbounded.
	num := func(flagName, env, v string, min, max int) (int, error) {
		name := "--" + flagName
		if v == "" {
			v, name = strings.TrimSpace(os.Getenv(env)), env
		}
		if v == "" {
			return 0, nil
		}
		n, err := strconv.Atoi(v)
		switch {
		case max == 0 && (err != nil || n < min):
			return 0, usageError("%s must be a whole number, %d or more, not %q", name, min, v)
		case max > 0 && (err != nil || n < min || n > max):
			return 0, usageError("%s must be a whole number from %d to %d, not %q", name, min, max, v)
		}
		return n, nil
	}
	var err error
	if l.cfg.Shards, err = num("shards", "WXCLOSE_SHARDS", l.shards, 1, tasks.MaxShards); err != nil {
		return err
	}
	if l.cfg.PreviousShards, err = num("previous-shards", "WXCLOSE_PREVIOUS_SHARDS", l.previous, 1, tasks.MaxShards); err != nil {
		return err
	}
	if l.cfg.WaitReplicas, err = num("wait-replicas", "WXCLOSE_WAIT_REPLICAS", l.waitReplicas, 0, 0); err != nil {
		return err
	}
	v, name := l.waitTimeout, "--wait-timeout"
	if v == "" {
		v, name = strings.TrimSpace(os.Getenv("WXCLOSE_WAIT_TIMEOUT")), "WXCLOSE_WAIT_TIMEOUT"
	}
	if v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 || d > 2*time.Second {
			return usageError("%s must be a positive duration of at most 2s, such as 500ms, not %q", name, v)
		}
		l.cfg.WaitTimeout = d
	}
	return nil
}

// producer returns the producer settings with the merchant of task ids.
func (l *layoutFlags) producer(mchID string) tasks.ProducerConfig {
	cfg := l.cfg
	cfg.MchID = mchID
	return cfg
}

const layoutHelp = `  WXCLOSE_SHARDS   number of close queues (default 1); must match the worker's; --shards overrides it
  WXCLOSE_PREVIOUS_SHARDS  the number before the last change of WXCLOSE_SHARDS; --previous-shards
  WXCLOSE_WAIT_REPLICAS, WXCLOSE_WAIT_TIMEOUT  replicas that must confirm each enqueue, and for how
                   long (Sentinel, Cluster: 1 and 1s); --wait-replicas, --wait-timeout
`
