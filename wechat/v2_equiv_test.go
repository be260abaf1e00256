package wechat

import (
	"bytes"
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"hash"
	"maps"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"testing"
)

// The v2 protocol code was rewritten for speed (one buffer and pooled
// hashers for signs, a single-pass parser for WeChat Pay's flat answers,
// requests appended into one buffer). The tests here hold it to what the
// previous implementation did: signV2Old and encodeV2XMLOld are that code,
// kept as oracles, and parseV2XMLStd (the encoding/xml reading) is still
// the parser of every document the fast one leaves.

// signV2Old is SignV2 as it was: one hash per call, a []byte conversion
// per key and value, strings.ToUpper of the hex.
func signV2Old(params map[string]string, key string, t SignType) (string, error) {
	if key == "" {
		return "", errors.New("wechat: SignV2: empty API key")
	}
	var h hash.Hash
	switch t {
	case SignMD5:
		h = md5.New()
	case SignHMACSHA256:
		h = hmac.New(sha256.New, []byte(key))
	default:
		return "", fmt.Errorf("wechat: SignV2: unsupported sign type %q (want %q or %q)", t, SignMD5, SignHMACSHA256)
	}
	names := make([]string, 0, len(params))
	for k, v := range params {
		if k == "sign" || v == "" {
			continue
		}
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		h.Write([]byte(k))
		h.Write([]byte{'='})
		h.Write([]byte(params[k]))
		h.Write([]byte{'&'})
	}
	h.Write([]byte("key="))
	h.Write([]byte(key))
	return strings.ToUpper(hex.EncodeToString(h.Sum(nil))), nil
}

// encodeV2XMLOld is the request encoder as it was.
func encodeV2XMLOld(params map[string]string) []byte {
	names := make([]string, 0, len(params))
	for k := range params {
		names = append(names, k)
	}
	sort.Strings(names)
	var b bytes.Buffer
	b.WriteString("<xml>")
	for _, k := range names {
		b.WriteString("<" + k + ">")
		_ = xml.EscapeText(&b, []byte(params[k]))
		b.WriteString("</" + k + ">")
	}
	b.WriteString("</xml>")
	return b.Bytes()
}

// verifyV2Old is verifyV2's comparison as it was.
func verifyV2Old(m map[string]string, key string, t SignType) bool {
	got := strings.TrimSpace(m["sign"])
	if got == "" {
		return false
	}
	want, err := signV2Old(m, key, t)
	return err == nil && hmac.Equal([]byte(strings.ToUpper(got)), []byte(want))
}

func FuzzSignV2Equivalence(f *testing.F) {
	f.Add("appid", "wxd930ea5d5a258f4f", "body", "test", "sign", "X", fuzzAPIKey, false)
	f.Add("a", "", "b", "签名", "c", "&=", "k", true)
	f.Add("", "", "", "", "", "", "", true)
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2, k3, v3, key string, md5 bool) {
		st := SignHMACSHA256
		if md5 {
			st = SignMD5
		}
		params := map[string]string{k1: v1, k2: v2, k3: v3}
		got, err := SignV2(params, key, st)
		want, werr := signV2Old(params, key, st)
		if got != want || (err == nil) != (werr == nil) || err != nil && err.Error() != werr.Error() {
			t.Fatalf("SignV2(%q) = %q, %v; the previous implementation gave %q, %v", params, got, err, want, werr)
		}
		if key == "" {
			return
		}
		// The client's signer, reused: its pooled state must not leak from
		// one sign into the next.
		s, _ := newV2Signer(key, st)
		for range 3 {
			if got := string(s.signMap(nil, params)); got != want {
				t.Fatalf("signer = %q, want %q", got, want)
			}
		}
		sorted := make([]v2Param, 0, len(params))
		for _, k := range slicesSorted(params) {
			sorted = append(sorted, v2Param{k, params[k]})
		}
		if got := string(s.signSorted(nil, sorted)); got != want {
			t.Fatalf("signSorted = %q, want %q", got, want)
		}
	})
}

