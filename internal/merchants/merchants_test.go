package merchants_test

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxclose/wxclose/internal/config"
	"github.com/wxclose/wxclose/internal/merchants"
	"github.com/wxclose/wxclose/wechat"
	"github.com/wxclose/wxclose/wechat/sandbox"
)

const (
	mchA = "1900000109" // v3
	mchB = "1900000200" // v2
)

var (
	credsOnce sync.Once
	credsA    *sandbox.Credentials
	credsB    *sandbox.Credentials
	credsErr  error
)

// keys returns two merchants' sandbox credentials, generated once per test
// binary (RSA key generation is slow).
func keys(t *testing.T) (a, b *sandbox.Credentials) {
	t.Helper()
	credsOnce.Do(func() {
		if credsA, credsErr = sandbox.GenerateCredentials(mchA, ""); credsErr != nil {
			return
		}
		credsB, credsErr = sandbox.GenerateCredentials(mchB, "wx2421b1c4370ec43b")
	})
	if credsErr != nil {
		t.Fatal(credsErr)
	}
	return credsA, credsB
}

// fixture is a sandbox serving both merchants and a registry file for it.
type fixture struct {
	dir, file string
	sb        *sandbox.Server
	url       string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	a, b := keys(t)
	sb, err := sandbox.New(sandbox.Options{Credentials: a, Merchants: []*sandbox.Credentials{b}})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(sb.Handler())
	t.Cleanup(hs.Close)
	dir := t.TempDir()
	for _, c := range []*sandbox.Credentials{a, b} {
		if err := c.WriteFiles(filepath.Join(dir, c.MchID)); err != nil {
			t.Fatal(err)
		}
	}
	f := &fixture{dir: dir, file: filepath.Join(dir, "merchants.yaml"), sb: sb, url: hs.URL}
	f.write(t, f.registry(""))
	return f
}

// registry is a valid two-merchant registry, with extra appended to the v2
// entry.
func (f *fixture) registry(extra string) string {
	return fmt.Sprintf(`# two merchants
merchants:
  - mchid: "%[1]s"
    name: brand-a
    api: v3
    base_url: %[3]s
    path_style: global
    private_key_file: %[4]s/%[1]s/apiclient_key.pem
    cert_serial: %[5]s
    platform_cert_file: %[4]s/%[1]s/platform_cert.pem
    rate_limit: 200
  - mchid: "%[2]s"
    api: v2
    base_url: %[3]s
    appid: wx2421b1c4370ec43b
    api_key_file: %[4]s/%[2]s/api_key
    sign_type: HMAC-SHA256
    timeout: 5s
%[6]s`, mchA, mchB, f.url, f.dir, credsA.MerchantCertSerial, extra)
}

func (f *fixture) write(t *testing.T, content string) {
	t.Helper()
	// Through a rename, as an operator's tooling should, so that a reload
	// never reads half a file; and with a fresh modification time.
	tmp := f.file + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, f.file); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) order(no, mchid string) {
	f.sb.AddOrder(sandbox.Order{OutTradeNo: no, MchID: mchid, CreatedAt: time.Now().Add(-time.Hour)})
}

