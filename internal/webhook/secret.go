package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// SecretPrefix starts a Standard Webhooks signing secret: "whsec_" and the
// base64 (standard alphabet, padded) of the key bytes.
const SecretPrefix = "whsec_"

// Key sizes the Standard Webhooks specification asks of a signing secret.
const (
	MinKeyBytes = 24
	MaxKeyBytes = 64
)

// ErrSecret is wrapped by every error ParseSecret and LoadSecret return.
// Those errors never contain any part of the secret.
var ErrSecret = errors.New("unusable webhook secret")

// Secret is a signing key. Its String, GoString and Format print a
// placeholder, so that the key cannot reach a log by accident.
type Secret struct {
	key []byte
}

// ParseSecret reads a "whsec_<base64>" secret, as the receiver's Standard
// Webhooks library takes it. Surrounding white space is ignored.
func ParseSecret(s string) (Secret, error) {
	s = strings.TrimSpace(s)
	rest, ok := strings.CutPrefix(s, SecretPrefix)
	if !ok {
		return Secret{}, fmt.Errorf("%w: it must start with %q followed by the base64 of the key (e.g. %s$(openssl rand -base64 32))", ErrSecret, SecretPrefix, SecretPrefix)
	}
	key, err := base64.StdEncoding.DecodeString(rest)
	if err != nil {
		return Secret{}, fmt.Errorf("%w: what follows %q is not standard base64 (A-Z a-z 0-9 + / and = padding)", ErrSecret, SecretPrefix)
	}
	if len(key) < MinKeyBytes || len(key) > MaxKeyBytes {
		return Secret{}, fmt.Errorf("%w: the key is %d bytes; the Standard Webhooks specification asks for %d to %d (e.g. %s$(openssl rand -base64 32))",
			ErrSecret, len(key), MinKeyBytes, MaxKeyBytes, SecretPrefix)
	}
	return Secret{key: key}, nil
}

// LoadSecret reads a secret from a file (WXCLOSE_RECONCILE_WEBHOOK_SECRET_FILE)
// holding "whsec_<base64>" and optional surrounding white space.
func LoadSecret(path string) (Secret, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return Secret{}, fmt.Errorf("%w: %s: %v", ErrSecret, path, err)
	}
	s, err := ParseSecret(string(data))
	if err != nil {
		return Secret{}, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// IsZero reports whether s holds no key.
func (s Secret) IsZero() bool { return len(s.key) == 0 }

const redacted = SecretPrefix + "[redacted]"

// String returns a placeholder, never the key.
func (s Secret) String() string { return redacted }

// GoString returns a placeholder, never the key.
func (s Secret) GoString() string { return "webhook.Secret{" + redacted + "}" }

// Format prints the placeholder for every verb, %x and %q included.
func (s Secret) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = f.Write([]byte(s.GoString()))
		return
	}
	_, _ = f.Write([]byte(redacted))
}

// Sign returns the webhook-signature header of a message: "v1," and the
// base64 HMAC-SHA256, keyed with the secret's bytes, of
// msgID + "." + timestamp + "." + body.
func (s Secret) Sign(msgID string, timestamp int64, body []byte) string {
	mac := hmac.New(sha256.New, s.key)
	mac.Write([]byte(msgID))
	mac.Write([]byte{'.'})
	mac.Write(strconv.AppendInt(nil, timestamp, 10))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}
