package metrics

import (
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wxclose/wxclose/internal/httpapi"
	"github.com/wxclose/wxclose/internal/webhook"
)

// exportedElsewhere returns the names of the metrics the worker registers
// on this package's registry from other packages: the close API's
// (internal/httpapi) and the webhook's (internal/webhook). Only the tests
// import them; the metrics package does not depend on either.
func exportedElsewhere(t *testing.T) []string {
	t.Helper()
	reg := prometheus.NewRegistry()
	// Redis is never dialled: New connects lazily and the one request below
	// needs no Redis.
	api, err := httpapi.New(httpapi.Options{Redis: asynq.RedisClientOpt{Addr: "127.0.0.1:1"}, ListenAddr: "127.0.0.1:8080", Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()
	// Series of a labelled counter exist once a request was counted.
	rec := httptest.NewRecorder()
	api.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/openapi.json", nil))

	key := make([]byte, webhook.MinKeyBytes)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	secret, err := webhook.ParseSecret(webhook.SecretPrefix + base64.StdEncoding.EncodeToString(key))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := webhook.NewHandler(webhook.Options{URL: "http://127.0.0.1:1/paid", Secret: secret, Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, mf := range mfs {
		names = append(names, mf.GetName())
	}
	return names
}
