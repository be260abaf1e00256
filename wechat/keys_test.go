package wechat_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wxclose/wxclose/wechat"
)

func TestLoadPrivateKey(t *testing.T) {
	k := getKeys(t)
	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k.merchant)})
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalPKCS8PrivateKey(ec)
	ecPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ecDER})
	garbled := strings.Replace(string(k.merchantPEM), "MII", "MIX", 1)
	tests := []struct {
		name    string
		in      []byte
		wantErr string
	}{
		{"PKCS#8", k.merchantPEM, ""},
		{"PKCS#1", pkcs1, ""},
		{"preceded by other blocks", append(append([]byte{}, k.platformPEM...), k.merchantPEM...), ""},
		{"empty", nil, "no PEM block"},
		{"not PEM", []byte("hello"), "no PEM block"},
		{"certificate instead", k.platformPEM, `found "CERTIFICATE"`},
		{"EC key", ecPEM, "ECDSA"},
		{"garbled", []byte(garbled), "does not parse"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := wechat.LoadPrivateKey(tt.in)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if !got.Equal(k.merchant) {
					t.Error("loaded a different key")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
			}
			// No line of the input may be echoed.
			for _, line := range strings.Split(string(tt.in), "\n") {
				if len(line) > 20 && strings.Contains(err.Error(), line) {
					t.Errorf("error echoes key material: %v", err)
				}
			}
		})
	}
}

func TestLoadFilesNameTheFile(t *testing.T) {
	k := getKeys(t)
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	keyPath := write("apiclient_key.pem", k.merchantPEM)
	certPath := write("platform.pem", append(append([]byte{}, k.platformPEM...), k.platformPEM...))
	pubDER, _ := x509.MarshalPKIXPublicKey(&k.platform.PublicKey)
	pubPath := write("pub_key.pem", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}))
	badPath := write("bad.pem", []byte("nothing here"))
	missing := filepath.Join(dir, "missing.pem")

	if got, err := wechat.LoadPrivateKeyFile(keyPath); err != nil || !got.Equal(k.merchant) {
		t.Errorf("LoadPrivateKeyFile: %v", err)
	}
	if certs, err := wechat.LoadCertificatesFile(certPath); err != nil || len(certs) != 2 {
		t.Errorf("LoadCertificatesFile: %d certs, %v", len(certs), err)
	}
	if pub, err := wechat.LoadPublicKeyFile(pubPath); err != nil || !pub.Equal(&k.platform.PublicKey) {
		t.Errorf("LoadPublicKeyFile: %v", err)
	}
	for _, load := range []func(string) error{
		func(p string) error { _, err := wechat.LoadPrivateKeyFile(p); return err },
		func(p string) error { _, err := wechat.LoadCertificatesFile(p); return err },
		func(p string) error { _, err := wechat.LoadPublicKeyFile(p); return err },
	} {
		for _, p := range []string{badPath, missing} {
			err := load(p)
			if err == nil || !strings.Contains(err.Error(), p) {
				t.Errorf("error %v does not name %s", err, p)
			}
		}
	}
}

func TestLoadPublicKeyAndCertificates(t *testing.T) {
	k := getKeys(t)
	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&k.platform.PublicKey)})
	if pub, err := wechat.LoadPublicKey(pkcs1); err != nil || !pub.Equal(&k.platform.PublicKey) {
		t.Errorf("PKCS#1 public key: %v", err)
	}
	if _, err := wechat.LoadPublicKey(k.merchantPEM); err == nil {
		t.Error("LoadPublicKey accepted a private key")
	}
	if _, err := wechat.LoadCertificates(k.merchantPEM); err == nil {
		t.Error("LoadCertificates accepted a private key")
	}
	if _, err := wechat.LoadCertificates(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("junk")})); err == nil {
		t.Error("LoadCertificates accepted junk")
	}
}

func TestCertificateSerial(t *testing.T) {
	k := getKeys(t)
	if got := wechat.CertificateSerial(k.platformCert); got != k.platformSerial {
		t.Errorf("CertificateSerial = %s, want %s", got, k.platformSerial)
	}
	c := &x509.Certificate{SerialNumber: big.NewInt(0x0abc)}
	if got := wechat.CertificateSerial(c); got != "0ABC" {
		t.Errorf("CertificateSerial = %s, want 0ABC (whole bytes, as openssl prints)", got)
	}
	if got := wechat.CertificateSerial(nil); got != "" {
		t.Errorf("CertificateSerial(nil) = %q", got)
	}
}
