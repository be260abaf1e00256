package wechat_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/wxclose/wxclose/wechat"
	"github.com/wxclose/wxclose/wechat/sandbox"
)

// impostor is a certificate for a key WeChat Pay never had (keys.other),
// self-signed, with the given validity, in the forms the sandbox and the
// client take.
type impostor struct {
	keyPEM, certPEM []byte
	cert            *x509.Certificate
}

func newImpostor(t *testing.T, validity func() (time.Time, time.Time)) impostor {
	t.Helper()
	notBefore, notAfter := validity()
	k := getKeys(t).other
	sn, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn.Add(sn, new(big.Int).Lsh(big.NewInt(1), 124)), // 16 bytes, no leading zero
		Subject:      pkix.Name{CommonName: "Tenpay.com impostor"},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	p8, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return impostor{
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}),
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		cert:    cert,
	}
}

var (
	validFor = func() (time.Time, time.Time) { return time.Now().Add(-time.Hour), time.Now().Add(365 * 24 * time.Hour) }
	expired  = func() (time.Time, time.Time) { return time.Now().Add(-48 * time.Hour), time.Now().Add(-24 * time.Hour) }
	future   = func() (time.Time, time.Time) { return time.Now().Add(24 * time.Hour), time.Now().Add(48 * time.Hour) }
)

// With platform certificates configured (pinned) and the APIv3 key set, as
// sandbox.env configures a worker, a certificate list signed by a
// certificate that only the list itself vouches for (self-signed by someone
// who knows the APIv3 key, valid or expired) is rejected, and so is a 204
// signed with its key: the order is never reported closed.
func TestPinnedCertificatesRejectSelfSignedDownload(t *testing.T) {
	for _, tc := range []struct {
		name     string
		validity func() (time.Time, time.Time)
	}{{"valid", validFor}, {"expired", expired}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newSandbox(t, sandbox.Options{})
			e.addOrder(sandbox.Order{OutTradeNo: "T1"})
			imp := newImpostor(t, tc.validity)
			if _, err := e.sb.ImpersonatePlatform(imp.keyPEM, imp.certPEM); err != nil {
				t.Fatal(err)
			}
			cfg := e.v3Config(t, trustCert)
			cfg.APIv3Key = e.creds.APIv3Key
			var hook hookRecorder
			cfg.Hooks.CertificateRefreshFailed = hook.refreshFailed
			c, err := wechat.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			out, err := c.Close(context.Background(), wechat.CloseRequest{OutTradeNo: "T1"})
			checkClose(t, out, err, expect{class: wechat.ClassRetryable, sentinel: wechat.ErrUntrustedResponse})
			if e.certificateCalls() != 1 {
				t.Errorf("%d certificate downloads, want 1", e.certificateCalls())
			}
			errs := hook.failures()
			if len(errs) != 1 || !errors.Is(errs[0], wechat.ErrCertificateDownload) || !errors.Is(errs[0], wechat.ErrUntrustedResponse) {
				t.Fatalf("CertificateRefreshFailed got %v, want one untrusted download", errs)
			}
			if wechat.ClassOf(errs[0]) != wechat.ClassRetryable {
				t.Errorf("download error %v is not retryable", errs[0])
			}
		})
	}
}

// With the APIv3 key alone, the first download bootstraps trust, but only
// through a certificate that is valid now.
func TestBootstrapRejectsCertificatesOutsideValidity(t *testing.T) {
	for _, tc := range []struct {
		name     string
		validity func() (time.Time, time.Time)
		why      string
	}{{"expired", expired, "expired"}, {"not yet valid", future, "not valid before"}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newSandbox(t, sandbox.Options{})
			e.addOrder(sandbox.Order{OutTradeNo: "T1"})
			imp := newImpostor(t, tc.validity)
			if _, err := e.sb.ImpersonatePlatform(imp.keyPEM, imp.certPEM); err != nil {
				t.Fatal(err)
			}
			c, err := wechat.New(e.v3Config(t, trustDownload))
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Close(context.Background(), wechat.CloseRequest{OutTradeNo: "T1"})
			checkClose(t, wechat.Outcome{}, err, expect{class: wechat.ClassRetryable, sentinel: wechat.ErrCertificateDownload})
			if !strings.Contains(err.Error(), tc.why) {
				t.Errorf("error %q does not say %q", err, tc.why)
			}
			if o, _ := e.sb.Order("T1"); o.State != sandbox.StateUnpaid {
				t.Errorf("a close was sent without any trusted key")
			}
		})
	}
}

