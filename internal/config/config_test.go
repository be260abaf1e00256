package config

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/wxclose/wxclose/retry"
	"github.com/wxclose/wxclose/tasks"
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
		// Zero: wechat's own default applies; not repeated here.
		{"HTTPTimeout", w.HTTPTimeout, time.Duration(0)},
		{"CertSerial upper-cased", w.CertSerial, "1DDE55AD98ED71D6EDD4A4A16996DE7B47773A8C"},
		{"Concurrency", w.Concurrency, 20},
		// Zero: the consumer derives the loops from the concurrency.
		{"DequeueLoops", w.DequeueLoops, 0},
		// Defaults defined once, by the packages that use them.
		{"Retry.Initial", w.Retry.Initial, retry.DefaultInitial},
		{"Retry.Max", w.Retry.Max, retry.DefaultMax},
		{"MaxRetry", w.MaxRetry, tasks.DefaultMaxRetry},
		{"HTTPAddr", w.HTTPAddr, "127.0.0.1:8080"},
		{"CloseMargin", w.CloseMargin, tasks.DefaultCloseMargin},
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
		{"bad dequeue loops", map[string]string{"WXCLOSE_DEQUEUE_LOOPS": "two"}, nil, "WXCLOSE_DEQUEUE_LOOPS"},
		{"negative dequeue loops", map[string]string{"WXCLOSE_DEQUEUE_LOOPS": "-1"}, nil, "WXCLOSE_DEQUEUE_LOOPS"},
		{"more dequeue loops than slots", map[string]string{"WXCLOSE_CONCURRENCY": "4", "WXCLOSE_DEQUEUE_LOOPS": "5"}, nil, "WXCLOSE_DEQUEUE_LOOPS"},
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
		// Issue 7 defect 8: these were left to wechat.New or dashboard.New,
		// exited 1 and named Config.X.
		{"v2 key of the wrong length", map[string]string{"WECHATPAY_API": "v2", "WECHATPAY_APPID": "wx1", "WECHATPAY_API_KEY": "0123456789abcdef0123456789abcde"}, nil, "WECHATPAY_API_KEY"},
		{"v2 bad app id", map[string]string{"WECHATPAY_API": "v2", "WECHATPAY_APPID": "wx 1", "WECHATPAY_API_KEY": testAPIv3Key}, nil, "WECHATPAY_APPID"},
		{"plain http base url", map[string]string{"WECHATPAY_BASE_URL": "http://apihk.mch.weixin.qq.com"}, nil, "WECHATPAY_BASE_URL"},
		{"relative base url", map[string]string{"WECHATPAY_BASE_URL": "apihk.mch.weixin.qq.com"}, nil, "WECHATPAY_BASE_URL"},
		{"base url with query", map[string]string{"WECHATPAY_BASE_URL": "https://apihk.mch.weixin.qq.com/?a=b"}, nil, "WECHATPAY_BASE_URL"},
		{"negative timeout", map[string]string{"WECHATPAY_TIMEOUT": "-5s"}, nil, "WECHATPAY_TIMEOUT"},
		{"zero timeout", map[string]string{"WECHATPAY_TIMEOUT": "0s"}, nil, "WECHATPAY_TIMEOUT"},
		{"colon in ui user", map[string]string{"WXCLOSE_UI_USER": "ops:team", "WXCLOSE_UI_PASSWORD": "pw"}, nil, "WXCLOSE_UI_USER"},
		{"ui without credentials on all interfaces", map[string]string{"WXCLOSE_HTTP_ADDR": "0.0.0.0:8080"}, nil, "WXCLOSE_UI_USER"},
		{"ui without credentials, empty host", map[string]string{"WXCLOSE_HTTP_ADDR": ":8080"}, nil, "WXCLOSE_UI_PASSWORD"},
		{"bad cert serial", map[string]string{"WECHATPAY_MCH_CERT_SERIAL": "not-hex"}, nil, "WECHATPAY_MCH_CERT_SERIAL"},
		{"mchid too long", map[string]string{"WECHATPAY_MCHID": strings.Repeat("1", 33)}, nil, "WECHATPAY_MCHID"},
		{"bad public key id characters", map[string]string{"WECHATPAY_PUBLIC_KEY_FILE": "/k.pem", "WECHATPAY_PUBLIC_KEY_ID": "PUB_KEY_ID_\"x"}, nil, "WECHATPAY_PUBLIC_KEY_ID"},
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
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("Load() error %v does not wrap ErrInvalid", err)
			}
			if strings.Contains(err.Error(), "Config.") {
				t.Errorf("Load() error names a Go field instead of the variable: %v", err)
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

// TestSecretsNeverInLoadOutput is the regression test for issue 7 defect 7:
// a REDIS_URL that does not parse was quoted with its password (or the part
// before a '#'), and a WECHATPAY_BASE_URL with user information reached the
// startup log before wechat.New rejected it.
func TestSecretsNeverInLoadOutput(t *testing.T) {
	const secret = "Hu7nter2Secret"
	tests := []struct {
		name, variable, value string
		wantErr               bool
	}{
		{"redis password with '#'", "REDIS_URL", "redis://:" + secret[:5] + "#" + secret[5:] + "@10.0.0.5:6379/0", true},
		{"redis password with '/'", "REDIS_URL", "redis://:" + secret + "/x@10.0.0.5:6379/0", true},
		{"redis password, bad escape", "REDIS_URL", "redis://:" + secret + "%zz@10.0.0.5:6379/0", true},
		{"redis password, bad db", "REDIS_URL", "redis://:" + secret + "@10.0.0.5:6379/zero", true},
		{"redis password as the whole value", "REDIS_URL", secret, true},
		{"valid redis url with password", "REDIS_URL", "redis://:" + secret + "@10.0.0.5:6379/0", false},
		{"base url with user information", "WECHATPAY_BASE_URL", "https://merchant:" + secret + "@apihk.mch.weixin.qq.com", true},
		{"base url with user information and http", "WECHATPAY_BASE_URL", "http://" + secret + "@example.com", true},
		{"base url with a token in the query", "WECHATPAY_BASE_URL", "https://apihk.mch.weixin.qq.com/?token=" + secret, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := validV3()
			env[tt.variable] = tt.value
			w, err := Load(envOf(env))
			if (err != nil) != tt.wantErr {
				t.Fatalf("Load() error = %v, want error %t", err, tt.wantErr)
			}
			if err != nil {
				if !strings.Contains(err.Error(), tt.variable) {
					t.Errorf("error does not name %s: %v", tt.variable, err)
				}
				if strings.Contains(err.Error(), secret[:5]) || strings.Contains(err.Error(), secret[5:]) {
					t.Errorf("error reveals the secret: %v", err)
				}
			}
			if s := w.String(); strings.Contains(s, secret[:5]) || strings.Contains(s, secret[5:]) {
				t.Errorf("String() reveals the secret: %s", s)
			}
		})
	}
}

