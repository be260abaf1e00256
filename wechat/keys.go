package wechat

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
)

// The loaders below never put PEM or key bytes in an error: a parse error
// from crypto/x509 can quote input, so only its category is reported, and the
// caller is told what kind of block was expected.

// LoadPrivateKey parses the merchant API private key (apiclient_key.pem).
// It accepts a PKCS#8 "PRIVATE KEY" block, as WeChat Pay issues it, and a
// PKCS#1 "RSA PRIVATE KEY" block; the key must be RSA. Encrypted PEM is not
// supported.
func LoadPrivateKey(pemBytes []byte) (*rsa.PrivateKey, error) {
	block, err := firstPEMBlock(pemBytes, "PRIVATE KEY", "RSA PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	if _, ok := block.Headers["Proc-Type"]; ok {
		return nil, errors.New("wechat: encrypted PEM private keys are not supported; decrypt the key first (openssl pkcs8 -topk8 -nocrypt)")
	}
	switch block.Type {
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, errors.New("wechat: PKCS#8 private key does not parse; expected the apiclient_key.pem issued by WeChat Pay")
		}
		rk, ok := k.(*rsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("wechat: private key is %s, WeChat Pay API v3 needs an RSA key", keyKind(k))
		}
		return rk, nil
	default: // "RSA PRIVATE KEY"
		k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil {
			return nil, errors.New("wechat: PKCS#1 RSA private key does not parse")
		}
		return k, nil
	}
}

// LoadPrivateKeyFile reads and parses a private key file; see LoadPrivateKey.
// Errors name the file.
func LoadPrivateKeyFile(path string) (*rsa.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("wechat: read private key: %w", err)
	}
	k, err := LoadPrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// LoadCertificates parses one or more PEM "CERTIFICATE" blocks, for example
// WeChat Pay platform certificates. Blocks of other types are skipped; at
// least one certificate is required and every certificate must carry an RSA
// public key.
func LoadCertificates(pemBytes []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := pemBytes
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("wechat: certificate %d does not parse as X.509", len(certs)+1)
		}
		if _, ok := c.PublicKey.(*rsa.PublicKey); !ok {
			return nil, fmt.Errorf("wechat: certificate %d (serial %s) does not hold an RSA public key", len(certs)+1, CertificateSerial(c))
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("wechat: no PEM \"CERTIFICATE\" block found")
	}
	return certs, nil
}

// LoadCertificatesFile reads and parses a certificate file; see
// LoadCertificates. Errors name the file.
func LoadCertificatesFile(path string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("wechat: read certificates: %w", err)
	}
	c, err := LoadCertificates(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// LoadPublicKey parses a WeChat Pay public key (pub_key.pem): a PKIX
// "PUBLIC KEY" block holding an RSA key. A PKCS#1 "RSA PUBLIC KEY" block is
// accepted too.
func LoadPublicKey(pemBytes []byte) (*rsa.PublicKey, error) {
	block, err := firstPEMBlock(pemBytes, "PUBLIC KEY", "RSA PUBLIC KEY")
	if err != nil {
		return nil, err
	}
	if block.Type == "RSA PUBLIC KEY" {
		k, err := x509.ParsePKCS1PublicKey(block.Bytes)
		if err != nil {
			return nil, errors.New("wechat: PKCS#1 RSA public key does not parse")
		}
		return k, nil
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, errors.New("wechat: PKIX public key does not parse; expected the pub_key.pem downloaded from the merchant platform")
	}
	rk, ok := k.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("wechat: public key is %s, WeChat Pay signs with RSA", keyKind(k))
	}
	return rk, nil
}

// LoadPublicKeyFile reads and parses a public key file; see LoadPublicKey.
// Errors name the file.
func LoadPublicKeyFile(path string) (*rsa.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("wechat: read public key: %w", err)
	}
	k, err := LoadPublicKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// CertificateSerial returns the certificate's serial number as upper-case
// hex of its big-endian bytes, the form WeChat Pay uses in serial_no and
// Wechatpay-Serial (and `openssl x509 -noout -serial` prints). It returns ""
// for a nil certificate.
func CertificateSerial(c *x509.Certificate) string {
	if c == nil || c.SerialNumber == nil {
		return ""
	}
	return strings.ToUpper(hex.EncodeToString(c.SerialNumber.Bytes()))
}

// normalizeSerial makes serials comparable whatever their source: hex case
// and leading zeros differ between tools (big.Int formatting drops them,
// openssl keeps whole bytes).
func normalizeSerial(s string) string {
	s = strings.ToUpper(strings.TrimSpace(s))
	if t := strings.TrimLeft(s, "0"); t != "" {
		return t
	}
	return s
}

// firstPEMBlock returns the first block of one of the wanted types, skipping
// others (a key file may start with "EC PARAMETERS" or similar).
func firstPEMBlock(pemBytes []byte, types ...string) (*pem.Block, error) {
	rest := pemBytes
	var seen []string
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		for _, t := range types {
			if block.Type == t {
				return block, nil
			}
		}
		seen = append(seen, fmt.Sprintf("%q", block.Type))
	}
	want := `"` + strings.Join(types, `" or "`) + `"`
	if len(seen) == 0 {
		return nil, fmt.Errorf("wechat: no PEM block found, expected %s", want)
	}
	return nil, fmt.Errorf("wechat: expected a PEM %s block, found %s", want, strings.Join(seen, ", "))
}

func keyKind(k any) string {
	switch k.(type) {
	case *rsa.PrivateKey, *rsa.PublicKey:
		return "RSA"
	}
	t := fmt.Sprintf("%T", k)
	switch {
	case strings.Contains(t, "ecdsa"):
		return "ECDSA"
	case strings.Contains(t, "ed25519"):
		return "Ed25519"
	case strings.Contains(t, "ecdh"):
		return "ECDH"
	}
	return "not RSA"
}
