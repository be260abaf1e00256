// Package closehandler runs order:close tasks for the worker: it decides,
// in one place, what each run of a close does and tells asynq as a returned
// value:
//
//   - admit: the task's type, its strictly decoded payload, its id and its
//     created_at are checked (tasks' contract); a task failing any of them is
//     archived without calling WeChat Pay;
//   - guard: WeChat Pay is never called before creation + 5 minutes + the
//     margin (or the measured clock lead, when larger), nor before the
//     merchant's close_at; a task that starts early waits in place (up to
//     5 s) or is postponed without spending a retry;
//   - merchant: the payload's mchid selects the merchant (Config.Merchants)
//     whose client, and only its, signs the close; a merchant nobody
//     configured, or no mchid when there are several, archives the task at
//     once with a reason saying how to fix it (CodeUnknownMerchant,
//     CodeMerchantRequired);
//   - pace: the merchant's rate limit, shared by the fleet (Config.Limiter),
//     gives the close a slot; a near one (DefaultMaxRateWait) is waited for
//     in place, a far one postpones the task, neither spending a retry; a
//     RATE_LIMITED answer lowers the merchant's shared rate;
//   - route: the wechat.Closer's answer becomes done (closed, already
//     closed, not found; paid after the order is handed to the
//     reconciliation queue), a retry with backoff, a postponement (rate
//     limited, possibly early) or an archive with the reason (permanent,
//     retries exhausted).
//
// Each run leaves one record with its task, as asynq's task result: the
// tasks.CloseResult of a completed close, or the tasks.CloseFailure of an
// attempt that did not complete it, holding WeChat Pay's code, the failure's
// class, its message, status and request id as data. Operators' tools read
// that record (tasks.ReadCloseRecord) instead of parsing error text.
// asynq v0.26.0 keeps the result field when it moves a task to retry or to
// the archive (its Retry and Archive scripts only set msg and state), and a
// later write replaces it, so the record is always the last attempt's. The
// one exception is the most common run of all, a plain close
// (tasks.CloseResult.NeedsRecord): it writes nothing, saving a Redis round
// trip per close, and a completed close task whose record is missing or a
// failure (an earlier attempt's) reads as closed.
//
// Observer receives one Attempt per run for metrics; the retry package turns
// the returned instruction into a delay.
//
// The package lives under internal/ and apart from tasks on purpose: tasks
// is what checkout services import, and must not link the WeChat Pay client,
// zerolog or the retry policy that the handler needs. Only the worker (and
// tests that run a real handler) import closehandler.
package closehandler
