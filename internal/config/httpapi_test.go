package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wxclose/wxclose/internal/webhook"
)

func TestAPIAndWebhookDefaults(t *testing.T) {
	w, err := Load(envOf(validV3()))
	if err != nil {
		t.Fatal(err)
	}
	if !w.API || w.APIOnly || w.APITokensFile != "" || w.Webhook() {
		t.Errorf("API %t, APIOnly %t, tokens %q, webhook %t; want the API on, loopback-only, no webhook", w.API, w.APIOnly, w.APITokensFile, w.Webhook())
	}
	if w.WebhookTimeout != webhook.DefaultTimeout || w.WebhookConcurrency != DefaultWebhookConcurrency {
		t.Errorf("webhook timeout %s concurrency %d, want %s and %d", w.WebhookTimeout, w.WebhookConcurrency, webhook.DefaultTimeout, DefaultWebhookConcurrency)
	}
	if !strings.Contains(w.String(), "close_api=true") || !strings.Contains(w.String(), "webhook=off") {
		t.Errorf("String() = %s", w.String())
	}
}

// TestAPIRule: without tokens the close API is served only on a loopback
// address, as the dashboard without credentials is; otherwise the
// configuration is refused, naming WXCLOSE_API_TOKENS_FILE and the ways out.
func TestAPIRule(t *testing.T) {
	ui := map[string]string{"WXCLOSE_UI_USER": "ops", "WXCLOSE_UI_PASSWORD": "pw"}
	tests := []struct {
		name    string
		set     map[string]string
		apiOnly bool
		wantVar string // "" for no error
	}{
		{"loopback, no tokens", map[string]string{"WXCLOSE_HTTP_ADDR": "127.0.0.1:8080"}, false, ""},
		{"IPv6 loopback, no tokens", map[string]string{"WXCLOSE_HTTP_ADDR": "[::1]:8080"}, false, ""},
		{"localhost, no tokens", map[string]string{"WXCLOSE_HTTP_ADDR": "localhost:8080"}, false, ""},
		{"every interface, no tokens", mergeEnv(ui, map[string]string{"WXCLOSE_HTTP_ADDR": "0.0.0.0:8080"}), false, "WXCLOSE_API_TOKENS_FILE"},
		{"empty host, no tokens, no UI", map[string]string{"WXCLOSE_HTTP_ADDR": ":8080", "WXCLOSE_UI": "false"}, false, "WXCLOSE_API_TOKENS_FILE"},
		{"every interface with tokens", mergeEnv(ui, map[string]string{"WXCLOSE_HTTP_ADDR": "0.0.0.0:8080", "WXCLOSE_API_TOKENS_FILE": "/etc/wxclose/tokens"}), false, ""},
		{"every interface, API off", mergeEnv(ui, map[string]string{"WXCLOSE_HTTP_ADDR": "0.0.0.0:8080", "WXCLOSE_API": "false"}), false, ""},
		{"-api-only, every interface, no tokens", mergeEnv(ui, map[string]string{"WXCLOSE_HTTP_ADDR": "0.0.0.0:8080"}), true, "WXCLOSE_API_TOKENS_FILE"},
		{"-api-only with the API off", map[string]string{"WXCLOSE_API": "false"}, true, "WXCLOSE_API"},
		{"bad WXCLOSE_API", map[string]string{"WXCLOSE_API": "yes please"}, false, "WXCLOSE_API"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := mergeEnv(validV3(), tt.set)
			load := Load
			if tt.apiOnly {
				load = LoadAPIOnly
			}
			_, err := load(envOf(env))
			if tt.wantVar == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			var ce *Error
			if !errors.As(err, &ce) || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.wantVar) {
				t.Fatalf("error = %v, want a configuration error naming %s", err, tt.wantVar)
			}
			if tt.wantVar == "WXCLOSE_API_TOKENS_FILE" && !strings.Contains(err.Error(), "WXCLOSE_API=false") {
				t.Errorf("the error does not say how to turn the API off: %v", err)
			}
		})
	}
}

