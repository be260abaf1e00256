package sandbox

import (
	"maps"
	"testing"
)

// v2CloseBody is a close request as package wechat writes it
// (encodeV2Request): fields in name order, so sign comes before sign_type,
// and values as escaped text, not CDATA.
const v2CloseBody = `<xml><appid>wx8888888888888888</appid><mch_id>1900000109</mch_id>` +
	`<nonce_str>BbMQBq3pEfC0Tz1fWCXUVkB1Z2pA5Jqx</nonce_str><out_trade_no>1217752501201407033233368018</out_trade_no>` +
	`<sign>6A9AE1657590FD6257D693A078E1C3E4BB6BA4DC30B23E0EE2496E54170DACD6</sign><sign_type>HMAC-SHA256</sign_type></xml>`

// v2CloseBodyCDATA is the same request with the sign in CDATA, as other
// clients and WeChat Pay's own examples write it.
const v2CloseBodyCDATA = `<xml><appid>wx8888888888888888</appid><mch_id>1900000109</mch_id>` +
	`<nonce_str>BbMQBq3pEfC0Tz1fWCXUVkB1Z2pA5Jqx</nonce_str><out_trade_no>1217752501201407033233368018</out_trade_no>` +
	`<sign><![CDATA[6A9AE1657590FD6257D693A078E1C3E4BB6BA4DC30B23E0EE2496E54170DACD6]]></sign><sign_type>HMAC-SHA256</sign_type></xml>`

// v2ParseCases are documents on either side of the fast path's edge. fast
// says whether parseV2XMLFast should take the document; either way the
// result must be parseV2XMLStrict's.
var v2ParseCases = []struct {
	name string
	body string
	fast bool
}{
	{"client close", v2CloseBody, true},
	{"client close, CDATA sign", v2CloseBodyCDATA, true},
	{"empty root", `<xml></xml>`, true},
	{"whitespace around and between", " \r\n\t<xml>\n  <a>1</a>\r\n\t<b>2</b>\n</xml>\r\n ", true},
	{"empty value", `<xml><a></a></xml>`, true},
	{"empty CDATA", `<xml><a><![CDATA[]]></a></xml>`, true},
	{"whitespace-only value", `<xml><a> </a><b>` + "\t\n" + `</b></xml>`, true},
	{"inner spaces kept", `<xml><a>  x y  </a></xml>`, true},
	{"field named xml", `<xml><xml>x</xml></xml>`, true},
	{"underscore and digits in names", `<xml><_a1>x</_a1><B_2>y</B_2></xml>`, true},
	{"brackets before CDATA end", `<xml><a><![CDATA[x]]]></a></xml>`, true},
	{"brackets in text", `<xml><a>x]]</a></xml>`, true},
	{"punctuation", `<xml><a>!"#$%'()*+,-./:;=?@[\]^_{|}~</a></xml>`, true},

	{"XML declaration", `<?xml version="1.0" encoding="UTF-8"?><xml><a>1</a></xml>`, false},
	{"byte order mark", "\xef\xbb\xbf<xml><a>1</a></xml>", false},
	{"comment", `<xml><!-- c --><a>1</a></xml>`, false},
	{"comment in value", `<xml><a>1<!-- c --></a></xml>`, false},
	{"processing instruction", `<xml><?pi x?><a>1</a></xml>`, false},
	{"DOCTYPE", `<!DOCTYPE xml [<!ENTITY e "x">]><xml><a>&e;</a></xml>`, false},
	{"named entity", `<xml><a>a&amp;b</a></xml>`, false},
	{"numeric entity", `<xml><a>&#65;&#x42;</a></xml>`, false},
	{"bare ampersand", `<xml><a>a&b</a></xml>`, false},
	{"gt in text", `<xml><a>x>y</a></xml>`, false},
	{"CDATA end in text", `<xml><a>]]></a></xml>`, false},
	{"lt and amp in CDATA", `<xml><a><![CDATA[a<b&c]]></a></xml>`, false},
	{"root attribute", `<xml a="1"><a>1</a></xml>`, false},
	{"field attribute", `<xml><a b="1">x</a></xml>`, false},
	{"space in start tag", `<xml ><a>1</a></xml>`, false},
	{"space in end tag", `<xml><a>1</a ></xml>`, false},
	{"self-closing field", `<xml><a/></xml>`, false},
	{"self-closing root", `<xml/>`, false},
	{"nested element", `<xml><a><b>x</b></a></xml>`, false},
	{"two CDATA sections", `<xml><a><![CDATA[x]]><![CDATA[y]]></a></xml>`, false},
	{"text then CDATA", `<xml><a>x<![CDATA[y]]></a></xml>`, false},
	{"space then CDATA", `<xml><a> <![CDATA[y]]></a></xml>`, false},
	{"CDATA then space", `<xml><a><![CDATA[y]]> </a></xml>`, false},
	{"unterminated CDATA", `<xml><a><![CDATA[x</a></xml>`, false},
	{"duplicate field", `<xml><a>1</a><a>2</a></xml>`, false},
	{"duplicate empty field", `<xml><a></a><a></a></xml>`, false},
	{"CR in text", "<xml><a>x\ry</a></xml>", false},
	{"CRLF in text", "<xml><a>x\r\ny</a></xml>", false},
	{"CRLF in CDATA", "<xml><a><![CDATA[x\r\ny]]></a></xml>", false},
	{"control character", "<xml><a>\x01</a></xml>", false},
	{"NUL", "<xml><a>\x00</a></xml>", false},
	{"DEL", "<xml><a>\x7f</a></xml>", false},
	{"UTF-8 text", "<xml><a>\u5173\u95ed</a></xml>", false},
	{"invalid UTF-8", "<xml><a>\xff</a></xml>", false},
	{"invalid UTF-8 in CDATA", "<xml><a><![CDATA[\xc3]]></a></xml>", false},
	{"name starting with digit", `<xml><1a>x</1a></xml>`, false},
	{"name with hyphen", `<xml><a-b>x</a-b></xml>`, false},
	{"name with dot", `<xml><a.b>x</a.b></xml>`, false},
	{"namespaced name", `<xml><x:a>x</x:a></xml>`, false},
	{"non-ASCII name", "<xml><\u00e9>x</\u00e9></xml>", false},
	{"empty name", `<xml><>x</></xml>`, false},
	{"mismatched end tag", `<xml><a>1</b></xml>`, false},
	{"end tag with prefix of name", `<xml><ab>1</a></xml>`, false},
	{"end tag longer than name", `<xml><a>1</ab></xml>`, false},
	{"text between fields", `<xml><a>1</a>text<b>2</b></xml>`, false},
	{"vertical tab between fields", "<xml><a>1</a>\v<b>2</b></xml>", false},
	{"form feed after root", "<xml><a>1</a></xml>\f", false},
	{"text after root", `<xml><a>1</a></xml>x`, false},
	{"second root", `<xml><a>1</a></xml><xml></xml>`, false},
	{"comment after root", `<xml><a>1</a></xml><!-- c -->`, false},
	{"other root", `<root><a>1</a></root>`, false},
	{"upper-case end", `<xml><a>1</a></XML>`, false},
	{"no end", `<xml><a>1</a>`, false},
	{"no field end", `<xml><a>1`, false},
	{"cut in end tag", `<xml><a>1</a`, false},
	{"empty body", ``, false},
	{"whitespace only", " \n", false},
	{"text only", `hello`, false},
}