func slicesSorted(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// TestV2RequestEquivalence builds requests of every shape and checks that
// each is byte for byte what the previous encoder and signer made of the
// same parameters (nonce included).
func TestV2RequestEquivalence(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	digits := func(n int) string {
		var b strings.Builder
		for range n {
			b.WriteByte(byte('0' + rng.IntN(10)))
		}
		return b.String()
	}
	for _, st := range []SignType{SignHMACSHA256, SignMD5} {
		c, err := NewV2(Config{API: APIv2, MchID: "1900000109", AppID: "wx8888888888888888", APIKey: fuzzAPIKey, SignType: st})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 200 {
			req := CloseRequest{}
			query := i%3 == 0
			if query && i%2 == 0 {
				req.TransactionID = "42" + digits(26)
			} else {
				req.OutTradeNo = "O-" + digits(1+rng.IntN(20)) + "_|*@"[i%4:i%4+1]
			}
			if i%5 == 0 {
				req.MchID = digits(10)
			}
			if i%7 == 0 {
				req.SubMchID = digits(10)
			}
			if i%11 == 0 {
				req.SubAppID = "wx" + digits(16)
			}
			body, e := c.buildRequest(req, query)
			if e != nil {
				t.Fatalf("buildRequest(%+v): %v", req, e)
			}
			m, err := parseV2XMLStd(body)
			if err != nil {
				t.Fatalf("request %s does not parse: %v", body, err)
			}
			want := maps.Clone(m)
			delete(want, "sign")
			sign, _ := signV2Old(want, fuzzAPIKey, st)
			want["sign"] = sign
			if old := encodeV2XMLOld(want); !bytes.Equal(body, old) {
				t.Fatalf("request\n%s\nthe previous encoder and signer made\n%s", body, old)
			}
		}
	}
}

// TestV2RequestEscapes checks that a value needing escapes is written as
// xml.EscapeText writes it (request values are validated identifiers, so
// only this test reaches that path).
func TestV2RequestEscapes(t *testing.T) {
	for _, v := range []string{`a&b<c>"d'`, "tab\tnl\n", "\x00bad", "签名", "\xff"} {
		params := []v2Param{{"a", v}, {"z", "1"}}
		got := encodeV2Request(params, []byte("S"))
		want := encodeV2XMLOld(map[string]string{"a": v, "z": "1", "sign": "S"})
		if !bytes.Equal(got, want) {
			t.Errorf("value %q: %s, want %s", v, got, want)
		}
	}
}

// FuzzVerifyV2Equivalence holds verifyV2's comparison (ASCII upper case in
// place, constant time) to the previous strings.ToUpper one, for any sign
// received.
func FuzzVerifyV2Equivalence(f *testing.F) {
	fields := map[string]string{"return_code": "SUCCESS", "result_code": "SUCCESS", "nonce_str": "n"}
	good, _ := signV2Old(fields, fuzzAPIKey, SignHMACSHA256)
	goodMD5, _ := signV2Old(fields, fuzzAPIKey, SignMD5)
	f.Add(good, false)
	f.Add(strings.ToLower(good), false)
	f.Add(" "+goodMD5+"\n", true)
	f.Add(strings.ToLower(goodMD5), true)
	f.Add(strings.Replace(strings.ToLower(goodMD5), "a", "ａ", 1), true)
	f.Add("ı", false)
	f.Add(good+good, false)
	f.Add("", false)
	f.Fuzz(func(t *testing.T, sign string, md5 bool) {
		st := SignHMACSHA256
		if md5 {
			st = SignMD5
		}
		c, err := NewV2(Config{API: APIv2, MchID: "1", AppID: "wx1", APIKey: fuzzAPIKey, SignType: st})
		if err != nil {
			t.Fatal(err)
		}
		m := maps.Clone(fields)
		m["sign"] = sign
		got := c.verifyV2(m) == nil
		if want := verifyV2Old(m, fuzzAPIKey, st); got != want {
			t.Fatalf("verifyV2 with sign %q = %t, the previous comparison gave %t", sign, got, want)
		}
	})
}

// FuzzParseV2Equivalence is the differential test of the v2 answer
// parser: whatever the single-pass parser accepts, encoding/xml reads as
// the same fields, and parseV2XML answers exactly as the encoding/xml
// reading does (the fast parser's refusals fall through to it).
func FuzzParseV2Equivalence(f *testing.F) {
	for _, seed := range []string{
		`<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg><sign>ABC</sign></xml>`,
		"  <xml>\n <a>1</a>\r\n\t<b><![CDATA[x]]>y<![CDATA[]]>z</b> </xml>\n",
		`<xml><err_code_des><![CDATA[订单已支付]]></err_code_des><a></a></xml>`,
		`<xml><a>x]]y</a><b><![CDATA[<&>]]></b><c>]]&gt;</c></xml>`,
		`<xml><a>x]]>y</a></xml>`,
		`<xml><a>1</a><a>2</a></xml>`,
		`<xml><a><b>nested</b></a></xml>`,
		`<xml><a>x</b></xml>`,
		`<xml><a/></xml>`,
		`<xml><a x="1">v</a></xml>`,
		`<xml><a>v</a ></xml>`,
		`<xml><xml>inner</xml></xml>`,
		`<xml><a>&amp;&#x41;</a></xml>`,
		`<xml><a>line1` + "\r\n" + `line2</a></xml>`,
		`<xml><a><![CDATA[` + "\r" + `]]></a></xml>`,
		`<xml><a>` + "\x00" + `</a></xml>`,
		`<xml><a>` + "\xff" + `</a></xml>`,
		`<xml><a>` + "\uFFFE" + `</a></xml>`,
		`<xml><!-- c --><a>1</a></xml>`,
		`<?xml version="1.0" encoding="UTF-8"?><xml><a>1</a></xml>`,
		`<xml><a>1</a></xml><xml></xml>`,
		`<xml><a>1</a></xml>trailing`,
		`<xml><ns:a>1</ns:a></xml>`,
		`<xml><_a9>1</_a9><a-b>2</a-b></xml>`,
		`<xml><9a>1</9a></xml>`,
		`<xml>text<a>1</a></xml>`,
		`<xml><a>1</a>`,
		`<XML><a>1</a></XML>`,
		`<xml></xml>`,
		``,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		std, stdErr := parseV2XMLStd(b)
		if m, ok := parseV2Flat(b); ok {
			if stdErr != nil {
				t.Fatalf("the fast parser read %q as %q; encoding/xml refuses it: %v", b, m, stdErr)
			}
			if !maps.Equal(m, std) {
				t.Fatalf("the fast parser read %q as %q; encoding/xml as %q", b, m, std)
			}
		}
		got, err := parseV2XML(b)
		if !maps.Equal(got, std) || (err == nil) != (stdErr == nil) || err != nil && err.Error() != stdErr.Error() {
			t.Fatalf("parseV2XML(%q) = %q, %v; encoding/xml gives %q, %v", b, got, err, std, stdErr)
		}
	})
}