// TestRegistryClosesWithEachMerchantsOwnKeys: a registry of a v3 and a v2
// merchant loads every key, and each merchant's client closes its own
// orders at the sandbox, which verifies every request with that merchant's
// own keys.
func TestRegistryClosesWithEachMerchantsOwnKeys(t *testing.T) {
	f := newFixture(t)
	r, err := merchants.New(context.Background(), merchants.Options{File: f.file, DefaultRateLimit: 100})
	if err != nil {
		t.Fatal(err)
	}
	a, err := r.Lookup(mchA)
	if err != nil || a.Name != "brand-a" || a.API != wechat.APIv3 || a.RateLimit != 200 {
		t.Fatalf("Lookup(A) = %+v, %v", a, err)
	}
	b, err := r.Lookup(mchB)
	if err != nil || b.Name != "" || b.API != wechat.APIv2 || b.RateLimit != 100 {
		t.Fatalf("Lookup(B) = %+v, %v; want v2, no name, the default rate", b, err)
	}
	f.order("ORDER-A", mchA)
	f.order("ORDER-B", mchB)
	for _, tc := range []struct {
		m  *merchants.Merchant
		no string
	}{{a, "ORDER-A"}, {b, "ORDER-B"}} {
		out, err := tc.m.Closer.Close(context.Background(), wechat.CloseRequest{OutTradeNo: tc.no, MchID: tc.m.MchID})
		if err != nil || out.Result != wechat.ResultClosed {
			t.Fatalf("merchant %s closing %s: %+v, %v", tc.m.MchID, tc.no, out, err)
		}
	}
	// A's client refuses to sign for B's order: its answer is B's NO_AUTH
	// or a signature error, never a close.
	f.order("ORDER-B2", mchB)
	if out, err := a.Closer.Close(context.Background(), wechat.CloseRequest{OutTradeNo: "ORDER-B2", MchID: mchA}); err == nil {
		t.Fatalf("A's client closed B's order: %+v", out)
	}
	if _, err := r.Lookup("1900000999"); !errors.Is(err, merchants.ErrUnknown) {
		t.Fatalf("Lookup(unknown) = %v, want ErrUnknown", err)
	}
	if _, err := r.Lookup(""); !errors.Is(err, merchants.ErrAmbiguous) {
		t.Fatalf("Lookup(\"\") with two merchants = %v, want ErrAmbiguous", err)
	}
}

