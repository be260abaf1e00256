package httpapi

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
)

// ErrTokens is wrapped by every error LoadTokens and Reload return. Those
// errors name the file and the line, never a token.
var ErrTokens = errors.New("unusable API tokens file")

// MinTokenLength is the shortest plain token accepted: shorter ones can be
// guessed.
const MinTokenLength = 16

// HashPrefix starts a line that holds a token's SHA-256 digest (64 hex
// digits) instead of the token: "sha256:" + hex(sha256(token)), as
// `printf %s "$TOKEN" | sha256sum` prints it.
const HashPrefix = "sha256:"

// Tokens is the set of bearer tokens the API accepts, read from a file
// (WXCLOSE_API_TOKENS_FILE) and reloadable. It is safe for concurrent use:
// Reload swaps the whole set at once.
//
// The file has one token per line, either plain or as HashPrefix and the hex
// SHA-256 of the token. Blank lines and lines starting with '#' are ignored.
// Only digests are kept in memory; a presented token is hashed and compared
// with every digest in constant time.
type Tokens struct {
	path    string
	digests atomic.Pointer[[][sha256.Size]byte]
}

// LoadTokens reads the tokens file at path. It fails if the file cannot be
// read, if a line is not a usable token, or if it holds no token at all (an
// empty file is a mistake, and the API would then be open).
func LoadTokens(path string) (*Tokens, error) {
	t := &Tokens{path: path}
	if err := t.Reload(); err != nil {
		return nil, err
	}
	return t, nil
}

// Reload reads the file again (on SIGHUP). On error the tokens in use stay
// in use, so a bad edit cannot lock every client out or open the API.
func (t *Tokens) Reload() error {
	data, err := os.ReadFile(t.path)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is named once, below
		}
		return fmt.Errorf("%w: %s: %v", ErrTokens, t.path, err)
	}
	digests, err := parseTokens(data)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrTokens, t.path, err)
	}
	t.digests.Store(&digests)
	return nil
}

// Path returns the file the tokens come from.
func (t *Tokens) Path() string { return t.path }

// Len returns the number of tokens in use.
func (t *Tokens) Len() int {
	if t == nil {
		return 0
	}
	d := t.digests.Load()
	if d == nil {
		return 0
	}
	return len(*d)
}

// valid reports whether token is one of the tokens. It compares the
// token's digest with every digest, whatever matches, so the time taken
// says nothing about which token (or how much of one) was right.
func (t *Tokens) valid(token string) bool {
	d := t.digests.Load()
	if d == nil || token == "" {
		return false
	}
	got := sha256.Sum256([]byte(token))
	match := 0
	for _, want := range *d {
		match |= subtle.ConstantTimeCompare(got[:], want[:])
	}
	return match == 1
}

func parseTokens(data []byte) ([][sha256.Size]byte, error) {
	var digests [][sha256.Size]byte
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		if h, ok := strings.CutPrefix(s, HashPrefix); ok {
			b, err := hex.DecodeString(h)
			if err != nil || len(b) != sha256.Size {
				return nil, fmt.Errorf("line %d: after %q there must be the 64 hex digits of the token's SHA-256", line, HashPrefix)
			}
			digests = append(digests, [sha256.Size]byte(b))
			continue
		}
		if len(s) < MinTokenLength {
			return nil, fmt.Errorf("line %d: a token must be at least %d characters long", line, MinTokenLength)
		}
		if !isB64Token(s) {
			return nil, fmt.Errorf("line %d: a token may contain only letters, digits and - . _ ~ + / (and = at the end), so that it fits an Authorization header", line)
		}
		digests = append(digests, sha256.Sum256([]byte(s)))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("line %d: %v", line+1, err)
	}
	if len(digests) == 0 {
		return nil, errors.New("no tokens (one per line, plain or " + HashPrefix + "<hex>)")
	}
	return digests, nil
}

// isB64Token reports whether s matches RFC 6750's b64token, the syntax of
// a bearer token: 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=".
func isB64Token(s string) bool {
	body := strings.TrimRight(s, "=")
	if body == "" {
		return false
	}
	for i := 0; i < len(body); i++ {
		c := body[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("-._~+/", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// bearerToken returns the token of an "Authorization: Bearer <token>"
// header (the scheme is case-insensitive), or "" if there is none.
func bearerToken(header string) string {
	scheme, token, ok := strings.Cut(strings.TrimSpace(header), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(token)
}
