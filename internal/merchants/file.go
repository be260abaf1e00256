package merchants

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v4"

	"github.com/wxclose/wxclose/internal/config"
	"github.com/wxclose/wxclose/internal/ids"
	"github.com/wxclose/wxclose/wechat"
)

// Entry is one merchant of the registry file as written, before any key
// file is read. Secrets are never in it: only the paths of the files that
// hold them.
type Entry struct {
	// Index is the entry's position in the file (0-based) and Line its
	// line, for messages.
	Index, Line int
	MchID       string
	// Name is the operator's short name for metric labels; empty for none.
	Name string
	// RateLimit is in closes per second; 0 means no limit (rate_limit:
	// off). Entries without rate_limit get Options.DefaultRateLimit.
	RateLimit    float64
	RateLimitSet bool

	API              wechat.APIVersion
	BaseURL          string
	PathStyle        wechat.PathStyle
	Timeout          time.Duration
	TimeoutSet       bool
	PrivateKeyFile   string
	CertSerial       string
	PlatformCertFile []string
	PublicKeyFile    string
	PublicKeyID      string
	APIv3KeyFile     string
	AppID            string
	APIKeyFile       string
	SignType         wechat.SignType
}

// fields are the keys an entry may have, in the order the README lists
// them.
var fields = []string{
	"mchid", "name", "api", "base_url", "path_style", "timeout",
	"private_key_file", "cert_serial", "platform_cert_file", "public_key_file", "public_key_id", "apiv3_key_file",
	"appid", "api_key_file", "sign_type", "rate_limit",
}

// inlineSecrets are keys an operator might use to put a secret in the file
// itself; each is refused with the file field to use instead, without its
// value ever being read.
var inlineSecrets = map[string]string{
	"api_key": "api_key_file", "apikey": "api_key_file", "key": "api_key_file",
	"apiv3_key": "apiv3_key_file", "api_v3_key": "apiv3_key_file", "apiv3key": "apiv3_key_file",
	"private_key": "private_key_file", "mch_private_key": "private_key_file", "privatekey": "private_key_file",
	"secret": "api_key_file or apiv3_key_file", "password": "api_key_file or apiv3_key_file",
}

// names are the registry's words for the rules config.Merchant applies.
// The key files' contents are checked as the key they hold.
var names = config.Names{
	"API": "api", "BaseURL": "base_url", "PathStyle": "path_style", "MchID": "mchid", "AppID": "appid",
	"Timeout": "timeout", "PrivateKey": "private_key_file", "CertSerial": "cert_serial",
	"PlatformCerts": "platform_cert_file", "PublicKey": "public_key_file", "PublicKeyID": "public_key_id",
	"APIv3Key": "apiv3_key_file (the key it holds)", "APIKey": "api_key_file (the key it holds)", "SignType": "sign_type",
}

// maxNameLen bounds Name, a metric label value.
const maxNameLen = 32

// registryFile is the file's top level; yaml's KnownFields refuses any
// other key.
type registryFile struct {
	Merchants []yaml.Node `yaml:"merchants"`
}

// ReadFile reads and checks the registry file at path without reading the
// key files it names (for tools that only report, such as enqueue
// merchants). defaultRate is the rate of entries without rate_limit. Every
// problem is reported, each as a *config.Error naming the file, the entry
// (index and mchid) and the field; values of secret fields are never read
// into an error.
func ReadFile(path string, defaultRate float64) ([]Entry, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &config.Error{Variable: "WXCLOSE_MERCHANTS_FILE", Reason: fmt.Sprintf("cannot be read: %v", err)}
	}
	return parse(path, data, defaultRate)
}