// TestParseV2FlatTakesWeChatAnswers checks that the answers WeChat Pay and
// the sandbox send take the fast path (the point of it), and that a few
// shapes it leaves still parse through encoding/xml.
func TestParseV2FlatTakesWeChatAnswers(t *testing.T) {
	fast := []string{
		`<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg><appid><![CDATA[wx2421b1c4370ec43b]]></appid><mch_id><![CDATA[10000100]]></mch_id><nonce_str><![CDATA[BFK89FC6rxKCOjLX]]></nonce_str><sign><![CDATA[72B321D92A7BFA0B2509F3D13C7B1631]]></sign><result_code><![CDATA[SUCCESS]]></result_code><result_msg><![CDATA[OK]]></result_msg></xml>`,
		"<xml>\n<return_code><![CDATA[SUCCESS]]></return_code>\n<result_code><![CDATA[FAIL]]></result_code>\n<err_code><![CDATA[ORDERPAID]]></err_code>\n<err_code_des><![CDATA[订单已支付]]></err_code_des>\n<total_fee>1</total_fee>\n</xml>\n",
	}
	for _, doc := range fast {
		if _, ok := parseV2Flat([]byte(doc)); !ok {
			t.Errorf("the fast parser leaves %q", doc)
		}
	}
	slow := map[string]string{
		`<?xml version="1.0" encoding="UTF-8"?><xml><a>1&amp;2</a></xml>`: "1&2",
		"<xml><a>1\r\n2</a></xml>":                                        "1\n2",
	}
	for doc, want := range slow {
		if _, ok := parseV2Flat([]byte(doc)); ok {
			t.Errorf("the fast parser took %q", doc)
		}
		if m, err := parseV2XML([]byte(doc)); err != nil || m["a"] != want {
			t.Errorf("parseV2XML(%q) = %q, %v; want a=%q", doc, m, err, want)
		}
	}
}

