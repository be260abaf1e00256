package sandbox

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Default identities, taken from the examples in WeChat Pay's documentation.
const (
	DefaultMchID = "1900000109"
	DefaultAppID = "wx8888888888888888"
)

// File names written by Credentials.WriteFiles and read by LoadCredentials.
const (
	fileMerchantKey  = "apiclient_key.pem"
	fileMerchantCert = "apiclient_cert.pem"
	filePlatformKey  = "platform_key.pem"
	filePlatformCert = "platform_cert.pem"
	filePublicKey    = "pub_key.pem"
	fileEnv          = "sandbox.env"
	fileJSON         = "credentials.json"
	// FileAPIKey and FileAPIv3Key hold one key each, for a merchant
	// registry's api_key_file and apiv3_key_file.
	FileAPIKey   = "api_key"
	FileAPIv3Key = "apiv3_key"
)

// Credentials is everything a client needs to talk to a sandbox, plus the
// sandbox's own platform key so that a restarted sandbox can reuse it. All of
// it is test material: never use these keys with the real WeChat Pay.
type Credentials struct {
	// MchID is the merchant (or institution) id the sandbox accepts.
	MchID string
	// AppID is the app id the sandbox accepts on v2 requests.
	AppID string
	// MerchantPrivateKeyPEM is the merchant API private key, PKCS#8
	// "PRIVATE KEY" PEM; the client signs v3 requests with it.
	MerchantPrivateKeyPEM []byte
	// MerchantCertPEM is the merchant API certificate; the sandbox verifies
	// v3 requests with its public key.
	MerchantCertPEM []byte
	// MerchantCertSerial is the upper-case hex serial of MerchantCertPEM,
	// the value of serial_no in the Authorization header.
	MerchantCertSerial string
	// PlatformKeyPEM is the current platform private key, PKCS#8 PEM. Only
	// the sandbox needs it.
	PlatformKeyPEM []byte
	// PlatformCertPEM is the current platform certificate, PEM; clients
	// verify responses whose Wechatpay-Serial is PlatformCertSerial with it.
	PlatformCertPEM []byte
	// PlatformCertSerial is the upper-case hex serial of PlatformCertPEM.
	PlatformCertSerial string
	// PublicKeyPEM is the PKIX "PUBLIC KEY" PEM used in WeChat Pay
	// public-key mode (responses announce Wechatpay-Serial = PublicKeyID).
	// It is the public half of the first platform key and does not change
	// when the platform certificate is rotated.
	PublicKeyPEM []byte
	// PublicKeyID identifies PublicKeyPEM: "PUB_KEY_ID_" followed by digits.
	PublicKeyID string
	// APIKey is the 32-character v2 API key.
	APIKey string
	// APIv3Key is the 32-character APIv3 key that encrypts the certificates
	// served by /v3/global/certificates.
	APIv3Key string
}

// GenerateCredentials creates fresh RSA-2048 merchant and platform keys with
// self-signed certificates (random serials), a public-key id, a v2 API key
// and an APIv3 key. If mchid is empty, DefaultMchID; if appid is empty,
// DefaultAppID.
func GenerateCredentials(mchid, appid string) (*Credentials, error) {
	if mchid == "" {
		mchid = DefaultMchID
	}
	if appid == "" {
		appid = DefaultAppID
	}
	now := time.Now()
	mKey, mCert, mSerial, err := newKeyAndCert(pkix.Name{
		CommonName:         mchid,
		Organization:       []string{"wxclose sandbox merchant"},
		OrganizationalUnit: []string{"merchant API certificate"},
	}, now)
	if err != nil {
		return nil, err
	}
	pKey, pCert, pSerial, err := newKeyAndCert(platformSubject(), now)
	if err != nil {
		return nil, err
	}
	pub, err := publicKeyPEM(pKey)
	if err != nil {
		return nil, err
	}
	return &Credentials{
		MchID:                 mchid,
		AppID:                 appid,
		MerchantPrivateKeyPEM: mKey,
		MerchantCertPEM:       mCert,
		MerchantCertSerial:    mSerial,
		PlatformKeyPEM:        pKey,
		PlatformCertPEM:       pCert,
		PlatformCertSerial:    pSerial,
		PublicKeyPEM:          pub,
		PublicKeyID:           "PUB_KEY_ID_" + randomString(34, "0123456789"),
		APIKey:                randomString(32, alnum),
		APIv3Key:              randomString(32, alnum),
	}, nil
}

