package wechat

import (
	"errors"
	"net/http"
	"testing"
)

func TestMaxIdleConnsPerHost(t *testing.T) {
	for _, tt := range []struct{ set, want int }{{0, defaultMaxIdleConnsPerHost}, {50, 50}, {250, 250}} {
		c, err := NewV2(Config{API: APIv2, MchID: "1900000109", AppID: "wx1", APIKey: fuzzAPIKey, MaxIdleConnsPerHost: tt.set})
		if err != nil {
			t.Fatal(err)
		}
		tr := c.http.Transport.(*http.Transport)
		if tr.MaxIdleConnsPerHost != tt.want || tr.MaxIdleConns < tt.want {
			t.Errorf("MaxIdleConnsPerHost %d: transport keeps %d per host, %d in all; want %d per host", tt.set, tr.MaxIdleConnsPerHost, tr.MaxIdleConns, tt.want)
		}
	}
	_, err := NewV2(Config{API: APIv2, MchID: "1900000109", AppID: "wx1", APIKey: fuzzAPIKey, MaxIdleConnsPerHost: -1})
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Field != "MaxIdleConnsPerHost" {
		t.Errorf("MaxIdleConnsPerHost -1: %v, want a ConfigError naming the field", err)
	}
}
