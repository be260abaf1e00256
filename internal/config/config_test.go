package config

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/wxclose/wxclose/wechat"
)

const testAPIv3Key = "0123456789abcdef0123456789ABCDEF"

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func validV3() map[string]string {
	return map[string]string{
		"WECHATPAY_MCHID":                "1900000109",
		"WECHATPAY_MCH_PRIVATE_KEY_FILE": "/keys/apiclient_key.pem",
		"WECHATPAY_MCH_CERT_SERIAL":      "1dde55ad98ed71d6edd4a4a16996de7b47773a8c",
		"WECHATPAY_APIV3_KEY":            testAPIv3Key,
	}
}

func TestLoadDefaults(t *testing.T) {
	w, err := Load(envOf(validV3()))
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"RedisURL", w.RedisURL, DefaultRedisURL},
		{"WeChatAPI", w.WeChatAPI, wechat.APIv3},
		{"BaseURL", w.BaseURL, wechat.DefaultBaseURL},
		{"PathStyle", w.PathStyle, wechat.PathGlobal},
		{"HTTPTimeout", w.HTTPTimeout, 30 * time.Second},
		{"CertSerial upper-cased", w.CertSerial, "1DDE55AD98ED71D6EDD4A4A16996DE7B47773A8C"},
		{"Concurrency", w.Concurrency, 20},
		{"Retry.Initial", w.Retry.Initial, 10 * time.Second},
		{"Retry.Max", w.Retry.Max, 10 * time.Minute},
		{"MaxRetry", w.MaxRetry, 20},
		{"HTTPAddr", w.HTTPAddr, "127.0.0.1:8080"},
		{"CloseMargin", w.CloseMargin, time.Second},
		{"LogLevel", w.LogLevel, zerolog.InfoLevel},
		{"LogFormat", w.LogFormat, "auto"},
		{"SignType", w.SignType, wechat.SignHMACSHA256},
		{"UI", w.UI, true},
		{"UIReadOnly", w.UIReadOnly, false},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if w.Redis == nil {
		t.Error("Redis connection option not parsed")
	}
}

func TestLoadErrorsNameTheVariable(t *testing.T) {
	tests := []struct {
		name    string
		set     map[string]string
		unset   []string
		wantVar string
	}{
		{"missing mchid", nil, []string{"WECHATPAY_MCHID"}, "WECHATPAY_MCHID"},
		{"letters in mchid", map[string]string{"WECHATPAY_MCHID": "19x"}, nil, "WECHATPAY_MCHID"},
		{"bad api", map[string]string{"WECHATPAY_API": "v4"}, nil, "WECHATPAY_API"},
		{"bad redis url", map[string]string{"REDIS_URL": "http://nope"}, nil, "REDIS_URL"},
		{"no private key", nil, []string{"WECHATPAY_MCH_PRIVATE_KEY_FILE"}, "WECHATPAY_MCH_PRIVATE_KEY_FILE"},
		{"no serial", nil, []string{"WECHATPAY_MCH_CERT_SERIAL"}, "WECHATPAY_MCH_CERT_SERIAL"},
		{"no verification key", nil, []string{"WECHATPAY_APIV3_KEY"}, "WECHATPAY_PLATFORM_CERT_FILE"},
		{"short apiv3 key", map[string]string{"WECHATPAY_APIV3_KEY": "short"}, nil, "WECHATPAY_APIV3_KEY"},
		{"public key without id", map[string]string{"WECHATPAY_PUBLIC_KEY_FILE": "/k.pem"}, nil, "WECHATPAY_PUBLIC_KEY_ID"},
		{"bad public key id", map[string]string{"WECHATPAY_PUBLIC_KEY_FILE": "/k.pem", "WECHATPAY_PUBLIC_KEY_ID": "123"}, nil, "PUB_KEY_ID_"},
		{"bad path style", map[string]string{"WECHATPAY_PATH_STYLE": "cn"}, nil, "WECHATPAY_PATH_STYLE"},
		{"bad concurrency", map[string]string{"WXCLOSE_CONCURRENCY": "0"}, nil, "WXCLOSE_CONCURRENCY"},
		{"bad duration", map[string]string{"WXCLOSE_RETRY_INITIAL": "ten"}, nil, "WXCLOSE_RETRY_INITIAL"},
		{"max below initial", map[string]string{"WXCLOSE_RETRY_INITIAL": "1m", "WXCLOSE_RETRY_MAX": "10s"}, nil, "WXCLOSE_RETRY_MAX"},
		{"negative margin", map[string]string{"WXCLOSE_CLOSE_MARGIN": "-1s"}, nil, "WXCLOSE_CLOSE_MARGIN"},
		{"bad max retry", map[string]string{"WXCLOSE_MAX_RETRY": "-3"}, nil, "WXCLOSE_MAX_RETRY"},
		{"bad http addr", map[string]string{"WXCLOSE_HTTP_ADDR": "8080"}, nil, "WXCLOSE_HTTP_ADDR"},
		{"bad log level", map[string]string{"WXCLOSE_LOG_LEVEL": "loud"}, nil, "WXCLOSE_LOG_LEVEL"},
		{"bad log format", map[string]string{"WXCLOSE_LOG_FORMAT": "xml"}, nil, "WXCLOSE_LOG_FORMAT"},
		{"user without password", map[string]string{"WXCLOSE_UI_USER": "ops"}, nil, "WXCLOSE_UI_PASSWORD"},
		{"bad bool", map[string]string{"WXCLOSE_UI_READONLY": "maybe"}, nil, "WXCLOSE_UI_READONLY"},
		{"v2 without key", map[string]string{"WECHATPAY_API": "v2", "WECHATPAY_APPID": "wx1"}, nil, "WECHATPAY_API_KEY"},
		{"v2 without appid", map[string]string{"WECHATPAY_API": "v2", "WECHATPAY_API_KEY": "k"}, nil, "WECHATPAY_APPID"},
		{"v2 bad sign type", map[string]string{"WECHATPAY_API": "v2", "WECHATPAY_APPID": "wx1", "WECHATPAY_API_KEY": "k", "WECHATPAY_SIGN_TYPE": "SHA1"}, nil, "WECHATPAY_SIGN_TYPE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := validV3()
			for k, v := range tt.set {
				env[k] = v
			}
			for _, k := range tt.unset {
				delete(env, k)
			}
			_, err := Load(envOf(env))
			if err == nil || !strings.Contains(err.Error(), tt.wantVar) {
				t.Fatalf("Load() error = %v, want one naming %s", err, tt.wantVar)
			}
			if strings.Contains(err.Error(), testAPIv3Key) {
				t.Fatalf("error reveals the APIv3 key: %v", err)
			}
		})
	}
}

