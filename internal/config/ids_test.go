package config

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxclose/wxclose/tasks"
	"github.com/wxclose/wxclose/wechat"
)

// TestIdentifierRulesAgree: the producer's payload check (tasks), the
// worker's configuration (config) and the WeChat Pay client (wechat) accept
// exactly the same merchant ids, app ids and order numbers, because all
// three use internal/ids. Before, the client accepted up to 64 letters,
// digits, '_' and '-' for a merchant id that tasks and config held to 32
// digits, and config and wechat accepted app ids that tasks refused.
func TestIdentifierRulesAgree(t *testing.T) {
	const apiKey = "0123456789abcdef0123456789abcdef"
	// Port 1 on loopback refuses connections, so a request that passes the
	// client's checks fails with a transport error and never leaves the host.
	const base = "http://127.0.0.1:1"

	accepted := func(err error) bool { return err == nil }
	t.Run("merchant ids", func(t *testing.T) {
		for _, v := range []string{"1900000109", "1", strings.Repeat("9", 32), strings.Repeat("9", 33), "19x", "1-2", "merchant_1", "１９"} {
			byTasks := accepted(tasks.OrderRef{OutTradeNo: "A", MchID: v}.Validate())
			bySub := accepted(tasks.OrderRef{OutTradeNo: "A", SubMchID: v}.Validate())
			env := validV3()
			env["WECHATPAY_MCHID"] = v
			_, err := Load(envOf(env))
			byConfig := !strings.Contains(errString(err), "WECHATPAY_MCHID")
			_, err = wechat.New(wechat.Config{API: wechat.APIv2, BaseURL: base, MchID: v, AppID: "wx1", APIKey: apiKey})
			byClient := accepted(err)
			byRequest := acceptedRequest(t, wechat.CloseRequest{OutTradeNo: "A", MchID: v})
			bySubRequest := acceptedRequest(t, wechat.CloseRequest{OutTradeNo: "A", SubMchID: v})
			if byTasks != byConfig || byTasks != byClient || byTasks != bySub || byTasks != byRequest || byTasks != bySubRequest {
				t.Errorf("%q: tasks %v (sub_mchid %v), config %v, wechat.Config %v, CloseRequest %v (SubMchID %v)",
					v, byTasks, bySub, byConfig, byClient, byRequest, bySubRequest)
			}
		}
	})
	t.Run("app ids", func(t *testing.T) {
		for _, v := range []string{"wx8888888888888888", "wx_1", strings.Repeat("w", 32), strings.Repeat("w", 33), "wx-1", "wx 1"} {
			byTasks := accepted(tasks.ClosePayload{OutTradeNo: "A", SubAppID: v, CreatedAt: validCreated}.Validate())
			_, err := Load(envOf(map[string]string{"WECHATPAY_API": "v2", "WECHATPAY_MCHID": "1900000109", "WECHATPAY_APPID": v, "WECHATPAY_API_KEY": apiKey}))
			byConfig := !strings.Contains(errString(err), "WECHATPAY_APPID")
			_, err = wechat.New(wechat.Config{API: wechat.APIv2, BaseURL: base, MchID: "1900000109", AppID: v, APIKey: apiKey})
			byClient := accepted(err)
			byRequest := acceptedRequest(t, wechat.CloseRequest{OutTradeNo: "A", SubMchID: "1900000110", SubAppID: v})
			if byTasks != byConfig || byTasks != byClient || byTasks != byRequest {
				t.Errorf("%q: tasks %v, config %v, wechat.Config %v, CloseRequest %v", v, byTasks, byConfig, byClient, byRequest)
			}
		}
	})
	t.Run("order numbers", func(t *testing.T) {
		for _, v := range []string{"ORDER-1", "a_b|c*d@e-f", strings.Repeat("x", 32), strings.Repeat("x", 33), "a/b", "a.b", "a b", "a:b", ".."} {
			byTasks := accepted(tasks.OrderRef{OutTradeNo: v}.Validate())
			byRequest := acceptedRequest(t, wechat.CloseRequest{OutTradeNo: v})
			if byTasks != byRequest {
				t.Errorf("out_trade_no %q: tasks %v, CloseRequest %v", v, byTasks, byRequest)
			}
		}
		for _, v := range []string{"4200000000202611220000000001", "abc1", strings.Repeat("4", 33), "42-1", "42_1"} {
			byTasks := accepted(tasks.OrderRef{TransactionID: v}.Validate())
			byRequest := acceptedRequest(t, wechat.CloseRequest{TransactionID: v})
			if byTasks != byRequest {
				t.Errorf("transaction_id %q: tasks %v, CloseRequest %v", v, byTasks, byRequest)
			}
		}
	})
}

var validCreated = mustTime("2026-11-22T10:00:00Z")

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// acceptedRequest reports whether the WeChat Pay client's request checks let
// req through (a refusal wraps wechat.ErrInvalidRequest and sends nothing).
// The v2 client is used for merchant and app ids; a request naming only a
// transaction_id goes through v3's checks, as v2 closes need out_trade_no.
func acceptedRequest(t *testing.T, req wechat.CloseRequest) bool {
	t.Helper()
	var c wechat.Closer
	var err error
	if req.OutTradeNo == "" {
		c, err = wechat.New(wechat.Config{API: wechat.APIv3, BaseURL: "http://127.0.0.1:1", MchID: "1900000109",
			PrivateKey: testKey(t), CertSerial: "1DDE55AD98ED71D6", APIv3Key: testAPIv3Key})
	} else {
		c, err = wechat.New(wechat.Config{API: wechat.APIv2, BaseURL: "http://127.0.0.1:1", MchID: "1900000109",
			AppID: "wx1", APIKey: "0123456789abcdef0123456789abcdef"})
	}
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Close(context.Background(), req)
	if err == nil {
		t.Fatalf("Close(%+v) succeeded against a closed port", req)
	}
	return !errors.Is(err, wechat.ErrInvalidRequest)
}

func mustTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

var (
	keyOnce sync.Once
	key     *rsa.PrivateKey
	keyErr  error
)

// testKey is one RSA-2048 key for every request check (generating one
// takes a noticeable moment).
func testKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	keyOnce.Do(func() { key, keyErr = rsa.GenerateKey(rand.Reader, 2048) })
	if keyErr != nil {
		t.Fatal(keyErr)
	}
	return key
}
