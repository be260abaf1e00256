package main

import (
	"os"
	"os/signal"
	"syscall"

	"github.com/wxclose/wxclose/internal/worker"
)

// reloadOnSIGHUP reloads the close API's tokens and the merchants on every
// SIGHUP, until the returned function is called. Each reload logs its
// outcome and keeps what is in use when its file cannot be used.
func reloadOnSIGHUP(w *worker.Worker) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-hup:
				_ = w.ReloadTokens()
				_ = w.ReloadMerchants() // the merchant registry and key files (logs the outcome)
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(hup)
		close(done)
	}
}
