package wechat_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/wxclose/wxclose/wechat"
)

func TestNewValidation(t *testing.T) {
	k := getKeys(t)
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	v3 := func(mod func(*wechat.Config)) wechat.Config {
		c := v3Config(t, "")
		c.Timeout = 0
		mod(&c)
		return c
	}
	v2 := func(mod func(*wechat.Config)) wechat.Config {
		c := v2Config("", "")
		mod(&c)
		return c
	}
	tests := []struct {
		name    string
		cfg     wechat.Config
		wantErr string // substring naming the field; "" means valid
		wantV2  bool
	}{
		{"v3 defaults", v3(func(*wechat.Config) {}), "", false},
		{"v3 explicit", v3(func(c *wechat.Config) { c.API = wechat.APIv3; c.PathStyle = wechat.PathHK }), "", false},
		{"v3 public key only", v3(func(c *wechat.Config) {
			c.PlatformCerts = nil
			c.PublicKey, c.PublicKeyID = &k.platform.PublicKey, "PUB_KEY_ID_0114232134912410000000000000"
		}), "", false},
		{"v3 APIv3Key only", v3(func(c *wechat.Config) { c.PlatformCerts = nil; c.APIv3Key = strings.Repeat("a", 32) }), "", false},
		{"loopback http", v3(func(c *wechat.Config) { c.BaseURL = "http://127.0.0.1:8080" }), "", false},
		{"loopback http 127.0.0.2", v3(func(c *wechat.Config) { c.BaseURL = "http://127.0.0.2:8080/" }), "", false},
		{"localhost http", v3(func(c *wechat.Config) { c.BaseURL = "http://localhost:8080/prefix" }), "", false},
		{"ipv6 loopback http", v3(func(c *wechat.Config) { c.BaseURL = "http://[::1]:8080" }), "", false},
		{"v2 defaults", v2(func(*wechat.Config) {}), "", true},
		{"v2 MD5", v2(func(c *wechat.Config) { c.SignType = wechat.SignMD5 }), "", true},

		{"unknown API", v3(func(c *wechat.Config) { c.API = "v4" }), "Config.API", false},
		{"http non-loopback", v3(func(c *wechat.Config) { c.BaseURL = "http://apihk.mch.weixin.qq.com" }), "Config.BaseURL", false},
		{"http private address", v3(func(c *wechat.Config) { c.BaseURL = "http://10.0.0.1" }), "Config.BaseURL", false},
		{"http loopback lookalike", v3(func(c *wechat.Config) { c.BaseURL = "http://localhost.evil.com" }), "Config.BaseURL", false},
		{"ftp", v3(func(c *wechat.Config) { c.BaseURL = "ftp://apihk.mch.weixin.qq.com" }), "Config.BaseURL", false},
		{"relative", v3(func(c *wechat.Config) { c.BaseURL = "apihk.mch.weixin.qq.com" }), "Config.BaseURL", false},
		{"query", v3(func(c *wechat.Config) { c.BaseURL = "https://apihk.mch.weixin.qq.com/?a=b" }), "Config.BaseURL", false},
		{"user info", v3(func(c *wechat.Config) { c.BaseURL = "https://u:p@apihk.mch.weixin.qq.com" }), "Config.BaseURL", false},
		{"no MchID", v3(func(c *wechat.Config) { c.MchID = "" }), "Config.MchID", false},
		{"bad MchID", v3(func(c *wechat.Config) { c.MchID = `190"0` }), "Config.MchID", false},
		{"negative Timeout", v3(func(c *wechat.Config) { c.Timeout = -1 }), "Config.Timeout", false},
		{"UserAgent newline", v3(func(c *wechat.Config) { c.UserAgent = "a\r\nX-Evil: 1" }), "Config.UserAgent", false},
		{"bad PathStyle", v3(func(c *wechat.Config) { c.PathStyle = "cn" }), "Config.PathStyle", false},
		{"no PrivateKey", v3(func(c *wechat.Config) { c.PrivateKey = nil }), "Config.PrivateKey", false},
		{"small PrivateKey", v3(func(c *wechat.Config) { c.PrivateKey = small }), "Config.PrivateKey", false},
		{"no CertSerial", v3(func(c *wechat.Config) { c.CertSerial = "" }), "Config.CertSerial is required for API v3", false},
		{"non-hex CertSerial", v3(func(c *wechat.Config) { c.CertSerial = "XYZ" }), "Config.CertSerial", false},
		{"nil platform cert", v3(func(c *wechat.Config) { c.PlatformCerts = []*x509.Certificate{nil} }), "Config.PlatformCerts[0]", false},
		{"PublicKey without ID", v3(func(c *wechat.Config) { c.PublicKey = &k.platform.PublicKey }), "Config.PublicKeyID", false},
		{"ID without PublicKey", v3(func(c *wechat.Config) { c.PublicKeyID = "PUB_KEY_ID_1" }), "Config.PublicKey", false},
		{"bad PublicKeyID", v3(func(c *wechat.Config) { c.PublicKey, c.PublicKeyID = &k.platform.PublicKey, "PUB KEY" }), "Config.PublicKeyID", false},
		{"short APIv3Key", v3(func(c *wechat.Config) { c.APIv3Key = "short" }), "Config.APIv3Key", false},
		{"no verification key", v3(func(c *wechat.Config) { c.PlatformCerts = nil }), "Config.PlatformCerts", false},
		{"negative CertRefreshInterval", v3(func(c *wechat.Config) { c.CertRefreshInterval = -1 }), "Config.CertRefreshInterval", false},
		{"v2 no AppID", v2(func(c *wechat.Config) { c.AppID = "" }), "Config.AppID", true},
		{"v2 no APIKey", v2(func(c *wechat.Config) { c.APIKey = "" }), "Config.APIKey", true},
		{"v2 APIKey with whitespace", v2(func(c *wechat.Config) { c.APIKey = testAPIKey + "\n" }), "Config.APIKey", true},
		{"v2 bad SignType", v2(func(c *wechat.Config) { c.SignType = "SHA1" }), "Config.SignType", true},
		{"v2 no MchID", v2(func(c *wechat.Config) { c.MchID = "" }), "Config.MchID", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := wechat.New(tt.cfg)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				_, isV2 := c.(*wechat.V2Client)
				_, isV3 := c.(*wechat.V3Client)
				if isV2 != tt.wantV2 || isV3 == tt.wantV2 {
					t.Errorf("New returned %T", c)
				}
				return
			}
			if err == nil {
				t.Fatalf("New succeeded, want an error naming %s", tt.wantErr)
			}
			if !errors.Is(err, wechat.ErrInvalidConfig) {
				t.Errorf("%v does not wrap ErrInvalidConfig", err)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%q does not name %q", err, tt.wantErr)
			}
			// The field is machine-readable too, for callers that map it
			// to where the value came from.
			var ce *wechat.ConfigError
			wantField := strings.TrimPrefix(tt.wantErr, "Config.")
			if i := strings.IndexAny(wantField, "[ "); i >= 0 {
				wantField = wantField[:i]
			}
			if !errors.As(err, &ce) || ce.Field != wantField || ce.Reason == "" {
				t.Errorf("error %#v is not a *ConfigError for field %q", err, wantField)
			}
			assertNoSecrets(t, err.Error(), tt.cfg)
		})
	}
}