// TestWebhookRule: the webhook URL and secret file come together; the URL
// is https (plain http for loopback hosts only), absolute, without a
// fragment; errors never quote credentials in the URL.
func TestWebhookRule(t *testing.T) {
	const secretFile = "/etc/wxclose/webhook.secret"
	withSecret := func(u string) map[string]string {
		return map[string]string{"WXCLOSE_RECONCILE_WEBHOOK_URL": u, "WXCLOSE_RECONCILE_WEBHOOK_SECRET_FILE": secretFile}
	}
	tests := []struct {
		name    string
		set     map[string]string
		wantVar string
	}{
		{"https", withSecret("https://erp.example.com/wxclose/paid"), ""},
		{"https with credentials and query", withSecret("https://hook:s3cret@erp.example.com/paid?token=t0ken"), ""},
		{"http on 127.0.0.1", withSecret("http://127.0.0.1:9000/paid"), ""},
		{"http on localhost", withSecret("http://localhost:9000/paid"), ""},
		{"http on ::1", withSecret("http://[::1]:9000/paid"), ""},
		{"url without secret", map[string]string{"WXCLOSE_RECONCILE_WEBHOOK_URL": "https://erp.example.com/paid"}, "WXCLOSE_RECONCILE_WEBHOOK_SECRET_FILE"},
		{"secret without url", map[string]string{"WXCLOSE_RECONCILE_WEBHOOK_SECRET_FILE": secretFile}, "WXCLOSE_RECONCILE_WEBHOOK_URL"},
		{"plain http elsewhere", withSecret("http://hook:s3cret@erp.example.com/paid?token=t0ken"), "WXCLOSE_RECONCILE_WEBHOOK_URL"},
		{"relative", withSecret("erp.example.com/paid"), "WXCLOSE_RECONCILE_WEBHOOK_URL"},
		{"other scheme", withSecret("ftp://erp.example.com/paid"), "WXCLOSE_RECONCILE_WEBHOOK_URL"},
		{"fragment", withSecret("https://erp.example.com/paid#s3cret"), "WXCLOSE_RECONCILE_WEBHOOK_URL"},
		{"zero timeout", mergeEnv(withSecret("https://erp.example.com/paid"), map[string]string{"WXCLOSE_RECONCILE_WEBHOOK_TIMEOUT": "0s"}), "WXCLOSE_RECONCILE_WEBHOOK_TIMEOUT"},
		{"bad concurrency", mergeEnv(withSecret("https://erp.example.com/paid"), map[string]string{"WXCLOSE_RECONCILE_WEBHOOK_CONCURRENCY": "none"}), "WXCLOSE_RECONCILE_WEBHOOK_CONCURRENCY"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := Load(envOf(mergeEnv(validV3(), tt.set)))
			if tt.wantVar == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if !w.Webhook() {
					t.Error("Webhook() = false with a URL set")
				}
				if s := w.String(); strings.Contains(s, "s3cret") || strings.Contains(s, "t0ken") || !strings.Contains(s, "webhook="+w.WebhookURLShown()) {
					t.Errorf("String() = %s, want the URL without credentials or query", s)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.wantVar) {
				t.Fatalf("error = %v, want one naming %s", err, tt.wantVar)
			}
			if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "t0ken") {
				t.Errorf("the error quotes credentials of the URL: %v", err)
			}
		})
	}
}

// TestLoadAPIOnly: -api-only needs no WeChat Pay credentials and ignores
// their variables and the webhook's (a shared environment may hold them,
// unmounted files and all), but still requires the merchant filled into
// payloads that name none.
func TestLoadAPIOnly(t *testing.T) {
	env := map[string]string{
		"WECHATPAY_MCHID":               "1900000109",
		"WECHATPAY_API":                 "v4",
		"WECHATPAY_BASE_URL":            "http://not-loopback.example.com",
		"WECHATPAY_APIV3_KEY":           "short",
		"WXCLOSE_RECONCILE_WEBHOOK_URL": "http://erp.example.com/paid",
		"WXCLOSE_CLOSE_MARGIN":          "3s",
	}
	w, err := LoadAPIOnly(envOf(env))
	if err != nil {
		t.Fatalf("LoadAPIOnly: %v", err)
	}
	if !w.APIOnly || !w.API || w.Webhook() || w.MchID != "1900000109" || w.CloseMargin != 3*time.Second {
		t.Errorf("APIOnly %t API %t Webhook %t MchID %q margin %s", w.APIOnly, w.API, w.Webhook(), w.MchID, w.CloseMargin)
	}
	if _, err := Load(envOf(env)); err == nil {
		t.Error("the same environment loads for a worker; the test proves nothing")
	}
	delete(env, "WECHATPAY_MCHID")
	if _, err := LoadAPIOnly(envOf(env)); err == nil || !strings.Contains(err.Error(), "WECHATPAY_MCHID") {
		t.Errorf("without WECHATPAY_MCHID: %v, want an error naming it", err)
	}
}

func TestAPITokensAndWebhookSecretFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const shortToken = "tiny-s3cret"
	w := Worker{}
	if tok, err := w.APITokens(); tok != nil || err != nil {
		t.Errorf("no file: %v %v, want nil, nil", tok, err)
	}
	w.APITokensFile = write("tokens", "# ops\nplain-token-0123456789abcdef\n")
	if tok, err := w.APITokens(); err != nil || tok.Len() != 1 {
		t.Errorf("good file: %v, %v", tok, err)
	}
	w.APITokensFile = write("bad-tokens", shortToken+"\n")
	_, err := w.APITokens()
	if err == nil || !errors.Is(err, ErrInvalid) || !strings.HasPrefix(err.Error(), "WXCLOSE_API_TOKENS_FILE ") || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("bad file: %v, want an error naming the variable and the line", err)
	}
	if err != nil && strings.Contains(err.Error(), shortToken) {
		t.Errorf("the error quotes the token: %v", err)
	}

	w.WebhookSecretFile = filepath.Join(dir, "missing")
	if _, err := w.WebhookSecret(); err == nil || !errors.Is(err, ErrInvalid) || !strings.HasPrefix(err.Error(), "WXCLOSE_RECONCILE_WEBHOOK_SECRET_FILE ") {
		t.Errorf("missing secret file: %v", err)
	}
	w.WebhookSecretFile = write("short.secret", "whsec_czNjcmV0")
	if _, err := w.WebhookSecret(); err == nil || !errors.Is(err, ErrInvalid) || strings.Contains(err.Error(), "czNjcmV0") {
		t.Errorf("short secret: %v, want an error without the secret", err)
	}
	w.WebhookSecretFile = write("good.secret", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n")
	if s, err := w.WebhookSecret(); err != nil || s.IsZero() {
		t.Errorf("good secret: %v", err)
	}
}

func mergeEnv(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}
