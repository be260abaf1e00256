package sandbox

// Signing, verification and encryption, written independently of package
// wechat on purpose (see the package documentation). Nothing here logs or
// returns key material.

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"math/big"
	"sort"
	"strings"
)

// v2 sign types as they appear in the sign_type field.
const (
	signTypeMD5        = "MD5"
	signTypeHMACSHA256 = "HMAC-SHA256"
)

const alnum = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// rsaSign returns base64(RSASSA-PKCS1-v1_5(SHA-256(msg))).
func rsaSign(key *rsa.PrivateKey, msg string) (string, error) {
	sum := sha256.Sum256([]byte(msg))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		return "", fmt.Errorf("sandbox: rsa sign: %w", err)
	}
	return base64.StdEncoding.EncodeToString(sig), nil
}

// rsaVerify checks a base64 RSASSA-PKCS1-v1_5 SHA-256 signature over msg.
func rsaVerify(pub *rsa.PublicKey, msg, sigB64 string) error {
	sig, err := base64.StdEncoding.Strict().DecodeString(sigB64)
	if err != nil {
		return errors.New("signature is not standard base64")
	}
	sum := sha256.Sum256([]byte(msg))
	if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], sig); err != nil {
		return errors.New("signature does not verify with the merchant certificate's public key")
	}
	return nil
}

// v2SignString builds stringSignTemp: every non-empty field except sign,
// sorted by byte order of the name, joined as k=v with raw values, then
// "&key=" and the API key.
func v2SignString(fields map[string]string, apiKey string) string {
	keys := make([]string, 0, len(fields))
	for k, v := range fields {
		if k == "sign" || v == "" {
			continue
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(fields[k])
		b.WriteByte('&')
	}
	b.WriteString("key=")
	b.WriteString(apiKey)
	return b.String()
}

// v2Sign computes the upper-case hex v2 sign with the given sign type
// (signTypeMD5 or signTypeHMACSHA256).
func v2Sign(fields map[string]string, apiKey, signType string) (string, error) {
	var h hash.Hash
	switch signType {
	case signTypeMD5:
		h = md5.New()
	case signTypeHMACSHA256:
		h = hmac.New(sha256.New, []byte(apiKey))
	default:
		return "", fmt.Errorf("unsupported sign_type %q (want MD5 or HMAC-SHA256)", signType)
	}
	h.Write([]byte(v2SignString(fields, apiKey)))
	return strings.ToUpper(hex.EncodeToString(h.Sum(nil))), nil
}

// aesGCMSeal encrypts plaintext the way WeChat Pay encrypts certificates:
// AEAD_AES_256_GCM with a 12-byte nonce given as text, returning
// base64(ciphertext||tag).
func aesGCMSeal(key, nonce, aad string, plaintext []byte) (string, error) {
	if len(key) != 32 {
		return "", errors.New("sandbox: APIv3 key must be 32 bytes")
	}
	block, err := aes.NewCipher([]byte(key))
	if err != nil {
		return "", fmt.Errorf("sandbox: aes: %w", err)
	}
	gcm, err := cipher.NewGCMWithNonceSize(block, len(nonce))
	if err != nil {
		return "", fmt.Errorf("sandbox: gcm: %w", err)
	}
	return base64.StdEncoding.EncodeToString(gcm.Seal(nil, []byte(nonce), plaintext, []byte(aad))), nil
}

// randomString returns n characters drawn uniformly from alphabet with
// crypto/rand.
func randomString(n int, alphabet string) string {
	b := make([]byte, n)
	max := big.NewInt(int64(len(alphabet)))
	for i := range b {
		v, err := rand.Int(rand.Reader, max)
		if err != nil {
			// crypto/rand does not fail on supported platforms; a panic
			// here is better than a predictable nonce or key.
			panic("sandbox: crypto/rand failed: " + err.Error())
		}
		b[i] = alphabet[v.Int64()]
	}
	return string(b)
}

// randomHex returns n random bytes as upper-case hex.
func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("sandbox: crypto/rand failed: " + err.Error())
	}
	return strings.ToUpper(hex.EncodeToString(b))
}
