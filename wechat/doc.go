// Package wechat closes WeChat Pay orders: it signs Close Order (and Query
// Order) requests for API v3 (JSON, SHA256-RSA2048) and the legacy API v2
// (XML, MD5 or HMAC-SHA256), verifies every response it relies on, and
// reports the result as an Outcome or a classified *Error that a caller can
// route without matching strings.
//
// The package knows HTTP, keys, certificates and WeChat Pay status codes. It
// knows nothing about queues: deciding when to call and what to do with the
// result belongs to the caller.
//
// Merchant ids, app ids, order numbers and key ids are held to the rules
// wxclose's producer and configuration use too (internal/ids): WeChat Pay's
// own (digits for merchant ids; letters, digits and _ - | * @ for
// out_trade_no; at most 32 characters). A request breaking them is refused
// with ErrInvalidRequest before anything is sent.
//
// A success is only ever reported for a response whose signature verified.
// When a close answer that would end the close is not signed, Close settles
// it with a signed Query Order answer (Outcome.ConfirmedByQuery) rather than
// retrying until the order is given up on; see Querier.
//
// Secrets (the merchant private key, the API v2 key, the APIv3 key) and URL
// user information never appear in an error message, a log line or an
// Outcome.
package wechat
