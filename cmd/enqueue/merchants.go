package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wxclose/wxclose/internal/config"
	"github.com/wxclose/wxclose/internal/merchants"
	"github.com/wxclose/wxclose/internal/ratelimit"
	"github.com/wxclose/wxclose/internal/redisurl"
	"github.com/wxclose/wxclose/wechat"
)

const merchantsUsage = `Usage: enqueue merchants [--file FILE] [--redis URL]

Lists the merchants the workers serve, each with its rate limit and the
rate in force now: the configured rate, or lower for a while after WeChat
Pay answered RATE_LIMITED (the workers then slow down together and climb
back by 2 % of the configured rate per second).

The merchants come from the registry file (--file, else
$WXCLOSE_MERCHANTS_FILE; its key files are not read), or, without one, the
single merchant of $WECHATPAY_MCHID (--mchid) limited to $WXCLOSE_RATE_LIMIT.

Examples:
  enqueue merchants --file /etc/wxclose/merchants.yaml
  WECHATPAY_MCHID=1900000109 enqueue merchants
`

// merchants prints the merchants and their rate limits.
func (e *env) merchants(ctx context.Context, args []string) error {
	c := newCommand("merchants", merchantsUsage)
	var file string
	c.fs.StringVar(&file, "file", "", "merchant registry `FILE` (default: $WXCLOSE_MERCHANTS_FILE)")
	c.withMchID()
	if err := c.parse(e, args); err != nil {
		return err
	}
	if file == "" {
		file = os.Getenv("WXCLOSE_MERCHANTS_FILE")
	}
	defaultRate := float64(config.DefaultRateLimit)
	if v := strings.TrimSpace(os.Getenv("WXCLOSE_RATE_LIMIT")); v != "" {
		r, err := config.ParseRate(v)
		if err != nil {
			return usageError("WXCLOSE_RATE_LIMIT %v", err)
		}
		defaultRate = r
	}
	var entries []merchants.Entry
	switch {
	case file != "":
		var err error
		if entries, err = merchants.ReadFile(file, defaultRate); err != nil {
			return usageError("%v", err)
		}
	case c.mchID != "":
		entries = []merchants.Entry{{MchID: c.mchID, API: wechat.APIVersion(orDefault(os.Getenv("WECHATPAY_API"), "v3")), RateLimit: defaultRate}}
	default:
		return usageError("no merchants: give --file (or set WXCLOSE_MERCHANTS_FILE), or --mchid (or WECHATPAY_MCHID)")
	}
	opt, err := redisurl.Parse(c.redis)
	if err != nil {
		return usageError("--redis/REDIS_URL is %v", err)
	}
	rdb, ok := opt.MakeRedisClient().(redis.UniversalClient)
	if !ok {
		return fmt.Errorf("unsupported Redis connection option %T", opt)
	}
	defer rdb.Close()
	lim, err := ratelimit.New(rdb, ratelimit.Options{})
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(e.stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MCHID\tNAME\tAPI\tRATE LIMIT\tIN FORCE\tSTATE")
	for _, m := range entries {
		name := orDefault(m.Name, "-")
		if m.RateLimit <= 0 {
			fmt.Fprintf(tw, "%s\t%s\t%s\toff\t-\tno limit\n", m.MchID, name, m.API)
			continue
		}
		st, err := lim.Read(ctx, m.MchID, m.RateLimit)
		if err != nil {
			return fmt.Errorf("read merchant %s's rate from Redis: %w", m.MchID, err)
		}
		state := "at the configured rate"
		if st.Throttled {
			state = fmt.Sprintf("lowered %s ago after WeChat Pay answered RATE_LIMITED; climbing back", st.Since.Round(time.Second))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s/s\t%s/s\t%s\n", m.MchID, name, m.API, rateText(m.RateLimit), rateText(st.Effective), state)
	}
	return tw.Flush()
}

// rateText shows a rate as an operator reads it: whole closes per second,
// with a decimal only below 10.
func rateText(r float64) string {
	if r >= 10 || r == float64(int64(r)) {
		return fmt.Sprintf("%.0f", r)
	}
	return fmt.Sprintf("%.1f", r)
}
