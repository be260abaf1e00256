package config

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/wxclose/wxclose/tasks"
)

func TestLayout(t *testing.T) {
	w, err := Load(envOf(validV3()))
	if err != nil {
		t.Fatal(err)
	}
	if w.Layout != (Layout{Shards: 1, WaitTimeout: tasks.DefaultWaitTimeout}) {
		t.Errorf("default Layout = %+v", w.Layout)
	}
	env := validV3()
	env["WXCLOSE_SHARDS"] = "6"
	env["WXCLOSE_PREVIOUS_SHARDS"] = "1"
	env["WXCLOSE_WAIT_REPLICAS"] = "1"
	env["WXCLOSE_WAIT_TIMEOUT"] = "500ms"
	env["REDIS_URL"] = "redis-cluster://:pw@127.0.0.1:7000,127.0.0.1:7001"
	w, err = Load(envOf(env))
	if err != nil {
		t.Fatal(err)
	}
	want := Layout{Shards: 6, PreviousShards: 1, WaitReplicas: 1, WaitTimeout: 500 * time.Millisecond}
	if w.Layout != want {
		t.Errorf("Layout = %+v, want %+v", w.Layout, want)
	}
	p := w.Producer()
	if p.Shards != 6 || p.PreviousShards != 1 || p.WaitReplicas != 1 || p.WaitTimeout != 500*time.Millisecond || p.MchID != "1900000109" {
		t.Errorf("Producer() = %+v", p)
	}
}

func TestLayoutErrors(t *testing.T) {
	for _, tc := range []struct{ name, value, want string }{
		{"WXCLOSE_SHARDS", "0", "WXCLOSE_SHARDS must be a positive whole number"},
		{"WXCLOSE_SHARDS", "2000", "WXCLOSE_SHARDS must be a whole number from 1 to 1024"},
		{"WXCLOSE_PREVIOUS_SHARDS", "x", "WXCLOSE_PREVIOUS_SHARDS must be a positive whole number"},
		{"WXCLOSE_WAIT_REPLICAS", "-1", "WXCLOSE_WAIT_REPLICAS must be a whole number, 0 or more"},
		{"WXCLOSE_WAIT_TIMEOUT", "3s", "WXCLOSE_WAIT_TIMEOUT must be a positive duration of at most 2s"},
		{"WXCLOSE_WAIT_TIMEOUT", "0s", "WXCLOSE_WAIT_TIMEOUT must be a positive duration of at most 2s"},
	} {
		env := validV3()
		env[tc.name] = tc.value
		_, err := Load(envOf(env))
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s=%s: %v, want %q", tc.name, tc.value, err, tc.want)
		}
	}
}
