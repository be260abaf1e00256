package wechat

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"errors"
)

// errAEADAuth means the ciphertext did not authenticate: a wrong APIv3 key
// (or a tampered response).
var errAEADAuth = errors.New("AEAD_AES_256_GCM authentication failed")

// decryptAEADAES256GCM opens an encrypt_certificate (or notification
// resource) with the APIv3 key. The nonce is checked before use because
// cipher.AEAD.Open panics on a nonce of the wrong size.
func decryptAEADAES256GCM(key []byte, nonce, associatedData, ciphertextB64 string) ([]byte, error) {
	if len(key) != 32 {
		return nil, errors.New("APIv3 key must be 32 bytes")
	}
	ct, err := base64.StdEncoding.DecodeString(ciphertextB64)
	if err != nil {
		return nil, errors.New("ciphertext is not valid base64")
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	if len(nonce) != gcm.NonceSize() {
		return nil, errors.New("nonce must be 12 bytes")
	}
	if len(ct) < gcm.Overhead() {
		return nil, errors.New("ciphertext is shorter than the GCM tag")
	}
	pt, err := gcm.Open(nil, []byte(nonce), ct, []byte(associatedData))
	if err != nil {
		return nil, errAEADAuth
	}
	return pt, nil
}
