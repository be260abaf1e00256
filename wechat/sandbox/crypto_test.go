package sandbox

import "testing"

// TestV2SignOfficialVector reproduces the official v2 signing example
// (protocol doc §D) with the sandbox's signer.
func TestV2SignOfficialVector(t *testing.T) {
	f := map[string]string{
		"appid": "wxd930ea5d5a258f4f", "mch_id": "10000100", "device_info": "1000",
		"body": "test", "nonce_str": "ibuaiVcKdpRxkhJA",
		"sign": "ignored", "empty": "",
	}
	const key = "192006250b4c09247ec02edce69f6a2d"
	if got, want := v2SignString(f, key), "appid=wxd930ea5d5a258f4f&body=test&device_info=1000&mch_id=10000100&nonce_str=ibuaiVcKdpRxkhJA&key="+key; got != want {
		t.Errorf("stringSignTemp\n got %s\nwant %s", got, want)
	}
	for _, tc := range []struct{ signType, want string }{
		{signTypeMD5, "9A0A8659F005D6984697E2CA0A9CF3B7"},
		{signTypeHMACSHA256, "6A9AE1657590FD6257D693A078E1C3E4BB6BA4DC30B23E0EE2496E54170DACD6"},
	} {
		got, err := v2Sign(f, key, tc.signType)
		if err != nil || got != tc.want {
			t.Errorf("%s: got %s %v, want %s", tc.signType, got, err, tc.want)
		}
	}
	if _, err := v2Sign(f, key, "SHA1"); err == nil {
		t.Error("unknown sign type accepted")
	}
}

func TestParseAuthorization(t *testing.T) {
	good := `WECHATPAY2-SHA256-RSA2048 mchid="1",nonce_str="n",timestamp="2",serial_no="S",signature="c2ln"`
	a, err := parseAuthorization(good)
	if err != nil || a.mchid != "1" || a.nonce != "n" || a.timestamp != "2" || a.serial != "S" || a.signature != "c2ln" {
		t.Fatalf("%+v %v", a, err)
	}
	for _, bad := range []string{
		"",
		`WECHATPAY2-SHA256-RSA2048`,
		`Bearer mchid="1"`,
		`WECHATPAY2-SHA256-RSA2048 mchid=1,nonce_str="n",timestamp="2",serial_no="S",signature="x"`,
		`WECHATPAY2-SHA256-RSA2048 mchid="1",mchid="1",nonce_str="n",timestamp="2",serial_no="S",signature="x"`,
		`WECHATPAY2-SHA256-RSA2048 mchid="1",nonce_str="n",timestamp="2",serial_no="S"`,
		`WECHATPAY2-SHA256-RSA2048 mchid="1" nonce_str="n",timestamp="2",serial_no="S",signature="x"`,
		`WECHATPAY2-SHA256-RSA2048 mchid="1,nonce_str="n",timestamp="2",serial_no="S",signature="x`,
		`WECHATPAY2-SHA256-RSA2048 mchid="",nonce_str="n",timestamp="2",serial_no="S",signature="x"`,
	} {
		if _, err := parseAuthorization(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func FuzzParseAuthorization(f *testing.F) {
	f.Add(`WECHATPAY2-SHA256-RSA2048 mchid="1",nonce_str="n",timestamp="2",serial_no="S",signature="c2ln"`)
	f.Fuzz(func(t *testing.T, s string) { _, _ = parseAuthorization(s) }) // must not panic
}

func FuzzParseV2XML(f *testing.F) {
	f.Add([]byte(`<xml><appid><![CDATA[wx]]></appid><a>b</a></xml>`))
	f.Fuzz(func(t *testing.T, b []byte) { _, _ = parseV2XML(b) }) // must not panic
}