func TestStringShowsRedactedURLs(t *testing.T) {
	env := validV3()
	env["REDIS_URL"] = "redis://:pw-0123@10.0.0.5:6379/2"
	w, err := Load(envOf(env))
	if err != nil {
		t.Fatal(err)
	}
	if s := w.String(); !strings.Contains(s, "redis=redis://xxxxx@10.0.0.5:6379/2") || strings.Contains(s, "pw-0123") {
		t.Fatalf("String() = %s", s)
	}
}

func TestCertSerialFromOpenSSL(t *testing.T) {
	env := validV3()
	env["WECHATPAY_MCH_CERT_SERIAL"] = "serial=1dde55ad98ed71d6"
	w, err := Load(envOf(env))
	if err != nil || w.CertSerial != "1DDE55AD98ED71D6" {
		t.Fatalf("CertSerial = %q, %v", w.CertSerial, err)
	}
}

// TestWeChatErrorNamesTheVariable covers the errors wechat.New returns for
// values Load cannot judge (key contents) or rules it does not repeat: each
// must name the variable, not the Config field, and wrap ErrInvalid.
func TestWeChatErrorNamesTheVariable(t *testing.T) {
	for field, variable := range variables {
		if _, ok := reflect.TypeFor[wechat.Config]().FieldByName(field); !ok {
			t.Errorf("variables maps %s, which is not a wechat.Config field", field)
		}
		err := WeChatError(&wechat.ConfigError{Field: field, Reason: "is wrong"})
		if !errors.Is(err, ErrInvalid) || err.Error() != variable+" is wrong" {
			t.Errorf("WeChatError(%s) = %v, want %q wrapping ErrInvalid", field, err, variable+" is wrong")
		}
	}
	if err := WeChatError(&wechat.ConfigError{Field: "UserAgent", Reason: "must be a single line"}); !errors.Is(err, ErrInvalid) ||
		!strings.Contains(err.Error(), "UserAgent must be a single line") {
		t.Errorf("unmapped field: %v", err)
	}
	if err := WeChatError(fmt.Errorf("x: %w", wechat.ErrInvalidConfig)); !errors.Is(err, ErrInvalid) {
		t.Errorf("plain ErrInvalidConfig: %v does not wrap ErrInvalid", err)
	}
	other := errors.New("network down")
	if err := WeChatError(other); err != other { //nolint:errorlint // identity is the point: other errors pass unchanged
		t.Errorf("other errors must pass unchanged, got %v", err)
	}

	// A real one: a 1024-bit merchant key passes Load (it only names a
	// file) and is refused by wechat.New.
	key, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "apiclient_key.pem")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	env := validV3()
	env["WECHATPAY_MCH_PRIVATE_KEY_FILE"] = keyFile
	w, err := Load(envOf(env))
	if err != nil {
		t.Fatal(err)
	}
	_, err = w.NewCloser(wechat.Hooks{})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "WECHATPAY_MCH_PRIVATE_KEY_FILE") || strings.Contains(err.Error(), "Config.") {
		t.Fatalf("NewCloser() error = %v, want one naming WECHATPAY_MCH_PRIVATE_KEY_FILE", err)
	}
}