func parse(path string, data []byte, defaultRate float64) ([]Entry, error) {
	var f registryFile
	if err := yaml.Load(data, &f, yaml.WithKnownFields(), yaml.WithUniqueKeys()); err != nil {
		// yaml's messages name lines and keys; a value could only appear
		// in a type error, and the top level has no secret.
		return nil, &config.Error{Variable: "WXCLOSE_MERCHANTS_FILE", Reason: fmt.Sprintf("%s is not a valid registry: %v (expected a top-level \"merchants:\" list)", path, err)}
	}
	if len(f.Merchants) == 0 {
		return nil, &config.Error{Variable: "WXCLOSE_MERCHANTS_FILE", Reason: fmt.Sprintf("%s lists no merchants (expected a top-level \"merchants:\" list with at least one entry)", path)}
	}
	var errs []error
	entries := make([]Entry, 0, len(f.Merchants))
	byID, byName := map[string]int{}, map[string]int{}
	for i := range f.Merchants {
		e, eerrs := parseEntry(path, i, &f.Merchants[i], defaultRate)
		errs = append(errs, eerrs...)
		if e.MchID != "" {
			if j, dup := byID[e.MchID]; dup {
				errs = append(errs, entryError(path, e, "mchid", fmt.Sprintf("is the same as merchants[%d]'s: each merchant may appear once", j)))
			}
			byID[e.MchID] = i
		}
		if e.Name != "" {
			if j, dup := byName[e.Name]; dup {
				errs = append(errs, entryError(path, e, "name", fmt.Sprintf("%q is merchants[%d]'s name too: names label metrics and must be unique", e.Name, j)))
			}
			byName[e.Name] = i
		}
		entries = append(entries, e)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return entries, nil
}

// entryName names the file, the entry (index and mchid) and the field.
func entryName(path string, e Entry, field string) string {
	who := fmt.Sprintf("merchants[%d]", e.Index)
	if e.MchID != "" {
		who += " (mchid " + e.MchID + ")"
	}
	return strings.TrimSpace(fmt.Sprintf("%s: %s %s", path, who, field))
}

func entryError(path string, e Entry, field, reason string) error {
	return &config.Error{Variable: entryName(path, e, field), Reason: reason}
}

// parseEntry reads one entry key by key, so that every message names the
// entry and field and no value of a refused key is ever read.
func parseEntry(path string, i int, n *yaml.Node, defaultRate float64) (Entry, []error) {
	e := Entry{Index: i, Line: n.Line}
	var errs []error
	fail := func(field, format string, args ...any) {
		errs = append(errs, entryError(path, e, field, fmt.Sprintf(format, args...)))
	}
	if n.Kind != yaml.MappingNode {
		fail("", "must be a mapping of fields (mchid: ..., api: ...), line %d", n.Line)
		return e, errs
	}
	// The mchid first, so that every other message can name it.
	for k := 0; k+1 < len(n.Content); k += 2 {
		if n.Content[k].Value == "mchid" && n.Content[k+1].Kind == yaml.ScalarNode {
			if v := strings.TrimSpace(n.Content[k+1].Value); ids.ValidMchID(v) {
				e.MchID = v
			}
		}
	}
	values := map[string]string{}
	seen := map[string]bool{}
	for k := 0; k+1 < len(n.Content); k += 2 {
		key, val := n.Content[k], n.Content[k+1]
		name := key.Value
		switch {
		case seen[name]:
			fail(name, "appears twice (line %d)", key.Line)
			continue
		case inlineSecrets[strings.ToLower(name)] != "":
			// Never read the value: it is a secret.
			fail(name, "is not allowed (line %d): secrets are read from files only; put it in a file only the worker can read and set %s to its path",
				key.Line, inlineSecrets[strings.ToLower(name)])
			continue
		}
		seen[name] = true
		known := false
		for _, f := range fields {
			known = known || f == name
		}
		if !known {
			fail(name, "is not a known field (line %d); the fields are %s", key.Line, strings.Join(fields, ", "))
			continue
		}
		if name == "platform_cert_file" && val.Kind == yaml.SequenceNode {
			for _, item := range val.Content {
				if item.Kind != yaml.ScalarNode || strings.TrimSpace(item.Value) == "" {
					fail(name, "must list file paths (line %d)", item.Line)
					continue
				}
				e.PlatformCertFile = append(e.PlatformCertFile, strings.TrimSpace(item.Value))
			}
			continue
		}
		if val.Kind != yaml.ScalarNode {
			fail(name, "must be a single value (line %d)", val.Line)
			continue
		}
		if val.Tag == "!!null" {
			continue // "key:" with nothing: as if absent
		}
		values[name] = strings.TrimSpace(val.Value)
	}
	get := func(k, def string) string {
		if v, ok := values[k]; ok && v != "" {
			return v
		}
		return def
	}
	if v, ok := values["mchid"]; !ok || v == "" {
		fail("mchid", "is required (the merchant id, or the institution's for an institutional entry)")
	} else if !ids.ValidMchID(v) {
		fail("mchid", "%s", ids.MchIDRule)
	}
	e.Name = get("name", "")
	switch {
	case e.Name == "":
	case len(e.Name) > maxNameLen || strings.Trim(e.Name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") != "":
		fail("name", "must be 1 to %d letters, digits, '_', '.' or '-' (it labels metrics)", maxNameLen)
	case strings.Trim(e.Name, "0123456789") == "":
		fail("name", "must not be only digits: it labels metrics, which never carry merchant ids")
	}
	e.API = wechat.APIVersion(strings.ToLower(get("api", string(wechat.APIv3))))
	e.BaseURL = get("base_url", wechat.DefaultBaseURL)
	e.PathStyle = wechat.PathStyle(strings.ToLower(get("path_style", string(wechat.PathGlobal))))
	if v := get("timeout", ""); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			fail("timeout", "must be a duration such as 30s, not %q", v)
		}
		e.Timeout, e.TimeoutSet = d, true
	}
	e.PrivateKeyFile = get("private_key_file", "")
	e.CertSerial = strings.ToUpper(strings.TrimPrefix(get("cert_serial", ""), "serial="))
	if v := get("platform_cert_file", ""); v != "" {
		for f := range strings.SplitSeq(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				e.PlatformCertFile = append(e.PlatformCertFile, f)
			}
		}
	}
	e.PublicKeyFile = get("public_key_file", "")
	e.PublicKeyID = get("public_key_id", "")
	e.APIv3KeyFile = get("apiv3_key_file", "")
	e.AppID = get("appid", "")
	e.APIKeyFile = get("api_key_file", "")
	e.SignType = wechat.SignType(strings.ToUpper(get("sign_type", string(wechat.SignHMACSHA256))))
	e.RateLimit = defaultRate
	if v := get("rate_limit", ""); v != "" {
		r, err := config.ParseRate(v)
		if err != nil {
			fail("rate_limit", "%v", err)
		}
		e.RateLimit, e.RateLimitSet = r, true
	}
	// The rules that need no file, with config's words for them. The key
	// files' contents are checked when they are read (load).
	m := e.merchant("placeholder-for-a-set-file", "placeholder-for-a-set-file")
	m.Check(names, func(field, reason string) {
		if field == names["MchID"] {
			return // reported above
		}
		if (field == names["APIKey"] || field == names["APIv3Key"]) && strings.HasPrefix(reason, "must be 32") {
			return // the placeholder's length; load checks the real key
		}
		fail(field, "%s", reason)
	})
	return e, errs
}

// merchant is e as config.Merchant, with the secrets read from its files
// (or stand-ins when only the rules that need no file are checked).
func (e Entry) merchant(apiKey, apiv3Key string) config.Merchant {
	m := config.Merchant{
		API: e.API, BaseURL: e.BaseURL, PathStyle: e.PathStyle, MchID: e.MchID, AppID: e.AppID,
		Timeout: e.Timeout, TimeoutSet: e.TimeoutSet,
		PrivateKeyFile: e.PrivateKeyFile, CertSerial: e.CertSerial, PlatformCertFile: e.PlatformCertFile,
		PublicKeyFile: e.PublicKeyFile, PublicKeyID: e.PublicKeyID,
		SignType: e.SignType,
	}
	if e.APIv3KeyFile != "" {
		m.APIv3Key = apiv3Key
	}
	if e.APIKeyFile != "" {
		m.APIKey = apiKey
	}
	return m
}

// readSecret reads a key file: the key is its content without surrounding
// whitespace (editors add a final newline). The error never quotes the
// content.
func readSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}