// TestBadRegistryNamesEntryAndField: every problem stops the load with an
// error naming the entry (index and mchid) and the field, wrapping
// config.ErrInvalid, and never quoting a secret.
func TestBadRegistryNamesEntryAndField(t *testing.T) {
	f := newFixture(t)
	const secret = "Sup3rSecretApiKey0123456789abcdE"
	keyFile := filepath.Join(f.dir, mchB, "api_key")
	short := filepath.Join(f.dir, "short_key")
	if err := os.WriteFile(short, []byte(secret[:20]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(f.dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a key "+secret), 0o600); err != nil {
		t.Fatal(err)
	}
	valid := f.registry("")
	tests := []struct {
		name    string
		content string
		want    []string
	}{
		{"unknown field", f.registry("    rate_limt: 50\n"), []string{"merchants[1] (mchid 1900000200) rate_limt", "not a known field"}},
		{"inline api key", f.registry("    api_key: " + secret + "\n"), []string{"merchants[1] (mchid 1900000200) api_key", "files only", "api_key_file"}},
		{"inline apiv3 key", strings.Replace(valid, "    rate_limit: 200\n", "    apiv3_key: "+secret+"\n", 1), []string{"merchants[0] (mchid 1900000109) apiv3_key", "apiv3_key_file"}},
		{"inline private key", strings.Replace(valid, "    rate_limit: 200\n", "    private_key: |\n      -----BEGIN PRIVATE KEY-----\n      "+secret+"\n", 1), []string{"merchants[0] (mchid 1900000109) private_key", "private_key_file"}},
		{"duplicate mchid", strings.Replace(valid, `mchid: "1900000200"`, `mchid: "1900000109"`, 1), []string{"merchants[1] (mchid 1900000109) mchid", "merchants[0]"}},
		{"duplicate name", f.registry("    name: brand-a\n"), []string{"merchants[1] (mchid 1900000200) name", "unique"}},
		{"name that is a merchant id", f.registry("    name: \"1900000200\"\n"), []string{"merchants[1] (mchid 1900000200) name", "only digits"}},
		{"duplicate key", f.registry("    appid: wx2421b1c4370ec43b\n"), []string{"merchants[1] (mchid 1900000200) appid", "twice"}},
		{"missing mchid", strings.Replace(valid, `  - mchid: "1900000200"`+"\n    api: v2", "  - api: v2", 1), []string{"merchants[1] mchid", "required"}},
		{"letters in mchid", strings.Replace(valid, `mchid: "1900000200"`, `mchid: "19x"`, 1), []string{"merchants[1] mchid", "digits"}},
		{"bad rate", f.registry("    rate_limit: fast\n"), []string{"merchants[1] (mchid 1900000200) rate_limit", "closes per second"}},
		{"bad timeout", strings.Replace(valid, "timeout: 5s", "timeout: 0s", 1), []string{"merchants[1] (mchid 1900000200) timeout", "positive"}},
		{"bad api", strings.Replace(valid, "api: v2", "api: v4", 1), []string{"merchants[1] (mchid 1900000200) api", "v3 or v2"}},
		{"v3 without private key", strings.Replace(valid, "    private_key_file:", "    public_key_id: PUB_KEY_ID_1\n    x_private_key_file:", 1), []string{"merchants[0] (mchid 1900000109)"}},
		{"v3 with nothing to verify", strings.Replace(valid, "    platform_cert_file:", "    # platform_cert_file:", 1), []string{"merchants[0] (mchid 1900000109) platform_cert_file", "public_key_file", "apiv3_key_file"}},
		{"plain http to a remote host", strings.Replace(valid, "base_url: "+f.url+"\n    path_style", "base_url: http://apihk.mch.weixin.qq.com\n    path_style", 1), []string{"merchants[0] (mchid 1900000109) base_url", "https"}},
		{"v2 without key file", strings.Replace(valid, "    api_key_file: "+keyFile+"\n", "", 1), []string{"merchants[1] (mchid 1900000200) api_key_file", "required"}},
		{"unknown top-level key", valid + "defaults:\n  rate_limit: 5\n", []string{"WXCLOSE_MERCHANTS_FILE", "defaults"}},
		{"no merchants", "merchants: []\n", []string{"WXCLOSE_MERCHANTS_FILE", "no merchants"}},
		{"not yaml", "merchants: [\n", []string{"WXCLOSE_MERCHANTS_FILE", "not a valid registry"}},
		// Errors found only once the files are read.
		{"missing key file", strings.Replace(valid, keyFile, keyFile+".absent", 1), []string{"merchants[1] (mchid 1900000200) api_key_file", "cannot be used", "no such file"}},
		{"short key in file", strings.Replace(valid, keyFile, short, 1), []string{"merchants[1] (mchid 1900000200) api_key_file", "32-character", "holds 20"}},
		{"garbage private key", strings.Replace(valid, filepath.Join(f.dir, mchA, "apiclient_key.pem"), garbage, 1), []string{"merchants[0] (mchid 1900000109) private_key_file", "cannot be used"}},
		{"garbage platform certificate", strings.Replace(valid, filepath.Join(f.dir, mchA, "platform_cert.pem"), garbage, 1), []string{"merchants[0] (mchid 1900000109) platform_cert_file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.write(t, tt.content)
			_, err := merchants.New(context.Background(), merchants.Options{File: f.file, DefaultRateLimit: 100})
			if err == nil {
				t.Fatal("the registry loaded")
			}
			t.Log(err)
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
			if !errors.Is(err, config.ErrInvalid) {
				t.Errorf("error does not wrap config.ErrInvalid: %v", err)
			}
			if strings.Contains(err.Error(), secret[:12]) {
				t.Errorf("error reveals a secret:\n%v", err)
			}
		})
	}
}

// TestReloadSwapsOnlyGoodRegistries: a reload picks up a new merchant and a
// rotated key, keeps the client of an unchanged merchant, and a reload that
// fails keeps everything in use. A merchant looked up before a reload (a
// close in flight) keeps its client.
func TestReloadSwapsOnlyGoodRegistries(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	r, err := merchants.New(ctx, merchants.Options{File: f.file, DefaultRateLimit: 100})
	if err != nil {
		t.Fatal(err)
	}
	a0, _ := r.Lookup(mchA)
	b0, _ := r.Lookup(mchB)

	// A broken registry: nothing changes.
	f.write(t, f.registry("    api_key: inline\n"))
	if err := r.Reload(ctx); err == nil {
		t.Fatal("a broken registry reloaded")
	}
	if a, _ := r.Lookup(mchA); a != a0 {
		t.Fatal("a failed reload changed the merchants in use")
	}

	// B's API key rotates (the sandbox does not know the new one: only the
	// client changes matter here), a merchant is added, A is untouched.
	newKey := "0123456789abcdef0123456789ABCDEF"
	if err := os.WriteFile(filepath.Join(f.dir, mchB, "api_key"), []byte(newKey), 0o600); err != nil {
		t.Fatal(err)
	}
	f.write(t, f.registry(fmt.Sprintf(`  - mchid: "1900000300"
    api: v2
    base_url: %s
    appid: wx2421b1c4370ec43b
    api_key_file: %s
    rate_limit: off
`, f.url, filepath.Join(f.dir, mchB, "api_key"))))
	if err := r.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	a1, _ := r.Lookup(mchA)
	b1, _ := r.Lookup(mchB)
	c1, err := r.Lookup("1900000300")
	if err != nil || c1.RateLimit != 0 {
		t.Fatalf("new merchant: %+v, %v; want rate_limit off", c1, err)
	}
	if a1.Closer != a0.Closer {
		t.Error("an unchanged merchant got a new client (and lost its downloaded certificates)")
	}
	if b1.Closer == b0.Closer {
		t.Error("a rotated key kept the old client")
	}
	if b0.Closer == nil || b0.MchID != mchB {
		t.Error("the merchant looked up before the reload changed")
	}
	if n := len(r.All()); n != 3 {
		t.Fatalf("All() has %d merchants, want 3", n)
	}
}

// TestWatchReloadsOnFileChange: a changed registry file is picked up
// without a signal.
func TestWatchReloadsOnFileChange(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, err := merchants.New(ctx, merchants.Options{File: f.file, DefaultRateLimit: 100, PollInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); r.Watch(ctx) }()
	defer func() { cancel(); <-done }()
	f.write(t, strings.Replace(f.registry(""), "rate_limit: 200", "rate_limit: 250", 1))
	deadline := time.Now().Add(10 * time.Second)
	for {
		if a, _ := r.Lookup(mchA); a.RateLimit == 250 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the changed registry was never loaded")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSingleMerchantFromEnvironment: without a registry file, the
// WECHATPAY_* merchant is the only one and serves payloads without mchid;
// its errors name the variables.
func TestSingleMerchantFromEnvironment(t *testing.T) {
	f := newFixture(t)
	_, b := keys(t)
	m := config.Merchant{API: wechat.APIv2, BaseURL: f.url, MchID: mchB, AppID: b.AppID, APIKey: b.APIKey, SignType: wechat.SignHMACSHA256}
	r, err := merchants.New(context.Background(), merchants.Options{Single: &m, DefaultRateLimit: 100})
	if err != nil {
		t.Fatal(err)
	}
	got, err := r.Lookup("")
	if err != nil || got.MchID != mchB || got.RateLimit != 100 {
		t.Fatalf("Lookup(\"\") = %+v, %v", got, err)
	}
	v3 := config.Merchant{API: wechat.APIv3, BaseURL: f.url, MchID: mchA, PathStyle: wechat.PathGlobal,
		PrivateKeyFile: filepath.Join(f.dir, "absent.pem"), CertSerial: "AB", APIv3Key: strings.Repeat("k", 32)}
	_, err = merchants.New(context.Background(), merchants.Options{Single: &v3})
	if err == nil || !strings.Contains(err.Error(), "WECHATPAY_MCH_PRIVATE_KEY_FILE") || !errors.Is(err, config.ErrInvalid) {
		t.Fatalf("missing key file: %v, want an error naming WECHATPAY_MCH_PRIVATE_KEY_FILE", err)
	}
}
