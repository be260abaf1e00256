package ids

// MaxLen is the longest merchant id, order number or app id WeChat Pay
// accepts (string(32) in its API pages).
const MaxLen = 32

// maxKeyIDLen bounds the v3 key identifiers, which WeChat Pay does not
// document as string(32): serials are hex (40 digits today) and public key
// ids "PUB_KEY_ID_" plus about 34 digits.
const maxKeyIDLen = 64

// Rules, worded to follow the field's name in an error message.
const (
	MchIDRule         = "must be 1 to 32 digits"
	OutTradeNoRule    = "must be 1 to 32 characters of letters, digits and _ - | * @"
	TransactionIDRule = "must be 1 to 32 letters or digits"
	AppIDRule         = "must be 1 to 32 letters, digits or '_'"
	CertSerialRule    = "must be the certificate serial in hex (1 to 64 digits)"
	PublicKeyIDRule   = "must start with PUB_KEY_ID_ and contain only letters, digits, '_' and '-' (at most 64 characters)"
)

// PublicKeyIDPrefix starts every WeChat Pay public key id.
const PublicKeyIDPrefix = "PUB_KEY_ID_"

// ValidMchID reports whether s is a merchant id: mchid, sub_mchid or
// sp_mchid (MchIDRule).
func ValidMchID(s string) bool { return token(s, MaxLen, isDigit) }

// ValidOutTradeNo reports whether s is a merchant order number
// (OutTradeNoRule).
func ValidOutTradeNo(s string) bool { return token(s, MaxLen, isOrderNoChar) }

// ValidTransactionID reports whether s is a WeChat Pay order number
// (TransactionIDRule).
func ValidTransactionID(s string) bool { return token(s, MaxLen, isAlnum) }

// ValidAppID reports whether s is an app id: appid or sub_appid
// (AppIDRule).
func ValidAppID(s string) bool { return token(s, MaxLen, isAppIDChar) }

// ValidCertSerial reports whether s is a certificate serial number in hex,
// either case (CertSerialRule).
func ValidCertSerial(s string) bool { return token(s, maxKeyIDLen, isHex) }

// ValidPublicKeyID reports whether s is a WeChat Pay public key id
// (PublicKeyIDRule).
func ValidPublicKeyID(s string) bool {
	return len(s) > len(PublicKeyIDPrefix) && s[:len(PublicKeyIDPrefix)] == PublicKeyIDPrefix &&
		token(s, maxKeyIDLen, isKeyIDChar)
}

func token(s string, maxLen int, ok func(byte) bool) bool {
	if len(s) == 0 || len(s) > maxLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !ok(s[i]) {
			return false
		}
	}
	return true
}

func isDigit(c byte) bool     { return c >= '0' && c <= '9' }
func isAlnum(c byte) bool     { return isDigit(c) || (c|0x20 >= 'a' && c|0x20 <= 'z') }
func isAppIDChar(c byte) bool { return isAlnum(c) || c == '_' }
func isKeyIDChar(c byte) bool { return isAlnum(c) || c == '_' || c == '-' }
func isHex(c byte) bool       { return isDigit(c) || (c|0x20 >= 'a' && c|0x20 <= 'f') }

func isOrderNoChar(c byte) bool {
	switch c {
	case '_', '-', '|', '*', '@':
		return true
	}
	return isAlnum(c)
}
