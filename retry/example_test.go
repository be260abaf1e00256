package retry_test

import (
	"context"
	"time"

	"github.com/hibiken/asynq"

	"github.com/wxclose/wxclose/retry"
)

// Example shows the wiring in a worker: one policy, checked at startup, and
// the two asynq hooks.
func Example() {
	p := retry.Policy{Initial: 15 * time.Second} // other fields: defaults
	if err := p.Validate(); err != nil {
		panic(err) // in cmd/worker: report the configuration error and exit
	}
	_ = asynq.Config{
		IsFailure: retry.IsFailure,
		RetryDelayFunc: func(n int, err error, _ *asynq.Task) time.Duration {
			return p.Delay(n, err)
		},
	}
}

// ExamplePostponeUntil shows a handler that refuses to close an order before
// creation + 5 minutes without spending a retry.
func ExamplePostponeUntil() {
	createdAt := time.Now()
	handler := func(ctx context.Context, t *asynq.Task) error {
		due := createdAt.Add(5 * time.Minute)
		if time.Now().Before(due) {
			return retry.PostponeUntil(due, "WeChat Pay rejects a close within 5 minutes of creation")
		}
		return nil // call WeChat Pay here
	}
	_ = asynq.HandlerFunc(handler)
}

// ExampleSnooze shows a handler that was told to slow down: it snoozes for
// the server's hint (or retry's short jittered pause without one), and the
// attempt does not spend a retry.
func ExampleSnooze() {
	handler := func(ctx context.Context, t *asynq.Task) error {
		var retryAfter time.Duration // from the rate-limited answer, 0 if none
		return retry.Snooze(retryAfter, "rate limited", nil)
	}
	_ = asynq.HandlerFunc(handler)
}
