package config

import (
	"strconv"
	"testing"
)

// TestWeChatKeepsAConnectionPerClose checks that the WeChat Pay client
// keeps as many idle connections as the worker has closes in flight
// (WXCLOSE_CONCURRENCY), so that no close opens a new connection in steady
// state.
func TestWeChatKeepsAConnectionPerClose(t *testing.T) {
	for _, conc := range []string{"", "50", "150"} {
		env := map[string]string{
			"WECHATPAY_API": "v2", "WECHATPAY_MCHID": "1900000109", "WECHATPAY_APPID": "wx2421b1c4370ec43b",
			"WECHATPAY_API_KEY": "192006250b4c09247ec02edce69f6a2d", "WXCLOSE_CONCURRENCY": conc,
		}
		w, err := Load(envOf(env))
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := w.WeChat()
		if err != nil {
			t.Fatal(err)
		}
		want := DefaultConcurrency
		if conc != "" {
			want, _ = strconv.Atoi(conc)
		}
		if cfg.MaxIdleConnsPerHost != want {
			t.Errorf("WXCLOSE_CONCURRENCY=%q: wechat.Config.MaxIdleConnsPerHost = %d, want %d", conc, cfg.MaxIdleConnsPerHost, want)
		}
	}
}
