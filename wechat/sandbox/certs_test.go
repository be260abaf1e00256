package sandbox_test

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"testing"
	"time"

	"github.com/wxclose/wxclose/wechat/sandbox"
)

type certList struct {
	Data []struct {
		SerialNo           string `json:"serial_no"`
		EffectiveTime      string `json:"effective_time"`
		ExpireTime         string `json:"expire_time"`
		EncryptCertificate struct {
			Algorithm      string `json:"algorithm"`
			Nonce          string `json:"nonce"`
			AssociatedData string `json:"associated_data"`
			Ciphertext     string `json:"ciphertext"`
		} `json:"encrypt_certificate"`
	} `json:"data"`
}

// downloadCerts fetches and decrypts the platform certificates, keyed by
// serial, and checks the response signature with verifyWith (or, if nil,
// with the certificate the response names).
func downloadCerts(t *testing.T, b *bundle, path string) (map[string][]byte, response) {
	t.Helper()
	r, err := b.c.v3(t, context.Background(), "GET", path, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.status != 200 {
		t.Fatalf("%s: %d %s", path, r.status, r.body)
	}
	var l certList
	if err := json.Unmarshal(r.body, &l); err != nil {
		t.Fatal(err)
	}
	block, _ := aes.NewCipher([]byte(b.creds.APIv3Key))
	gcm, _ := cipher.NewGCM(block)
	out := map[string][]byte{}
	for _, d := range l.Data {
		e := d.EncryptCertificate
		if e.Algorithm != "AEAD_AES_256_GCM" || e.AssociatedData != "certificate" || len(e.Nonce) != 12 {
			t.Errorf("encrypt_certificate %+v", e)
		}
		for _, ts := range []string{d.EffectiveTime, d.ExpireTime} {
			if _, err := time.Parse(time.RFC3339, ts); err != nil {
				t.Errorf("time %q: %v", ts, err)
			}
		}
		ct, err := base64.StdEncoding.DecodeString(e.Ciphertext)
		if err != nil {
			t.Fatal(err)
		}
		pt, err := gcm.Open(nil, []byte(e.Nonce), ct, []byte(e.AssociatedData))
		if err != nil {
			t.Fatalf("decrypt %s: %v", d.SerialNo, err)
		}
		out[d.SerialNo] = pt
	}
	return out, r
}

func TestCertificatesDecryptToPlatformCert(t *testing.T) {
	b := setup(t, sandbox.Options{})
	for _, path := range []string{"/v3/global/certificates", "/hk/v3/certificates"} {
		certs, r := downloadCerts(t, b, path)
		if len(certs) != 1 || !bytes.Equal(certs[b.creds.PlatformCertSerial], b.creds.PlatformCertPEM) {
			t.Fatalf("%s: certificates %v", path, certs)
		}
		if err := verifyV3(r, b.c.platform); err != nil {
			t.Errorf("%s: response signature: %v", path, err)
		}
	}
	calls := b.s.Calls()
	if len(calls) != 2 || calls[0].API != "certificates" || calls[0].Outcome != "ok" {
		t.Errorf("calls %+v", calls)
	}
	// Unsigned and wrongly signed downloads are refused like any v3 call.
	r, _ := b.c.v3(t, context.Background(), "GET", "/v3/global/certificates", nil, func(a *auth) { a.scheme = "-" })
	if r.status != 401 {
		t.Errorf("unsigned: %d", r.status)
	}
	r, _ = b.c.v3(t, context.Background(), "GET", "/v3/global/certificates?x=1", nil, func(a *auth) {
		a.signed = "GET\n/v3/global/certificates\n" + a.timestamp + "\n" + a.nonce + "\n\n"
	})
	if r.status != 401 {
		t.Errorf("query left out of the signature: %d", r.status)
	}
	r, _ = b.c.v3(t, context.Background(), "POST", "/v3/global/certificates", nil, nil)
	if r.status != 405 {
		t.Errorf("POST: %d", r.status)
	}
}

func TestRotatePlatformCert(t *testing.T) {
	b := setup(t, sandbox.Options{})
	old := b.creds.PlatformCertSerial
	serial, err := b.s.RotatePlatformCert()
	if err != nil {
		t.Fatal(err)
	}
	if serial == old || len(serial) != 40 {
		t.Fatalf("new serial %q (old %q)", serial, old)
	}
	if c := b.s.Credentials(); c.PlatformCertSerial != serial || bytes.Equal(c.PlatformCertPEM, b.creds.PlatformCertPEM) {
		t.Errorf("Credentials() not updated")
	}
	certs, r := downloadCerts(t, b, "/v3/global/certificates")
	if len(certs) != 2 || certs[old] == nil || certs[serial] == nil {
		t.Fatalf("certificates after rotation: %d", len(certs))
	}
	if got := r.header.Get("Wechatpay-Serial"); got != serial {
		t.Errorf("signed by %s, want the new %s", got, serial)
	}
	newKey := certKey(t, certs[serial])
	if err := verifyV3(r, newKey); err != nil {
		t.Errorf("does not verify with the new certificate: %v", err)
	}
	if err := verifyV3(r, b.c.platform); err == nil {
		t.Error("verifies with the old certificate")
	}
	b.addAged("rot", sandbox.StateUnpaid)
	r = b.c.close(t, "rot")
	if r.status != 204 || r.header.Get("Wechatpay-Serial") != serial || verifyV3(r, newKey) != nil {
		t.Errorf("close after rotation: %d %v", r.status, r.header)
	}
}

func TestPublicKeyMode(t *testing.T) {
	b := setup(t, sandbox.Options{SignWithPublicKeyID: true})
	blk, _ := pem.Decode(b.creds.PublicKeyPEM)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		t.Fatal("PublicKeyPEM is not a PUBLIC KEY PEM")
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pub := k.(*rsa.PublicKey)
	b.addAged("pk", sandbox.StateUnpaid)
	b.addAged("pk2", sandbox.StateUnpaid)
	r := b.c.close(t, "pk")
	if r.header.Get("Wechatpay-Serial") != b.creds.PublicKeyID {
		t.Errorf("Wechatpay-Serial %q, want %q", r.header.Get("Wechatpay-Serial"), b.creds.PublicKeyID)
	}
	if err := verifyV3(r, pub); err != nil {
		t.Errorf("does not verify with the public key: %v", err)
	}
	// The public key does not change when platform certificates rotate.
	if _, err := b.s.RotatePlatformCert(); err != nil {
		t.Fatal(err)
	}
	r = b.c.close(t, "pk2")
	if r.header.Get("Wechatpay-Serial") != b.creds.PublicKeyID || verifyV3(r, pub) != nil {
		t.Errorf("after rotation: %v", r.header)
	}
}
