package config

import (
	"errors"
	"strings"
	"testing"

	"github.com/wxclose/wxclose/wechat"
)

// TestMerchantsFileExcludesWECHATPAY: the registry file and the WECHATPAY_*
// variables are two ways to configure merchants; both at once is an
// error naming the variables set, never their values.
func TestMerchantsFileExcludesWECHATPAY(t *testing.T) {
	w, err := Load(envOf(map[string]string{"WXCLOSE_MERCHANTS_FILE": "/etc/wxclose/merchants.yaml"}))
	if err != nil {
		t.Fatalf("a registry file alone: %v", err)
	}
	if w.MerchantsFile != "/etc/wxclose/merchants.yaml" || w.MchID != "" || w.RateLimit != DefaultRateLimit {
		t.Fatalf("Load = file %q mchid %q rate %v", w.MerchantsFile, w.MchID, w.RateLimit)
	}

	env := validV3()
	env["WXCLOSE_MERCHANTS_FILE"] = "/etc/wxclose/merchants.yaml"
	_, err = Load(envOf(env))
	if err == nil || !errors.Is(err, ErrInvalid) {
		t.Fatalf("both set: %v, want a configuration error", err)
	}
	for _, want := range []string{"WXCLOSE_MERCHANTS_FILE", "WECHATPAY_MCHID", "WECHATPAY_APIV3_KEY", "not both"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if strings.Contains(err.Error(), testAPIv3Key) {
		t.Fatalf("error reveals the APIv3 key: %v", err)
	}
	// Without the file, the WECHATPAY_* rules apply as before.
	if _, err := Load(envOf(map[string]string{})); err == nil || !strings.Contains(err.Error(), "WECHATPAY_MCHID") {
		t.Fatalf("no merchant at all: %v, want WECHATPAY_MCHID required", err)
	}
}

func TestRateLimitVariable(t *testing.T) {
	for v, want := range map[string]float64{"": DefaultRateLimit, "off": 0, "OFF": 0, "250": 250, "0.5": 0.5, "100000": MaxRate} {
		env := validV3()
		env["WXCLOSE_RATE_LIMIT"] = v
		w, err := Load(envOf(env))
		if err != nil || w.RateLimit != want {
			t.Errorf("WXCLOSE_RATE_LIMIT=%q: rate %v, %v; want %v", v, w.RateLimit, err, want)
		}
	}
	for _, v := range []string{"0", "-1", "fast", "1e9", "NaN", "100/s"} {
		env := validV3()
		env["WXCLOSE_RATE_LIMIT"] = v
		if _, err := Load(envOf(env)); err == nil || !strings.Contains(err.Error(), "WXCLOSE_RATE_LIMIT") {
			t.Errorf("WXCLOSE_RATE_LIMIT=%q: %v, want an error naming it", v, err)
		}
	}
}

// TestMerchantCheckNamesTheRegistryField: config.Merchant's rules speak the
// words of whoever configured the merchant.
func TestMerchantCheckNamesTheRegistryField(t *testing.T) {
	m := Merchant{API: wechat.APIv2, BaseURL: "http://apihk.mch.weixin.qq.com", MchID: "1900000200", AppID: "wx1", APIKey: "short", SignType: wechat.SignMD5}
	var got []string
	m.Check(Names{"BaseURL": "base_url", "APIKey": "api_key_file"}, func(name, reason string) { got = append(got, name+" "+reason) })
	if len(got) != 2 || !strings.HasPrefix(got[0], "base_url ") || !strings.HasPrefix(got[1], "api_key_file must be 32") {
		t.Fatalf("Check reported %q", got)
	}
}
