// Command worker closes unpaid WeChat Pay orders: it runs the order:close
// tasks that producers put on the close_order queue. It is configured by
// environment variables (see README.md for the reference).
//
// Usage:
//
//	worker        run against REDIS_URL and WeChat Pay as configured
//	worker -dev   run a self-contained demo: embedded Redis, WeChat Pay
//	              sandbox, generated keys and a handful of demo orders
//	worker -api-only
//	              serve the HTTP endpoints (close API, /healthz, /readyz,
//	              /metrics, dashboard) and consume no queue; needs no
//	              WeChat Pay credentials (see config.LoadAPIOnly)
//
// SIGHUP reloads the close API's tokens (WXCLOSE_API_TOKENS_FILE) and the
// merchant registry (WXCLOSE_MERCHANTS_FILE) or the WECHATPAY_* key files;
// a file that cannot be used is logged and what is in use is kept.
//
// Exit codes: 0 after a clean shutdown (SIGINT/SIGTERM), 1 if the worker
// cannot start or fails for another reason (Redis unreachable, the HTTP
// address taken), 2 for invalid flags or an invalid configuration: a bad or
// missing variable, an unusable key file, or keys WeChat Pay refuses at
// start. Every configuration message names the environment variable and
// never contains a secret.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/wxclose/wxclose/internal/config"
	"github.com/wxclose/wxclose/internal/devmode"
	"github.com/wxclose/wxclose/internal/gctune"
	"github.com/wxclose/wxclose/internal/logging"
	"github.com/wxclose/wxclose/internal/worker"
	"github.com/wxclose/wxclose/wechat"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dev := fs.Bool("dev", false, "development mode: embedded Redis on a free port, the WeChat Pay sandbox with generated keys, and demo orders (never use in production)")
	apiOnly := fs.Bool("api-only", false, "serve only the HTTP endpoints (close API, /healthz, /readyz, /metrics, dashboard) and consume no queue; WeChat Pay settings are not needed")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: worker [-dev | -api-only]\n\nCloses unpaid WeChat Pay orders from the close_order queue.\n"+
			"Configuration is read from environment variables; see README.md.\nSIGHUP reloads WXCLOSE_API_TOKENS_FILE and the merchant registry (or key files).\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *dev && *apiOnly {
		fmt.Fprintln(stderr, "worker: -dev and -api-only cannot be combined (-dev needs a worker to close its demo orders)")
		return 2
	}

	var env *devmode.Env
	if *dev {
		var err error
		if env, err = devmode.Start(); err != nil {
			fmt.Fprintf(stderr, "worker: development mode: %v\n", err)
			return 1
		}
		defer env.Close()
		getenv = env.Getenv(getenv)
	}

	load := config.Load
	if *apiOnly {
		load = config.LoadAPIOnly
	}
	cfg, err := load(getenv)
	if err != nil {
		fmt.Fprintf(stderr, "worker: configuration is invalid:\n%v\n", err)
		return 2
	}
	log := logging.New(stderr, cfg.LogLevel, cfg.LogFormat)
	// A higher GC target than Go's default, bounded by a soft memory
	// limit, unless the operator set GOGC or GOMEMLIMIT (see gctune).
	gc := gctune.Apply(getenv, cfg.Concurrency)
	log.Info().Str("config", cfg.String()).Bool("dev", *dev).Bool("api_only", *apiOnly).Str("gc", gc).Msg("starting")

	w, err := worker.New(worker.Options{Config: cfg, Logger: log})
	if err != nil {
		// Problems found once the key files are read or WeChat Pay is asked
		// (a key it refuses) are configuration errors too.
		if errors.Is(err, config.ErrInvalid) || errors.Is(err, wechat.ErrInvalidConfig) {
			fmt.Fprintf(stderr, "worker: configuration is invalid:\n%v\n", err)
			return 2
		}
		log.Error().Err(err).Msg("cannot start")
		return 1
	}
	if env != nil {
		demos, err := env.SeedDemo(ctx, w.Producer())
		if err != nil {
			log.Error().Err(err).Msg("cannot enqueue demo orders")
		}
		fmt.Fprint(stdout, env.Banner(w.HTTPAddr(), demos))
		if cfg.API {
			fmt.Fprint(stdout, env.APIBanner(w.HTTPAddr(), cfg.APITokensFile != ""))
		}
	}
	defer reloadOnSIGHUP(w)()
	if err := w.Run(ctx); err != nil {
		log.Error().Err(err).Msg("worker failed")
		return 1
	}
	return 0
}
