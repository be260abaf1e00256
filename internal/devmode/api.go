package devmode

import (
	"fmt"
	"strings"
	"time"

	"github.com/wxclose/wxclose/tasks"
)

// APIBanner shows the close API with curl commands that schedule, inspect
// and cancel a close against this environment. tokens says whether the API
// asks for a bearer token (WXCLOSE_API_TOKENS_FILE set); without one it
// answers loopback clients only, as in the default -dev setup.
func (e *Env) APIBanner(httpAddr string, tokens bool) string {
	base := "http://" + httpAddr + "/v1"
	auth, mode := "", "no token needed: it answers this machine only"
	if tokens {
		auth, mode = ` -H "Authorization: Bearer $TOKEN"`, "bearer token from WXCLOSE_API_TOKENS_FILE in $TOKEN"
	}
	const no = "API-ORDER-1"
	id := tasks.CloseTaskID(tasks.OrderRef{OutTradeNo: no, MchID: e.MchID})
	created := time.Now().Add(-tasks.MinCloseAge).UTC().Format(time.RFC3339)
	var b strings.Builder
	fmt.Fprintf(&b, "Close API %s/ (%s; contract: %s/openapi.json):\n", base, mode, base)
	fmt.Fprintf(&b, "  curl -sS%s -H 'Content-Type: application/json' -d '{\"out_trade_no\":\"%s\",\"mchid\":\"%s\",\"created_at\":\"%s\"}' %s/closes\n",
		auth, no, e.MchID, created, base)
	fmt.Fprintf(&b, "  curl -sS%s %s/closes/%s\n", auth, base, id)
	fmt.Fprintf(&b, "  curl -sS%s -X DELETE %s/closes/%s   (cancel it, if it has not run yet)\n\n", auth, base, id)
	return b.String()
}