func TestNewV2RejectsV3Config(t *testing.T) {
	if _, err := wechat.NewV2(v3Config(t, "")); !errors.Is(err, wechat.ErrInvalidConfig) {
		t.Errorf("NewV2 with a v3 config: %v", err)
	}
	if _, err := wechat.NewV3(v2Config("", "")); !errors.Is(err, wechat.ErrInvalidConfig) {
		t.Errorf("NewV3 with a v2 config: %v", err)
	}
}

// assertNoSecrets fails if s contains any secret of cfg.
func assertNoSecrets(t *testing.T, s string, cfg wechat.Config) {
	t.Helper()
	var secrets []string
	if cfg.APIKey != "" {
		secrets = append(secrets, cfg.APIKey)
	}
	if cfg.APIv3Key != "" {
		secrets = append(secrets, cfg.APIv3Key)
	}
	if cfg.PrivateKey != nil {
		der, _ := x509.MarshalPKCS8PrivateKey(cfg.PrivateKey)
		p := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
		// Any full base64 line of the key would be a leak.
		secrets = append(secrets, strings.Split(p, "\n")[1:5]...)
		secrets = append(secrets, cfg.PrivateKey.D.String(), fmt.Sprintf("%x", cfg.PrivateKey.D))
	}
	for _, sec := range secrets {
		if strings.Contains(s, sec) {
			t.Errorf("secret leaked in %q", s)
		}
	}
}

func TestConfigStringRedactsSecrets(t *testing.T) {
	cfg := v3Config(t, "")
	cfg.APIv3Key = strings.Repeat("s", 32)
	cfg2 := v2Config("", "")
	for _, c := range []wechat.Config{cfg, cfg2} {
		for _, f := range []string{"%v", "%+v", "%s", "%#v"} {
			assertNoSecrets(t, fmt.Sprintf(f, c), c)
			assertNoSecrets(t, fmt.Sprintf(f, &c), c)
		}
	}
}

// A URL's user information is a credential: no error or description may
// show it, whether the URL parses or not.
func TestBaseURLUserInfoIsRedacted(t *testing.T) {
	const secret = "s3cr3t-pw"
	for _, raw := range []string{
		"https://merchant:" + secret + "@apihk.mch.weixin.qq.com",
		"http://merchant:" + secret + "@example.com/prefix",
		"https://" + secret + "@apihk.mch.weixin.qq.com",
		"https://merchant:" + secret + "@apihk.mch.weixin.qq.com/%zz",
		"https://merchant:" + secret + "@[::1",
		"merchant:" + secret + "@apihk.mch.weixin.qq.com",
		"https://apihk.mch.weixin.qq.com/?token=" + secret,
		"https://apihk.mch.weixin.qq.com/#" + secret,
	} {
		cfg := v3Config(t, raw)
		_, err := wechat.New(cfg)
		var ce *wechat.ConfigError
		if !errors.As(err, &ce) || ce.Field != "BaseURL" {
			t.Fatalf("%q: error %v, want a BaseURL *ConfigError", raw, err)
		}
		for _, s := range []string{err.Error(), ce.Reason, cfg.String(), fmt.Sprintf("%+v", cfg)} {
			if strings.Contains(s, secret) {
				t.Errorf("%q: %q shows the secret", raw, s)
			}
		}
	}
}