// After the bootstrap, later downloads must verify with what was trusted
// before: an impostor's list is rejected, the downloaded certificates are
// kept, and a genuine rotation (listed and signed by the old certificate)
// is still followed.
func TestDownloadAfterBootstrapIsPinned(t *testing.T) {
	e := newSandbox(t, sandbox.Options{})
	cfg := e.v3Config(t, trustDownload)
	var hook hookRecorder
	cfg.Hooks.CertificateRefreshFailed = hook.refreshFailed
	c, err := wechat.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	closeNo := func(no string) (wechat.Outcome, error) {
		e.addOrder(sandbox.Order{OutTradeNo: no})
		return c.Close(context.Background(), wechat.CloseRequest{OutTradeNo: no})
	}
	out, err := closeNo("T1")
	checkClose(t, out, err, expect{result: wechat.ResultClosed})

	imp := newImpostor(t, validFor)
	if _, err := e.sb.ImpersonatePlatform(imp.keyPEM, imp.certPEM); err != nil {
		t.Fatal(err)
	}
	_, err = closeNo("T2")
	checkClose(t, wechat.Outcome{}, err, expect{class: wechat.ClassRetryable, sentinel: wechat.ErrUntrustedResponse})
	if n := e.certificateCalls(); n != 2 {
		t.Fatalf("%d certificate downloads, want 2 (the unknown serial triggers one)", n)
	}
	if errs := hook.failures(); len(errs) != 1 || !errors.Is(errs[0], wechat.ErrCertificateDownload) {
		t.Fatalf("CertificateRefreshFailed got %v, want one", errs)
	}

	// WeChat Pay rotates for real: the old certificate, still trusted,
	// vouches for the new one.
	if _, err := e.sb.RotatePlatformCert(); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(61 * time.Second)
	out, err = c.Close(context.Background(), wechat.CloseRequest{OutTradeNo: "T2"})
	checkClose(t, out, err, expect{result: wechat.ResultAlreadyClosed, code: "ORDERCLOSED"})
	if n := e.certificateCalls(); n != 3 {
		t.Fatalf("%d certificate downloads, want 3", n)
	}
}

// A configured certificate outside its validity period verifies nothing.
func TestConfiguredCertificateOutsideValidityIsNotUsed(t *testing.T) {
	for _, tc := range []struct {
		name     string
		validity func() (time.Time, time.Time)
		why      string
	}{{"expired", expired, "expired"}, {"not yet valid", future, "not valid before"}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newSandbox(t, sandbox.Options{})
			e.addOrder(sandbox.Order{OutTradeNo: "T1"})
			imp := newImpostor(t, tc.validity)
			if _, err := e.sb.ImpersonatePlatform(imp.keyPEM, imp.certPEM); err != nil {
				t.Fatal(err)
			}
			cfg := e.v3Config(t, trustCert)
			cfg.PlatformCerts = []*x509.Certificate{imp.cert}
			c, err := wechat.New(cfg)
			if err != nil {
				t.Fatalf("New with a certificate outside its validity: %v", err)
			}
			_, err = c.Close(context.Background(), wechat.CloseRequest{OutTradeNo: "T1"})
			checkClose(t, wechat.Outcome{}, err, expect{class: wechat.ClassRetryable, sentinel: wechat.ErrUntrustedResponse})
			if !strings.Contains(err.Error(), tc.why) {
				t.Errorf("error %q does not say %q", err, tc.why)
			}
		})
	}
}