func platformSubject() pkix.Name {
	return pkix.Name{
		CommonName:         "wxclose sandbox platform",
		Organization:       []string{"wxclose sandbox (not Tenpay)"},
		OrganizationalUnit: []string{"platform certificate"},
	}
}

// newKeyAndCert returns a PKCS#8 PEM private key, a self-signed certificate
// PEM and the certificate's serial as upper-case hex.
func newKeyAndCert(subject pkix.Name, now time.Time) (keyPEM, certPEM []byte, serial string, err error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, "", fmt.Errorf("sandbox: generate RSA key: %w", err)
	}
	// 20 random bytes with the first in 0x10..0x7f: positive (as RFC 5280
	// requires) and always exactly 40 hex digits, like real WeChat serials,
	// so there is no leading-zero ambiguity between formatters.
	sb := make([]byte, 20)
	if _, err := rand.Read(sb); err != nil {
		return nil, nil, "", fmt.Errorf("sandbox: random serial: %w", err)
	}
	sb[0] = 0x10 + sb[0]%0x70
	sn := new(big.Int).SetBytes(sb)
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      subject,
		Issuer:       subject,
		// A wide validity window, so that a client under test whose clock
		// is faked years away from the real one still accepts the
		// certificate. Rotations get later NotBefore values, keeping
		// effective_time in rotation order.
		NotBefore:             now.AddDate(-10, 0, 0).UTC().Truncate(time.Second),
		NotAfter:              now.AddDate(10, 0, 0).UTC().Truncate(time.Second),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, "", fmt.Errorf("sandbox: create certificate: %w", err)
	}
	p8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, "", fmt.Errorf("sandbox: marshal key: %w", err)
	}
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8})
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return keyPEM, certPEM, serialHex(sn), nil
}

// serialHex formats a certificate serial the way openssl and WeChat Pay's
// merchant platform show it: upper-case hex of whole bytes, so a serial
// whose first byte is below 0x10 keeps its leading zero.
func serialHex(sn *big.Int) string { return fmt.Sprintf("%X", sn.Bytes()) }

func publicKeyPEM(keyPEM []byte) ([]byte, error) {
	key, err := parsePrivateKey(keyPEM, "platform key")
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("sandbox: marshal public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

func parsePrivateKey(p []byte, what string) (*rsa.PrivateKey, error) {
	b, _ := pem.Decode(p)
	if b == nil || b.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("sandbox: %s: want a PEM block of type PRIVATE KEY (PKCS#8)", what)
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("sandbox: %s: not a PKCS#8 private key", what)
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("sandbox: %s: not an RSA key", what)
	}
	return rk, nil
}

func parseCert(p []byte, what string) (*x509.Certificate, error) {
	b, _ := pem.Decode(p)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("sandbox: %s: want a PEM block of type CERTIFICATE", what)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("sandbox: %s: %v", what, err)
	}
	if _, ok := c.PublicKey.(*rsa.PublicKey); !ok {
		return nil, fmt.Errorf("sandbox: %s: not an RSA certificate", what)
	}
	return c, nil
}

func parsePublicKey(p []byte, what string) (*rsa.PublicKey, error) {
	b, _ := pem.Decode(p)
	if b == nil || b.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("sandbox: %s: want a PEM block of type PUBLIC KEY", what)
	}
	k, err := x509.ParsePKIXPublicKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("sandbox: %s: %v", what, err)
	}
	rk, ok := k.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("sandbox: %s: not an RSA key", what)
	}
	return rk, nil
}

// parsed holds the decoded form of Credentials.
type parsed struct {
	merchantCert  *x509.Certificate
	platformKey   *rsa.PrivateKey
	platformCert  *x509.Certificate
	publicKey     *rsa.PublicKey
	publicPrivate *rsa.PrivateKey // private half of publicKey, when it is the platform key
}

