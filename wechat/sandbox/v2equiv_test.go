package sandbox

import (
	"bytes"
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"sort"
	"strings"
	"testing"
)

// The implementations below are the sandbox's v2 response writer and
// signer as they were before they were made to allocate less. They are kept
// as references the current ones must agree with.

func cdataOld(v string) string {
	return "<![CDATA[" + strings.ReplaceAll(v, "]]>", "]]]]><![CDATA[>") + "]]>"
}

func v2XMLOld(fields []kv) []byte {
	var b bytes.Buffer
	b.WriteString("<xml>")
	for _, f := range fields {
		if f.v == "" {
			continue
		}
		fmt.Fprintf(&b, "<%s>%s</%s>", f.k, cdataOld(f.v), f.k)
	}
	b.WriteString("</xml>")
	return b.Bytes()
}

func v2SignStringOld(fields map[string]string, apiKey string) string {
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

func v2SignOld(fields map[string]string, apiKey, signType string) (string, error) {
	var h hash.Hash
	switch signType {
	case signTypeMD5:
		h = md5.New()
	case signTypeHMACSHA256:
		h = hmac.New(sha256.New, []byte(apiKey))
	default:
		return "", fmt.Errorf("unsupported sign_type %q (want MD5 or HMAC-SHA256)", signType)
	}
	h.Write([]byte(v2SignStringOld(fields, apiKey)))
	return strings.ToUpper(hex.EncodeToString(h.Sum(nil))), nil
}

// v2ReplyFields is a close answer as v2Result builds it.
var v2ReplyFields = []kv{
	{"return_code", "SUCCESS"}, {"return_msg", "OK"}, {"appid", "wx8888888888888888"}, {"mch_id", "1900000109"},
	{"sub_appid", ""}, {"sub_mch_id", ""}, {"nonce_str", "BbMQBq3pEfC0Tz1fWCXUVkB1Z2pA5Jqx"},
	{"result_code", "SUCCESS"}, {"result_msg", "OK"}, {"err_code", ""}, {"err_code_des", ""},
	{"sign", "6A9AE1657590FD6257D693A078E1C3E4BB6BA4DC30B23E0EE2496E54170DACD6"},
}

func TestV2XMLMatchesOld(t *testing.T) {
	for _, fields := range [][]kv{
		nil,
		{{"a", ""}},
		v2ReplyFields,
		{{"return_code", "FAIL"}, {"return_msg", "XML_FORMAT_ERROR: XML格式错误: invalid XML: <a>&amp;</a>"}},
		{{"a", "]]>"}, {"b", "x]]>y]]>z"}, {"c", "]]]]>>"}, {"d", "]]"}, {"e", "]>"}},
		{{"a", "<![CDATA[x]]>"}, {"b", "\r\n\t\x00\xff"}},
	} {
		if got, want := v2XML(fields), v2XMLOld(fields); !bytes.Equal(got, want) {
			t.Errorf("v2XML(%q)\n got %s\nwant %s", fields, got, want)
		}
	}
}

func TestV2SignMatchesOld(t *testing.T) {
	const key = "192006250b4c09247ec02edce69f6a2d"
	reply := map[string]string{}
	for _, f := range v2ReplyFields {
		reply[f.k] = f.v
	}
	for _, fields := range []map[string]string{
		nil,
		{},
		{"sign": "only"},
		{"a": ""},
		reply,
		{"appid": "wxd930ea5d5a258f4f", "mch_id": "10000100", "device_info": "1000", "body": "test", "nonce_str": "ibuaiVcKdpRxkhJA"},
		{"b": "2", "a": "1", "A": "0", "_": "x", "a_b": "y", "ab": "z", "body": "关闭 & <订单>", "sign_type": "MD5"},
	} {
		for _, k := range []string{key, "", "k"} {
			if got, want := v2SignString(fields, k), v2SignStringOld(fields, k); got != want {
				t.Errorf("v2SignString(%q, %q) = %q, want %q", fields, k, got, want)
			}
			for _, st := range []string{signTypeMD5, signTypeHMACSHA256, "SHA1", ""} {
				got, err := v2Sign(fields, k, st)
				want, wantErr := v2SignOld(fields, k, st)
				if got != want || (err == nil) != (wantErr == nil) || err != nil && err.Error() != wantErr.Error() {
					t.Errorf("v2Sign(%q, %q, %q) = %q, %v, want %q, %v", fields, k, st, got, err, want, wantErr)
				}
			}
		}
	}
}

func TestRandomString(t *testing.T) {
	for _, tc := range []struct {
		n        int
		alphabet string
	}{
		{0, alnum}, {1, alnum}, {12, alnum}, {32, alnum}, {34, "0123456789"}, {1000, alnum},
		{100, "x"}, {100, "ab"}, {100, strings.Repeat("ab", 128)},
	} {
		s := randomString(tc.n, tc.alphabet)
		if len(s) != tc.n {
			t.Errorf("randomString(%d, %q) has length %d", tc.n, tc.alphabet, len(s))
		}
		for i := 0; i < len(s); i++ {
			if strings.IndexByte(tc.alphabet, s[i]) < 0 {
				t.Fatalf("randomString(%d, %q) = %q: %q is not in the alphabet", tc.n, tc.alphabet, s, s[i])
			}
		}
	}
	if a, b := randomString(32, alnum), randomString(32, alnum); a == b {
		t.Errorf("two calls both gave %q", a)
	}
	// Every character turns up: a byte-to-index mapping that missed some
	// would go unnoticed by the checks above.
	s := randomString(10000, alnum)
	for i := 0; i < len(alnum); i++ {
		if strings.IndexByte(s, alnum[i]) < 0 {
			t.Errorf("%q never drawn in 10000 characters", alnum[i])
		}
	}
}

func BenchmarkV2Sign(b *testing.B) {
	f, err := parseV2XML([]byte(v2CloseBody))
	if err != nil {
		b.Fatal(err)
	}
	for _, st := range []string{signTypeMD5, signTypeHMACSHA256} {
		b.Run(st, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v2Sign(f, "192006250b4c09247ec02edce69f6a2d", st); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkRandomString(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		randomString(32, alnum)
	}
}

func BenchmarkV2XML(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		v2XML(v2ReplyFields)
	}
}
