package wechat_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/wxclose/wxclose/wechat"
	"github.com/wxclose/wxclose/wechat/sandbox"
)

// BenchmarkClientClose measures one Close Order call through the real
// client against the sandbox over loopback HTTP, sandbox included (it runs
// in the benchmark process), as the worker makes it. The sandbox reuses v3
// response signatures (CacheResponseSignatures) so that its RSA signing does
// not hide the client's cost; each iteration closes a new order.
//
//	go test ./wechat -run '^$' -bench ClientClose -count 5
func BenchmarkClientClose(b *testing.B) {
	for _, api := range []string{"v2", "v3"} {
		b.Run(api, func(b *testing.B) {
			env := newSandbox(b, sandbox.Options{UnknownOrders: sandbox.UnknownCreate, CacheResponseSignatures: true})
			var cfg wechat.Config
			if api == "v2" {
				cfg = env.v2Config(wechat.SignHMACSHA256)
			} else {
				cfg = env.v3Config(b, trustCert)
			}
			c, err := wechat.New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				out, err := c.Close(ctx, wechat.CloseRequest{OutTradeNo: fmt.Sprintf("BENCH%s%08d", api, i)})
				if err != nil || out.Result != wechat.ResultClosed {
					b.Fatal(out, err)
				}
			}
		})
	}
}
