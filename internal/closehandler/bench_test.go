package closehandler

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/wxclose/wxclose/tasks"
	"github.com/wxclose/wxclose/wechat"
	"github.com/wxclose/wxclose/wechat/sandbox"
)

// BenchmarkProcessClose measures one close task run through the handler as
// the worker runs it (strict decode, guard, the signed call through the real
// client against the sandbox over loopback HTTP, the log line at info level,
// the stored record), without asynq and Redis: the records are counted
// (records/op), not written. The sandbox runs in the benchmark process and
// reuses v3 response signatures, so its RSA signing does not hide the
// worker's cost.
//
//	go test ./internal/closehandler -run '^$' -bench ProcessClose -count 5
func BenchmarkProcessClose(b *testing.B) {
	creds, err := sandbox.GenerateCredentials("", "")
	if err != nil {
		b.Fatal(err)
	}
	for _, api := range []string{"v2", "v3"} {
		b.Run(api, func(b *testing.B) {
			sb, err := sandbox.New(sandbox.Options{Credentials: creds, UnknownOrders: sandbox.UnknownCreate, CacheResponseSignatures: true})
			if err != nil {
				b.Fatal(err)
			}
			srv := httptest.NewServer(sb.Handler())
			defer srv.Close()
			cfg := wechat.Config{BaseURL: srv.URL, MchID: creds.MchID, Timeout: 10 * time.Second}
			if api == "v2" {
				cfg.API, cfg.AppID, cfg.APIKey = wechat.APIv2, creds.AppID, creds.APIKey
			} else {
				if cfg.PrivateKey, err = wechat.LoadPrivateKey(creds.MerchantPrivateKeyPEM); err != nil {
					b.Fatal(err)
				}
				if cfg.PlatformCerts, err = wechat.LoadCertificates(creds.PlatformCertPEM); err != nil {
					b.Fatal(err)
				}
				cfg.CertSerial = creds.MerchantCertSerial
			}
			closer, err := wechat.New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			h, err := New(Config{Closer: closer, Reconciler: &fakeReconciler{}, MchID: creds.MchID,
				Logger: zerolog.New(io.Discard).Level(zerolog.InfoLevel)})
			if err != nil {
				b.Fatal(err)
			}
			created := time.Now().Add(-10 * time.Minute).UTC()
			payloads := make([][]byte, b.N)
			metas := make([]TaskMeta, b.N)
			for i := range b.N {
				p := tasks.ClosePayload{OutTradeNo: fmt.Sprintf("BENCH%s%08d", api, i), MchID: creds.MchID, CreatedAt: created}
				if payloads[i], err = json.Marshal(p); err != nil {
					b.Fatal(err)
				}
				metas[i] = TaskMeta{ID: tasks.CloseTaskID(p.Ref()), Type: tasks.TypeClose, DueAt: created.Add(5 * time.Minute)}
			}
			w := &countingWriter{}
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				if err := h.process(ctx, metas[i], payloads[i], w); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(w.n)/float64(b.N), "records/op")
		})
	}
}

// countingWriter counts the records a handler stores.
type countingWriter struct{ n int }

func (w *countingWriter) Write(data []byte) (int, error) { w.n++; return len(data), nil }
func (w *countingWriter) TaskID() string                 { return "bench" }