// A download that does not decrypt is retryable, is reported to the hook
// (at most once a minute), and changes nothing: the configured certificate
// still verifies closes.
func TestBadDownloadKeepsTrustedCertificates(t *testing.T) {
	e := newSandbox(t, sandbox.Options{})
	cfg := e.v3Config(t, trustCert)
	cfg.APIv3Key = strings.Repeat("w", 32) // not the sandbox's
	var hook hookRecorder
	cfg.Hooks.CertificateRefreshFailed = hook.refreshFailed
	c, err := wechat.NewV3(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = c.RefreshCertificates(context.Background())
	checkClose(t, wechat.Outcome{}, err, expect{class: wechat.ClassRetryable, sentinel: wechat.ErrCertificateDecrypt})
	if !errors.Is(err, wechat.ErrCertificateDownload) {
		t.Errorf("%v does not wrap ErrCertificateDownload", err)
	}
	for i, no := range []string{"T1", "T2"} {
		e.addOrder(sandbox.Order{OutTradeNo: no})
		out, err := c.Close(context.Background(), wechat.CloseRequest{OutTradeNo: no})
		checkClose(t, out, err, expect{result: wechat.ResultClosed})
		if n := e.certificateCalls(); n != 1 {
			t.Fatalf("close %d: %d certificate downloads, want 1 (once a minute)", i, n)
		}
	}
	e.clock.Advance(61 * time.Second)
	e.addOrder(sandbox.Order{OutTradeNo: "T3"})
	out, err := c.Close(context.Background(), wechat.CloseRequest{OutTradeNo: "T3"})
	checkClose(t, out, err, expect{result: wechat.ResultClosed})
	if n := e.certificateCalls(); n != 2 {
		t.Fatalf("%d certificate downloads after a minute, want 2", n)
	}
	errs := hook.failures()
	if len(errs) != 2 {
		t.Fatalf("CertificateRefreshFailed called %d times, want 2", len(errs))
	}
	for _, err := range errs {
		if !errors.Is(err, wechat.ErrCertificateDecrypt) || wechat.ClassOf(err) != wechat.ClassRetryable {
			t.Errorf("hook got %v", err)
		}
	}
}

// The response timestamp window matches the official SDK: 299 s away is
// accepted, 300 s is not, in either direction.
func TestResponseTimestampWindow(t *testing.T) {
	base := time.Now().Truncate(time.Second)
	for _, tc := range []struct {
		name string
		off  time.Duration // client clock minus WeChat Pay's
		ok   bool
	}{
		{"299 s old", 299 * time.Second, true},
		{"300 s old", 300 * time.Second, false},
		{"299 s ahead", -299 * time.Second, true},
		{"300 s ahead", -300 * time.Second, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newSandbox(t, sandbox.Options{Now: func() time.Time { return base }})
			e.addOrder(sandbox.Order{OutTradeNo: "T1", CreatedAt: base.Add(-time.Hour)})
			cfg := e.v3Config(t, trustCert)
			cfg.Now = func() time.Time { return base.Add(tc.off) }
			c, err := wechat.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			out, err := c.Close(context.Background(), wechat.CloseRequest{OutTradeNo: "T1"})
			if tc.ok {
				checkClose(t, out, err, expect{result: wechat.ResultClosed})
				return
			}
			checkClose(t, out, err, expect{class: wechat.ClassRetryable, sentinel: wechat.ErrUntrustedResponse})
			if !strings.Contains(err.Error(), "5 minutes") {
				t.Errorf("error %q does not name the window", err)
			}
		})
	}
}

// Hooks.ServerClock hears WeChat Pay's clock on every response: the signed
// timestamp when the response verified, else the Date header.
func TestServerClockHook(t *testing.T) {
	const behind = 100 * time.Second // the sandbox's clock, so the two sources differ
	sbNow := func() time.Time { return time.Now().Add(-behind) }
	near := func(a, b time.Time) bool { d := a.Sub(b); return d > -3*time.Second && d < 3*time.Second }
	for _, tc := range []struct {
		name   string
		api    wechat.APIVersion
		mode   trustMode
		script []sandbox.Step
		query  []sandbox.Step
		signed []bool // per response: signed timestamp (true) or Date
	}{
		{"v3 verified", wechat.APIv3, trustCert, nil, nil, []bool{true}},
		{"v3 download and close", wechat.APIv3, trustDownload, nil, nil, []bool{true, true}},
		{"v3 unverified error", wechat.APIv3, trustCert, []sandbox.Step{sandbox.SystemError()}, nil, []bool{false}},
		{"v3 forged close, forged query", wechat.APIv3, trustCert, []sandbox.Step{sandbox.BadSignature()}, []sandbox.Step{sandbox.BadSignature()}, []bool{false, false}},
		{"v3 forged close, signed query", wechat.APIv3, trustCert, []sandbox.Step{sandbox.BadSignature()}, nil, []bool{false, true}},
		{"v2", wechat.APIv2, 0, nil, nil, []bool{false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newSandbox(t, sandbox.Options{Now: sbNow})
			e.addOrder(sandbox.Order{OutTradeNo: "T1", CreatedAt: time.Now().Add(-time.Hour)})
			e.sb.Script("T1", tc.script...)
			e.sb.ScriptQuery("T1", tc.query...)
			cfg := e.v3Config(t, tc.mode)
			if tc.api == wechat.APIv2 {
				cfg = e.v2Config(wechat.SignMD5)
			}
			cfg.Now = time.Now
			var hook hookRecorder
			cfg.Hooks.ServerClock = hook.serverClock
			c, err := wechat.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = c.Close(context.Background(), wechat.CloseRequest{OutTradeNo: "T1"})
			obs := hook.observations()
			if len(obs) != len(tc.signed) {
				t.Fatalf("%d observations %+v, want %d", len(obs), obs, len(tc.signed))
			}
			for i, o := range obs {
				if o.received.Before(o.sent) {
					t.Errorf("observation %d: received %v before sent %v", i, o.received, o.sent)
				}
				want := o.sent // the Date header: the HTTP server's real clock
				if tc.signed[i] {
					want = o.sent.Add(-behind)
				}
				if !near(o.server, want) {
					t.Errorf("observation %d: server %v, want about %v (signed %v)", i, o.server, want, tc.signed[i])
				}
			}
		})
	}
}
