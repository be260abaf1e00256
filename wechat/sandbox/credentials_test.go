package sandbox_test

import (
	"bufio"
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/wxclose/wxclose/wechat/sandbox"
)

func TestGenerateCredentials(t *testing.T) {
	c := testCreds(t)
	if c.MchID != sandbox.DefaultMchID || c.AppID != sandbox.DefaultAppID {
		t.Errorf("defaults %q %q", c.MchID, c.AppID)
	}
	hex40 := regexp.MustCompile(`^[0-9A-F]{40}$`)
	for _, tc := range []struct {
		certPEM, keyPEM []byte
		serial          string
	}{
		{c.MerchantCertPEM, c.MerchantPrivateKeyPEM, c.MerchantCertSerial},
		{c.PlatformCertPEM, c.PlatformKeyPEM, c.PlatformCertSerial},
	} {
		if !hex40.MatchString(tc.serial) {
			t.Errorf("serial %q is not 40 upper-case hex digits", tc.serial)
		}
		cb, _ := pem.Decode(tc.certPEM)
		cert, err := x509.ParseCertificate(cb.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if err := cert.CheckSignature(cert.SignatureAlgorithm, cert.RawTBSCertificate, cert.Signature); err != nil {
			t.Errorf("not self-signed: %v", err)
		}
		if got := strings.ToUpper(cert.SerialNumber.Text(16)); got != tc.serial {
			t.Errorf("serial %s, certificate says %s", tc.serial, got)
		}
		kb, _ := pem.Decode(tc.keyPEM)
		if kb.Type != "PRIVATE KEY" {
			t.Errorf("key PEM type %q", kb.Type)
		}
		k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		rk := k.(*rsa.PrivateKey)
		if rk.N.BitLen() != 2048 || !rk.PublicKey.Equal(cert.PublicKey) {
			t.Errorf("key is %d bits / does not match its certificate", rk.N.BitLen())
		}
	}
	if c.MerchantCertSerial == c.PlatformCertSerial {
		t.Error("merchant and platform serials are equal")
	}
	if !regexp.MustCompile(`^PUB_KEY_ID_[0-9]+$`).MatchString(c.PublicKeyID) {
		t.Errorf("PublicKeyID %q", c.PublicKeyID)
	}
	if len(c.APIKey) != 32 || len(c.APIv3Key) != 32 || c.APIKey == c.APIv3Key {
		t.Error("API keys must be 32 distinct characters")
	}
}

func TestWriteFilesLoadCredentialsRoundTrip(t *testing.T) {
	c := testCreds(t)
	dir := filepath.Join(t.TempDir(), "keys")
	if err := c.WriteFiles(dir); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"apiclient_key.pem", "apiclient_cert.pem", "platform_key.pem", "platform_cert.pem", "pub_key.pem", "sandbox.env", "credentials.json"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", name, fi.Mode().Perm())
		}
	}
	got, err := sandbox.LoadCredentials(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, c) {
		t.Error("LoadCredentials(WriteFiles(c)) != c")
	}
	// The env file configures the worker: every variable, absolute paths
	// that point at the right files.
	env := map[string]string{}
	raw, _ := os.ReadFile(filepath.Join(dir, "sandbox.env"))
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		if line := sc.Text(); line != "" && !strings.HasPrefix(line, "#") {
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("bad env line %q", line)
			}
			env[k] = v
		}
	}
	want := map[string]string{
		"WECHATPAY_MCHID": c.MchID, "WECHATPAY_APPID": c.AppID, "WECHATPAY_MCH_CERT_SERIAL": c.MerchantCertSerial,
		"WECHATPAY_PUBLIC_KEY_ID": c.PublicKeyID, "WECHATPAY_API_KEY": c.APIKey, "WECHATPAY_APIV3_KEY": c.APIv3Key,
	}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("%s=%q, want %q", k, env[k], v)
		}
	}
	for k, content := range map[string][]byte{
		"WECHATPAY_MCH_PRIVATE_KEY_FILE": c.MerchantPrivateKeyPEM,
		"WECHATPAY_PLATFORM_CERT_FILE":   c.PlatformCertPEM,
		"WECHATPAY_PUBLIC_KEY_FILE":      c.PublicKeyPEM,
	} {
		p := env[k]
		if !filepath.IsAbs(p) {
			t.Errorf("%s=%q is not absolute", k, p)
			continue
		}
		if b, err := os.ReadFile(p); err != nil || !bytes.Equal(b, content) {
			t.Errorf("%s=%q: %v", k, p, err)
		}
	}
	// A sandbox restarted from the files serves the same merchant.
	s, err := sandbox.New(sandbox.Options{Credentials: got})
	if err != nil {
		t.Fatal(err)
	}
	if s.Credentials().MerchantCertSerial != c.MerchantCertSerial {
		t.Error("restarted sandbox uses other keys")
	}
}

func TestLoadCredentialsErrors(t *testing.T) {
	if _, err := sandbox.LoadCredentials(t.TempDir()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("empty dir: %v, want fs.ErrNotExist", err)
	}
	c := testCreds(t)
	for _, tc := range []struct {
		file, content string
	}{
		{"credentials.json", "{"},
		{"apiclient_key.pem", "not pem"},
		{"platform_cert.pem", string(c.MerchantCertPEM)}, // wrong certificate
		{"credentials.json", `{"mchid":"1900000109","appid":"wx8888888888888888","api_key":"short"}`},
	} {
		dir := t.TempDir()
		if err := c.WriteFiles(dir); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, tc.file), []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := sandbox.LoadCredentials(dir); err == nil {
			t.Errorf("corrupt %s accepted", tc.file)
		} else if strings.Contains(err.Error(), c.APIKey) || strings.Contains(err.Error(), c.APIv3Key) {
			t.Errorf("error leaks a key: %v", err)
		}
	}
	if err := (&sandbox.Credentials{}).WriteFiles(t.TempDir()); err == nil {
		t.Error("WriteFiles accepted empty credentials")
	}
}