func TestLoadV2(t *testing.T) {
	w, err := Load(envOf(map[string]string{
		"WECHATPAY_API": "v2", "WECHATPAY_MCHID": "1900000109", "WECHATPAY_APPID": "wx2421b1c4370ec43b",
		"WECHATPAY_API_KEY": "192006250b4c09247ec02edce69f6a2d", "WECHATPAY_SIGN_TYPE": "md5",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if w.SignType != wechat.SignMD5 {
		t.Fatalf("SignType = %q", w.SignType)
	}
	if s := w.String(); strings.Contains(s, "192006250b4c09247ec02edce69f6a2d") || !strings.Contains(s, "api_key=set") {
		t.Fatalf("String() = %q: must say the key is set without showing it", s)
	}
	if _, err := w.WeChat(); err != nil {
		t.Fatalf("WeChat() for v2 = %v", err)
	}
}

func TestWeChatLoadsKeyFiles(t *testing.T) {
	dir := t.TempDir()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "apiclient_key.pem")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a pem file"), 0o600); err != nil {
		t.Fatal(err)
	}

	env := validV3()
	env["WECHATPAY_MCH_PRIVATE_KEY_FILE"] = keyFile
	w, err := Load(envOf(env))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := w.WeChat()
	if err != nil || cfg.PrivateKey == nil || cfg.APIv3Key != testAPIv3Key {
		t.Fatalf("WeChat() = %+v, %v", cfg.PrivateKey != nil, err)
	}

	tests := []struct {
		name, variable, value string
	}{
		{"missing key file", "WECHATPAY_MCH_PRIVATE_KEY_FILE", filepath.Join(dir, "absent.pem")},
		{"garbage key file", "WECHATPAY_MCH_PRIVATE_KEY_FILE", garbage},
		{"garbage platform cert", "WECHATPAY_PLATFORM_CERT_FILE", garbage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := validV3()
			env["WECHATPAY_MCH_PRIVATE_KEY_FILE"] = keyFile
			env[tt.variable] = tt.value
			w, err := Load(envOf(env))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.WeChat(); err == nil || !strings.Contains(err.Error(), tt.variable) {
				t.Fatalf("WeChat() error = %v, want one naming %s", err, tt.variable)
			}
		})
	}
}
