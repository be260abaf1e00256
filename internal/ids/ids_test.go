package ids

import (
	"strings"
	"testing"
)

func TestRules(t *testing.T) {
	tests := []struct {
		name  string
		valid func(string) bool
		ok    []string
		bad   []string
	}{
		{"mchid", ValidMchID,
			[]string{"1", "1900000109", strings.Repeat("9", 32)},
			[]string{"", strings.Repeat("9", 33), "19000a0109", "1900000109 ", "-1", "１９", `1",x="`}},
		{"out_trade_no", ValidOutTradeNo,
			[]string{"A", "ORDER-20261122-0001", "a_b|c*d@e-f", strings.Repeat("x", 32)},
			[]string{"", strings.Repeat("x", 33), "has space", "a:b", "a/b", "..", "{tag}", "订单", "a\nb", "a.b"}},
		{"transaction_id", ValidTransactionID,
			[]string{"4200000000202611220000000001", "abcXYZ09"},
			[]string{"", strings.Repeat("4", 33), "42-1", "42_1", "42:1"}},
		{"appid", ValidAppID,
			[]string{"wx8888888888888888", "wx_1", "W"},
			[]string{"", strings.Repeat("w", 33), "wx-1", "wx 1", "wx.1"}},
		{"cert serial", ValidCertSerial,
			[]string{"F5765756002FDD77", "abcdef0123", strings.Repeat("A", 64)},
			[]string{"", strings.Repeat("A", 65), "serial=F57", "G1", "F5:76"}},
		{"public key id", ValidPublicKeyID,
			[]string{"PUB_KEY_ID_0114232134912410000000000000", "PUB_KEY_ID_a-b_c"},
			[]string{"", "PUB_KEY_ID_", "pub_key_id_1", "KEY_1", "PUB_KEY_ID_1 2", "PUB_KEY_ID_" + strings.Repeat("1", 54)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, s := range tt.ok {
				if !tt.valid(s) {
					t.Errorf("%q rejected", s)
				}
			}
			for _, s := range tt.bad {
				if tt.valid(s) {
					t.Errorf("%q accepted", s)
				}
			}
		})
	}
}

// TestRulesAgreeWithCharacters checks every byte against each rule's text,
// so the words an operator reads and the check cannot drift apart.
func TestRulesAgreeWithCharacters(t *testing.T) {
	isLetter := func(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
	isDigit := func(c byte) bool { return c >= '0' && c <= '9' }
	tests := []struct {
		name  string
		valid func(string) bool
		want  func(byte) bool
	}{
		{"mchid: digits", ValidMchID, isDigit},
		{"out_trade_no: letters, digits and _ - | * @", ValidOutTradeNo, func(c byte) bool {
			return isLetter(c) || isDigit(c) || strings.IndexByte("_-|*@", c) >= 0
		}},
		{"transaction_id: letters or digits", ValidTransactionID, func(c byte) bool { return isLetter(c) || isDigit(c) }},
		{"appid: letters, digits or _", ValidAppID, func(c byte) bool { return isLetter(c) || isDigit(c) || c == '_' }},
	}
	for _, tt := range tests {
		for c := 0; c < 256; c++ {
			if got, want := tt.valid(string([]byte{byte(c)})), tt.want(byte(c)); got != want {
				t.Errorf("%s: byte %#x accepted = %v, want %v", tt.name, c, got, want)
			}
		}
	}
}