// parse checks that the credentials are complete and consistent: every PEM
// parses, serials match their certificates, keys match their certificates.
func (c *Credentials) parse() (*parsed, error) {
	switch {
	case c.MchID == "":
		return nil, errors.New("sandbox: credentials: MchID is empty")
	case c.AppID == "":
		return nil, errors.New("sandbox: credentials: AppID is empty")
	case len(c.APIKey) != 32:
		return nil, errors.New("sandbox: credentials: APIKey must be 32 characters")
	case len(c.APIv3Key) != 32:
		return nil, errors.New("sandbox: credentials: APIv3Key must be 32 characters")
	case !strings.HasPrefix(c.PublicKeyID, "PUB_KEY_ID_") || !isDigits(strings.TrimPrefix(c.PublicKeyID, "PUB_KEY_ID_")):
		return nil, errors.New(`sandbox: credentials: PublicKeyID must be "PUB_KEY_ID_" followed by digits`)
	}
	mKey, err := parsePrivateKey(c.MerchantPrivateKeyPEM, "MerchantPrivateKeyPEM")
	if err != nil {
		return nil, err
	}
	mCert, err := parseCert(c.MerchantCertPEM, "MerchantCertPEM")
	if err != nil {
		return nil, err
	}
	if !mKey.PublicKey.Equal(mCert.PublicKey) {
		return nil, errors.New("sandbox: credentials: MerchantCertPEM does not belong to MerchantPrivateKeyPEM")
	}
	if got := serialHex(mCert.SerialNumber); got != c.MerchantCertSerial {
		return nil, fmt.Errorf("sandbox: credentials: MerchantCertSerial %q does not match the certificate's serial %s", c.MerchantCertSerial, got)
	}
	pKey, err := parsePrivateKey(c.PlatformKeyPEM, "PlatformKeyPEM")
	if err != nil {
		return nil, err
	}
	pCert, err := parseCert(c.PlatformCertPEM, "PlatformCertPEM")
	if err != nil {
		return nil, err
	}
	if !pKey.PublicKey.Equal(pCert.PublicKey) {
		return nil, errors.New("sandbox: credentials: PlatformCertPEM does not belong to PlatformKeyPEM")
	}
	if got := serialHex(pCert.SerialNumber); got != c.PlatformCertSerial {
		return nil, fmt.Errorf("sandbox: credentials: PlatformCertSerial %q does not match the certificate's serial %s", c.PlatformCertSerial, got)
	}
	pub, err := parsePublicKey(c.PublicKeyPEM, "PublicKeyPEM")
	if err != nil {
		return nil, err
	}
	p := &parsed{merchantCert: mCert, platformKey: pKey, platformCert: pCert, publicKey: pub}
	if pub.Equal(&pKey.PublicKey) {
		p.publicPrivate = pKey
	}
	return p, nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// credentialsJSON is the non-PEM part of credentials.json; the PEMs live in
// their own files so that they can be handed to tools like openssl.
type credentialsJSON struct {
	MchID              string `json:"mchid"`
	AppID              string `json:"appid"`
	MerchantCertSerial string `json:"merchant_cert_serial"`
	PlatformCertSerial string `json:"platform_cert_serial"`
	PublicKeyID        string `json:"public_key_id"`
	APIKey             string `json:"api_key"`
	APIv3Key           string `json:"apiv3_key"`
}

// WriteFiles writes the credentials into dir (created with mode 0700 if
// missing): apiclient_key.pem, apiclient_cert.pem, platform_key.pem,
// platform_cert.pem, pub_key.pem, api_key and apiv3_key (one key each, for
// a merchant registry), credentials.json and sandbox.env, a list of
// WECHATPAY_* variables (absolute paths) that configure the worker for
// this sandbox. Every file has mode 0600 because it holds test secrets.
func (c *Credentials) WriteFiles(dir string) error {
	if dir == "" {
		return errors.New("sandbox: WriteFiles: dir is empty")
	}
	if _, err := c.parse(); err != nil {
		return err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("sandbox: WriteFiles: %w", err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return fmt.Errorf("sandbox: WriteFiles: %w", err)
	}
	js, err := json.MarshalIndent(credentialsJSON{
		MchID:              c.MchID,
		AppID:              c.AppID,
		MerchantCertSerial: c.MerchantCertSerial,
		PlatformCertSerial: c.PlatformCertSerial,
		PublicKeyID:        c.PublicKeyID,
		APIKey:             c.APIKey,
		APIv3Key:           c.APIv3Key,
	}, "", "  ")
	if err != nil {
		return fmt.Errorf("sandbox: WriteFiles: %w", err)
	}
	var env bytes.Buffer
	env.WriteString("# WeChat Pay sandbox credentials written by wxclose wechat/sandbox. Test keys only.\n")
	for _, kv := range [][2]string{
		{"WECHATPAY_MCHID", c.MchID},
		{"WECHATPAY_APPID", c.AppID},
		{"WECHATPAY_MCH_PRIVATE_KEY_FILE", filepath.Join(abs, fileMerchantKey)},
		{"WECHATPAY_MCH_CERT_SERIAL", c.MerchantCertSerial},
		{"WECHATPAY_PLATFORM_CERT_FILE", filepath.Join(abs, filePlatformCert)},
		{"WECHATPAY_PUBLIC_KEY_FILE", filepath.Join(abs, filePublicKey)},
		{"WECHATPAY_PUBLIC_KEY_ID", c.PublicKeyID},
		{"WECHATPAY_API_KEY", c.APIKey},
		{"WECHATPAY_APIV3_KEY", c.APIv3Key},
	} {
		fmt.Fprintf(&env, "%s=%s\n", kv[0], kv[1])
	}
	for _, f := range []struct {
		name string
		data []byte
	}{
		{fileMerchantKey, c.MerchantPrivateKeyPEM},
		{fileMerchantCert, c.MerchantCertPEM},
		{filePlatformKey, c.PlatformKeyPEM},
		{filePlatformCert, c.PlatformCertPEM},
		{filePublicKey, c.PublicKeyPEM},
		{FileAPIKey, []byte(c.APIKey + "\n")},
		{FileAPIv3Key, []byte(c.APIv3Key + "\n")},
		{fileJSON, append(js, '\n')},
		{fileEnv, env.Bytes()},
	} {
		if err := writeFile0600(filepath.Join(abs, f.name), f.data); err != nil {
			return err
		}
	}
	return nil
}

// writeFile0600 writes through a temporary file and a rename so that a
// reader never sees half a key, and forces mode 0600 even if the file
// already existed with wider permissions.
func writeFile0600(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("sandbox: write %s: %w", filepath.Base(path), err)
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("sandbox: write %s: %w", filepath.Base(path), err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("sandbox: write %s: %w", filepath.Base(path), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("sandbox: write %s: %w", filepath.Base(path), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("sandbox: write %s: %w", filepath.Base(path), err)
	}
	return nil
}

// LoadCredentials reads credentials written by WriteFiles from dir and
// checks that they are complete and consistent. A missing credentials.json
// yields an error wrapping fs.ErrNotExist, so a caller can tell "nothing
// there yet" from "something broken there".
func LoadCredentials(dir string) (*Credentials, error) {
	raw, err := os.ReadFile(filepath.Join(dir, fileJSON))
	if err != nil {
		return nil, fmt.Errorf("sandbox: load credentials from %s: %w", dir, err)
	}
	var j credentialsJSON
	if err := json.Unmarshal(raw, &j); err != nil {
		return nil, fmt.Errorf("sandbox: load credentials: %s is not valid JSON: %v", fileJSON, err)
	}
	c := &Credentials{
		MchID:              j.MchID,
		AppID:              j.AppID,
		MerchantCertSerial: j.MerchantCertSerial,
		PlatformCertSerial: j.PlatformCertSerial,
		PublicKeyID:        j.PublicKeyID,
		APIKey:             j.APIKey,
		APIv3Key:           j.APIv3Key,
	}
	for _, f := range []struct {
		name string
		dst  *[]byte
	}{
		{fileMerchantKey, &c.MerchantPrivateKeyPEM},
		{fileMerchantCert, &c.MerchantCertPEM},
		{filePlatformKey, &c.PlatformKeyPEM},
		{filePlatformCert, &c.PlatformCertPEM},
		{filePublicKey, &c.PublicKeyPEM},
	} {
		b, err := os.ReadFile(filepath.Join(dir, f.name))
		if err != nil {
			return nil, fmt.Errorf("sandbox: load credentials from %s: %w", dir, err)
		}
		*f.dst = b
	}
	if _, err := c.parse(); err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, dir)
	}
	return c, nil
}

// clone returns a deep copy so that callers cannot mutate the server's keys.
func (c *Credentials) clone() Credentials {
	d := *c
	d.MerchantPrivateKeyPEM = bytes.Clone(c.MerchantPrivateKeyPEM)
	d.MerchantCertPEM = bytes.Clone(c.MerchantCertPEM)
	d.PlatformKeyPEM = bytes.Clone(c.PlatformKeyPEM)
	d.PlatformCertPEM = bytes.Clone(c.PlatformCertPEM)
	d.PublicKeyPEM = bytes.Clone(c.PublicKeyPEM)
	return d
}
