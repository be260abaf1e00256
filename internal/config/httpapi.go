package config

import (
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/wxclose/wxclose/internal/httpapi"
	"github.com/wxclose/wxclose/internal/webhook"
)

// DefaultWebhookConcurrency is the number of paid-order webhooks in flight
// (WXCLOSE_RECONCILE_WEBHOOK_CONCURRENCY). They run on their own asynq
// server, so a receiver that hangs holds these slots, never the closes'.
const DefaultWebhookConcurrency = 4

// LoadAPIOnly reads the configuration of `worker -api-only`: a process that
// serves the HTTP endpoints (the close API, /healthz, /readyz, /metrics and
// the dashboard) and consumes no queue. It never calls WeChat Pay, so every
// WECHATPAY_* variable except WECHATPAY_MCHID is ignored, as are the
// webhook's (WXCLOSE_RECONCILE_WEBHOOK_*): a deployment may share one
// environment between its workers and its API processes without mounting
// the keys in the latter. WECHATPAY_MCHID is still required: it is the
// merchant filled into payloads that name none, and it must be the
// workers', so that an order gets the same task id whichever process
// received it. WXCLOSE_CLOSE_MARGIN and WXCLOSE_MAX_RETRY are stored with
// each close, as by the Go producer.
func LoadAPIOnly(getenv func(string) string) (Worker, error) { return load(getenv, true) }

// apiOnlyEnv hides the variables -api-only does not use, so that they are
// neither validated nor shown.
func apiOnlyEnv(getenv func(string) string) func(string) string {
	return func(name string) string {
		if (strings.HasPrefix(name, "WECHATPAY_") && name != "WECHATPAY_MCHID") ||
			strings.HasPrefix(name, "WXCLOSE_RECONCILE_WEBHOOK_") {
			return ""
		}
		return getenv(name)
	}
}

// checkAPI applies the dashboard's rule to the close API: without tokens it
// is served only on a loopback address (and only to loopback clients; see
// httpapi), so a worker bound to every interface needs
// WXCLOSE_API_TOKENS_FILE, or the API turned off.
func (w *Worker) checkAPI(r *reader) {
	if !w.API {
		if w.APIOnly {
			r.fail("WXCLOSE_API", "cannot be false with -api-only, which serves the close API and consumes no queue")
		}
		return
	}
	host, _, err := net.SplitHostPort(w.HTTPAddr)
	if err != nil || w.APITokensFile != "" || IsLoopbackHost(host) {
		return // a bad address is checkHTTP's to report
	}
	r.fail("WXCLOSE_API_TOKENS_FILE",
		"is required when the close API is reachable from other machines (WXCLOSE_HTTP_ADDR %q): set it to a file of bearer tokens, bind WXCLOSE_HTTP_ADDR to loopback (e.g. 127.0.0.1:8080), or set WXCLOSE_API=false",
		w.HTTPAddr)
}

// checkWebhook checks the paid-order webhook settings with the rules of
// webhook.NewHandler, so that they are reported as configuration errors
// naming the variable. The URL is never quoted whole: its user information
// or query may hold credentials.
func (w *Worker) checkWebhook(r *reader) {
	const urlVar, secretVar = "WXCLOSE_RECONCILE_WEBHOOK_URL", "WXCLOSE_RECONCILE_WEBHOOK_SECRET_FILE"
	if w.WebhookTimeout <= 0 {
		r.fail("WXCLOSE_RECONCILE_WEBHOOK_TIMEOUT", "must be a positive duration such as 10s, not %s", w.WebhookTimeout)
	}
	if (w.WebhookURL == "") != (w.WebhookSecretFile == "") {
		r.fail(urlVar+"/"+secretVar, "set both or neither (the URL receives each paid order, signed with the secret)")
		return
	}
	if w.WebhookURL == "" {
		return
	}
	u, err := url.Parse(w.WebhookURL)
	switch {
	case err != nil || u.Host == "" || u.Opaque != "" || (u.Scheme != "https" && u.Scheme != "http"):
		r.fail(urlVar, "must be an absolute https:// URL such as https://example.com/wxclose/paid")
	case u.Scheme == "http" && !IsLoopbackHost(u.Hostname()):
		r.fail(urlVar, "%s must use https; plain http is only allowed for loopback hosts", w.WebhookURLShown())
	case u.Fragment != "" || strings.Contains(w.WebhookURL, "#"):
		r.fail(urlVar, "%s must not have a fragment (#)", w.WebhookURLShown())
	}
}

// WebhookURLShown is WebhookURL as it may be logged: scheme, host and path,
// without user information or query. It is "" when no URL is set or it
// does not parse.
func (w Worker) WebhookURLShown() string {
	u, err := url.Parse(w.WebhookURL)
	if w.WebhookURL == "" || err != nil {
		return ""
	}
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
}

// Webhook reports whether the worker delivers paid orders itself (and so
// consumes the reconciliation queue).
func (w Worker) Webhook() bool { return w.WebhookURL != "" && !w.APIOnly }

// APITokens reads WXCLOSE_API_TOKENS_FILE. It returns nil, nil when the
// variable is unset (the API is then loopback-only). Errors are *Error
// naming the variable; they name the file and line, never a token.
func (w Worker) APITokens() (*httpapi.Tokens, error) {
	if w.APITokensFile == "" {
		return nil, nil
	}
	t, err := httpapi.LoadTokens(w.APITokensFile)
	if err != nil {
		return nil, fileError("WXCLOSE_API_TOKENS_FILE", err)
	}
	return t, nil
}

// WebhookSecret reads WXCLOSE_RECONCILE_WEBHOOK_SECRET_FILE. Errors are
// *Error naming the variable and never contain any part of the secret.
func (w Worker) WebhookSecret() (webhook.Secret, error) {
	s, err := webhook.LoadSecret(w.WebhookSecretFile)
	if err != nil {
		return webhook.Secret{}, fileError("WXCLOSE_RECONCILE_WEBHOOK_SECRET_FILE", err)
	}
	return s, nil
}

// apiString completes String with the API and webhook settings.
func (w Worker) apiString() string {
	s := fmt.Sprintf(" api_only=%t close_api=%t api_tokens_file=%q", w.APIOnly, w.API, w.APITokensFile)
	if w.Webhook() {
		s += fmt.Sprintf(" webhook=%s webhook_timeout=%s webhook_concurrency=%d", w.WebhookURLShown(), w.WebhookTimeout, w.WebhookConcurrency)
	} else {
		s += " webhook=off"
	}
	return s
}
