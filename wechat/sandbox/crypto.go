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
	"slices"
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
	return string(appendV2SignString(nil, fields, apiKey))
}

// appendV2SignString appends stringSignTemp to b. The sandbox signs or
// verifies twice per v2 request, so it sizes its buffers once rather than
// growing them.
func appendV2SignString(b []byte, fields map[string]string, apiKey string) []byte {
	keys := make([]string, 0, len(fields))
	n := len("key=") + len(apiKey)
	for k, v := range fields {
		if k == "sign" || v == "" {
			continue
		}
		keys = append(keys, k)
		n += len(k) + len(v) + len("=&")
	}
	slices.Sort(keys)
	b = slices.Grow(b, n)
	for _, k := range keys {
		b = append(b, k...)
		b = append(b, '=')
		b = append(b, fields[k]...)
		b = append(b, '&')
	}
	b = append(b, "key="...)
	return append(b, apiKey...)
}

// v2Sign computes the upper-case hex v2 sign with the given sign type
// (signTypeMD5 or signTypeHMACSHA256).
func v2Sign(fields map[string]string, apiKey, signType string) (string, error) {
	var sum []byte
	var buf [sha256.Size]byte
	switch signType {
	case signTypeMD5:
		s := md5.Sum(appendV2SignString(nil, fields, apiKey))
		sum = append(buf[:0], s[:]...)
	case signTypeHMACSHA256:
		h := hmac.New(sha256.New, []byte(apiKey))
		h.Write(appendV2SignString(nil, fields, apiKey))
		sum = h.Sum(buf[:0])
	default:
		return "", fmt.Errorf("unsupported sign_type %q (want MD5 or HMAC-SHA256)", signType)
	}
	// Upper-case hex directly, instead of hex.EncodeToString then
	// strings.ToUpper, which allocates twice.
	const upperHex = "0123456789ABCDEF"
	var out [2 * sha256.Size]byte
	for i, c := range sum {
		out[2*i] = upperHex[c>>4]
		out[2*i+1] = upperHex[c&0x0f]
	}
	return string(out[:2*len(sum)]), nil
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
// crypto/rand. alphabet must have 1 to 256 bytes.
//
// Random bytes are read in bulk, one crypto/rand call per buffer rather than
// one rand.Int per character. A byte b is used as alphabet[b%len(alphabet)]
// only when b < limit, the largest multiple of len(alphabet) up to 256, so
// that every character stays equally likely; the others are thrown away.
func randomString(n int, alphabet string) string {
	if n <= 0 {
		return ""
	}
	if len(alphabet) == 0 || len(alphabet) > 256 {
		panic("sandbox: randomString needs an alphabet of 1 to 256 bytes")
	}
	m := len(alphabet)
	limit := 256 - 256%m
	var out strings.Builder
	out.Grow(n)
	var buf [64]byte
	for out.Len() < n {
		// Ask for what is still missing plus a little for rejected bytes.
		want := min(n-out.Len()+(n-out.Len())/4+4, len(buf))
		r := buf[:want]
		if _, err := rand.Read(r); err != nil {
			// crypto/rand does not fail on supported platforms; a panic
			// here is better than a predictable nonce or key.
			panic("sandbox: crypto/rand failed: " + err.Error())
		}
		for _, b := range r {
			if int(b) >= limit {
				continue
			}
			out.WriteByte(alphabet[int(b)%m])
			if out.Len() == n {
				break
			}
		}
	}
	return out.String()
}

// randomHex returns n random bytes as upper-case hex.
func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("sandbox: crypto/rand failed: " + err.Error())
	}
	return strings.ToUpper(hex.EncodeToString(b))
}