// FuzzParseV2EquivalenceFields is FuzzParseV2Equivalence on documents
// built from fuzzed names, values and whitespace in WeChat Pay's shape, so
// that most inputs reach deep into the fast parser.
func FuzzParseV2EquivalenceFields(f *testing.F) {
	f.Add("return_code", "SUCCESS", "err_code_des", "订单已支付", "\n", uint8(1))
	f.Add("a", "x]]", "b", "]]>", " ", uint8(2))
	f.Add("a", "&lt;", "a", "dup", "", uint8(0))
	f.Add("_9", "\r\n", "x-y", "\t", "\r", uint8(3))
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2, ws string, mode uint8) {
		wrap := func(v string, cdata bool) string {
			if cdata {
				return "<![CDATA[" + v + "]]>"
			}
			return v
		}
		doc := ws + "<xml>" + ws +
			"<" + k1 + ">" + wrap(v1, mode&1 != 0) + "</" + k1 + ">" + ws +
			"<" + k2 + ">" + wrap(v2, mode&2 != 0) + wrap(v1, mode&4 != 0) + "</" + k2 + ">" +
			ws + "</xml>" + ws
		b := []byte(doc)
		std, stdErr := parseV2XMLStd(b)
		if m, ok := parseV2Flat(b); ok && (stdErr != nil || !maps.Equal(m, std)) {
			t.Fatalf("the fast parser read %q as %q; encoding/xml as %q, %v", b, m, std, stdErr)
		}
		got, err := parseV2XML(b)
		if !maps.Equal(got, std) || (err == nil) != (stdErr == nil) || err != nil && err.Error() != stdErr.Error() {
			t.Fatalf("parseV2XML(%q) = %q, %v; encoding/xml gives %q, %v", b, got, err, std, stdErr)
		}
	})
}

// TestV2SignerConcurrent signs different parameters from many goroutines
// with one pooled signer (as concurrent closes do), each sign compared with
// the previous implementation's: pooled state must never mix two signs.
func TestV2SignerConcurrent(t *testing.T) {
	for _, st := range []SignType{SignHMACSHA256, SignMD5} {
		s, err := newV2Signer(fuzzAPIKey, st)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make(chan string, 8)
		for g := range 8 {
			wg.Go(func() {
				for i := range 200 {
					params := map[string]string{"appid": "wx1", "nonce_str": fmt.Sprint(g, "-", i), "out_trade_no": strings.Repeat("x", i%40)}
					want, _ := signV2Old(params, fuzzAPIKey, st)
					if got := string(s.signMap(nil, params)); got != want {
						errs <- fmt.Sprintf("goroutine %d sign %d: %s, want %s", g, i, got, want)
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Error(e)
		}
	}
}
