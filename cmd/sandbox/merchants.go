package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/wxclose/wxclose/wechat/sandbox"
)

// extraMerchants loads or generates n more merchants' keys under
// dir/merchants/<mchid>: the i-th has mchid primary+100·i (1900000209,
// 1900000309, ... for the default 1900000109), so that reruns find them.
func extraMerchants(dir, primary string, n int) ([]*sandbox.Credentials, error) {
	base, err := strconv.ParseInt(primary, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("-extra-merchants needs a numeric primary mchid, not %q", primary)
	}
	var out []*sandbox.Credentials
	for i := 1; i <= n; i++ {
		id := strconv.FormatInt(base+100*int64(i), 10)
		c, _, err := loadOrGenerate(filepath.Join(dir, "merchants", id), id, "")
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// writeRegistry writes dir/merchants.yaml, a merchant registry
// (WXCLOSE_MERCHANTS_FILE) that configures a worker for every merchant of
// the sandbox at baseURL: the primary one and the extras, v3 with the
// platform certificate, each with its own key files.
func writeRegistry(dir, baseURL string, primary *sandbox.Credentials, extra []*sandbox.Credentials, rate float64) (string, error) {
	var b strings.Builder
	b.WriteString("# Merchant registry for the wxclose sandbox (test keys only). WXCLOSE_MERCHANTS_FILE=" + filepath.Join(dir, "merchants.yaml") + "\nmerchants:\n")
	entry := func(c *sandbox.Credentials, keys string) {
		fmt.Fprintf(&b, "  - mchid: %q\n    api: v3\n    base_url: %s\n    private_key_file: %s\n    cert_serial: %s\n    platform_cert_file: %s\n",
			c.MchID, baseURL, filepath.Join(keys, "apiclient_key.pem"), c.MerchantCertSerial, filepath.Join(keys, "platform_cert.pem"))
		if rate > 0 {
			fmt.Fprintf(&b, "    rate_limit: %v\n", rate)
		}
	}
	entry(primary, dir)
	for _, c := range extra {
		entry(c, filepath.Join(dir, "merchants", c.MchID))
	}
	path := filepath.Join(dir, "merchants.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return "", errors.Join(errors.New("write the merchant registry"), err)
	}
	return path, nil
}
