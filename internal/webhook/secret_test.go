package webhook

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

func newSecretString(t testing.TB, n int) string {
	t.Helper()
	key := make([]byte, n)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	return SecretPrefix + base64.StdEncoding.EncodeToString(key)
}

// TestSignKnownVector checks Sign against the example in the Standard
// Webhooks specification's reference tests.
func TestSignKnownVector(t *testing.T) {
	s, err := ParseSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		t.Fatal(err)
	}
	got := s.Sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, []byte(`{"test": 2432232314}`))
	if want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; got != want {
		t.Fatalf("Sign = %s, want %s", got, want)
	}
}

// TestSignAgreesWithTheLibrary: for random keys, ids and bodies, the
// independent Go library verifies what Sign produces, and rejects it when
// any part changes.
func TestSignAgreesWithTheLibrary(t *testing.T) {
	for i := range 20 {
		raw := newSecretString(t, MinKeyBytes+i*2)
		s, err := ParseSecret(raw)
		if err != nil {
			t.Fatal(err)
		}
		wh, err := standardwebhooks.NewWebhook(raw)
		if err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprintf("reconcile:1900000109:out_trade_no:ORDER-%d", i)
		ts := time.Now().Unix()
		body := []byte(fmt.Sprintf(`{"out_trade_no":"ORDER-%d","reason":"ORDERPAID","n":"é\u2028"}`, i))
		h := http.Header{}
		h.Set(HeaderID, id)
		h.Set(HeaderTimestamp, fmt.Sprint(ts))
		h.Set(HeaderSignature, s.Sign(id, ts, body))
		if err := wh.Verify(body, h); err != nil {
			t.Fatalf("library rejects our signature: %v", err)
		}
		libSig, _ := wh.Sign(id, time.Unix(ts, 0), body)
		if libSig != h.Get(HeaderSignature) {
			t.Fatalf("signatures differ: ours %s, library %s", h.Get(HeaderSignature), libSig)
		}
		tampered := append([]byte(nil), body...)
		tampered[2] ^= 1
		if err := wh.Verify(tampered, h); err == nil {
			t.Fatal("library accepts a tampered body")
		}
		h.Set(HeaderID, id+"x")
		if err := wh.Verify(body, h); err == nil {
			t.Fatal("library accepts another webhook-id")
		}
	}
}

func TestParseSecret(t *testing.T) {
	key24 := newSecretString(t, 24)
	tests := []struct {
		name, in string
		ok       bool
		want     string
	}{
		{"24 bytes", key24, true, ""},
		{"64 bytes with newline", newSecretString(t, 64) + "\n", true, ""},
		{"no prefix", strings.TrimPrefix(key24, SecretPrefix), false, "must start with"},
		{"other prefix", "whsk_" + strings.TrimPrefix(key24, SecretPrefix), false, "must start with"},
		{"url-safe alphabet", SecretPrefix + "_-" + strings.TrimPrefix(key24, SecretPrefix)[2:], false, "not standard base64"},
		{"too short", newSecretString(t, 16), false, "the key is 16 bytes"},
		{"too long", newSecretString(t, 65), false, "the key is 65 bytes"},
		{"empty", "", false, "must start with"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseSecret(tt.in)
			if tt.ok {
				if err != nil || s.IsZero() {
					t.Fatalf("ParseSecret: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrSecret) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want ErrSecret saying %q", err, tt.want)
			}
			if b64 := strings.TrimPrefix(strings.TrimSpace(tt.in), SecretPrefix); len(b64) >= 8 && strings.Contains(err.Error(), b64[:8]) {
				t.Fatalf("error %q quotes the secret", err)
			}
		})
	}
}

func TestLoadSecret(t *testing.T) {
	raw := newSecretString(t, 32)
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, []byte(raw+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadSecret(path); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(strings.TrimPrefix(raw, SecretPrefix)), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadSecret(path)
	if !errors.Is(err, ErrSecret) || !strings.Contains(err.Error(), path) || strings.Contains(err.Error(), raw[6:14]) {
		t.Fatalf("bad file: %v", err)
	}
	if _, err := LoadSecret(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, ErrSecret) {
		t.Fatalf("missing file: %v", err)
	}
}

// TestSecretIsNeverPrinted: fmt with any verb, alone or inside Options,
// prints a placeholder.
func TestSecretIsNeverPrinted(t *testing.T) {
	raw := newSecretString(t, 32)
	s, err := ParseSecret(raw)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(raw, SecretPrefix))
	opts := Options{URL: "https://example.com/hook", Secret: s}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
		for _, v := range []any{s, &s, opts, &opts} {
			out := fmt.Sprintf(verb, v)
			if strings.Contains(out, raw[6:]) || strings.Contains(out, fmt.Sprintf("%x", key[:6])) || strings.Contains(out, string(key[:6])) ||
				strings.Contains(out, fmt.Sprint(key[:3])[1:8]) { //nolint:staticcheck // the decimal byte list, as %v prints a []byte
				t.Errorf("fmt %s of %T prints the key: %s", verb, v, out)
			}
		}
	}
}

func TestCheckURL(t *testing.T) {
	tests := []struct {
		url, shown string
		ok         bool
	}{
		{"https://example.com/wxclose/paid", "https://example.com/wxclose/paid", true},
		{"https://user:p4ssw0rd@example.com/hook?token=t0ken", "https://example.com/hook", true},
		{"http://127.0.0.1:9000/hook", "http://127.0.0.1:9000/hook", true},
		{"http://localhost/hook", "http://localhost/hook", true},
		{"http://[::1]:9000/", "http://[::1]:9000/", true},
		{"http://example.com/hook", "", false},
		{"http://10.0.0.1/hook", "", false},
		{"ftp://example.com/hook", "", false},
		{"example.com/hook", "", false},
		{"https:///hook", "", false},
		{"https://example.com/hook#x", "", false},
		{"https://user:p4ssw0rd@exa mple.com/", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		shown, err := checkURL(tt.url)
		if tt.ok != (err == nil) || shown != tt.shown {
			t.Errorf("checkURL(%q) = %q, %v; want %q ok=%v", tt.url, shown, err, tt.shown, tt.ok)
		}
		if err != nil && (!errors.Is(err, ErrURL) || strings.Contains(err.Error(), "p4ssw0rd") || strings.Contains(err.Error(), "t0ken")) {
			t.Errorf("checkURL(%q) error %q: want ErrURL without credentials", tt.url, err)
		}
	}
}