func TestParseV2XMLFast(t *testing.T) {
	for _, tc := range v2ParseCases {
		t.Run(tc.name, func(t *testing.T) {
			body := []byte(tc.body)
			got, ok := parseV2XMLFast(body)
			if ok != tc.fast {
				t.Errorf("fast path took it: %v, want %v", ok, tc.fast)
			}
			want, wantErr := parseV2XMLStrict(body)
			if ok && (wantErr != nil || !maps.Equal(got, want)) {
				t.Errorf("fast path %q, strict %q %v", got, want, wantErr)
			}
			checkParseV2XML(t, body)
		})
	}
}

// checkParseV2XML checks that parseV2XML gives exactly what the strict
// parser gives, error text included.
func checkParseV2XML(t *testing.T, body []byte) {
	t.Helper()
	got, err := parseV2XML(body)
	want, wantErr := parseV2XMLStrict(body)
	if (err == nil) != (wantErr == nil) || err != nil && err.Error() != wantErr.Error() {
		t.Fatalf("error %v, strict %v", err, wantErr)
	}
	if err == nil && !maps.Equal(got, want) {
		t.Fatalf("parsed %q, strict %q", got, want)
	}
}

func FuzzParseV2XMLFast(f *testing.F) {
	for _, tc := range v2ParseCases {
		f.Add([]byte(tc.body))
	}
	f.Add([]byte(v2XML([]kv{{"return_code", "SUCCESS"}, {"a", "x]]>y"}, {"sign", "ABC"}})))
	f.Fuzz(func(t *testing.T, body []byte) {
		if got, ok := parseV2XMLFast(body); ok {
			want, err := parseV2XMLStrict(body)
			if err != nil {
				t.Fatalf("fast path accepted %q, strict parser refuses it: %v", body, err)
			}
			if !maps.Equal(got, want) {
				t.Fatalf("fast path read %q as %q, strict parser as %q", body, got, want)
			}
		}
		checkParseV2XML(t, body)
	})
}

func BenchmarkParseV2XML(b *testing.B) {
	for _, body := range []struct{ name, body string }{
		{"client", v2CloseBody},
		{"cdata", v2CloseBodyCDATA},
	} {
		for _, p := range []struct {
			name  string
			parse func([]byte) (map[string]string, error)
		}{
			{"fast", parseV2XML},
			{"strict", parseV2XMLStrict},
		} {
			b.Run(body.name+"/"+p.name, func(b *testing.B) {
				in := []byte(body.body)
				b.ReportAllocs()
				for b.Loop() {
					if _, err := p.parse(in); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
