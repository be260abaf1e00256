// Package sandbox is a WeChat Pay look-alike for tests and local development
// of wxclose. It serves the Close Order and Query Order endpoints of API v3
// (global and legacy HK paths) and API v2, and the v3 platform certificate
// download, over plain HTTP.
//
// Its whole value as a test double is that it checks requests as strictly as
// WeChat Pay does: the v3 Authorization header (scheme, merchant id,
// certificate serial, timestamp window, RSA-SHA256 signature over
// METHOD\nURI\nTIMESTAMP\nNONCE\nBODY\n), the body's merchant ids, and the v2
// MD5 / HMAC-SHA256 sign; and that it signs its own v3 responses with a
// platform key the way WeChat Pay does, so a client's verification is
// exercised for real. Orders have a state (unpaid, paid, closed) and a
// creation time; a close earlier than five minutes after creation is refused
// and counted (see Server.EarlyCalls), which is how the worker's "never
// close early" guarantee is tested.
//
// The sandbox deliberately shares no code with package
// github.com/wxclose/wxclose/wechat and does not import it: every signature,
// verification and encryption here is written independently on the standard
// library, so a bug in the client cannot be hidden by the same bug in its
// test double.
//
// Tests drive it with httptest.NewServer(s.Handler()); other processes use
// the cmd/sandbox binary and the admin endpoints under /sandbox/.
// Behaviour can be scripted per order (Server.Script for closes,
// Server.ScriptQuery for Query Order) or made flaky at random
// (Options.Rates). Options.UnsignedFinalAnswers sends the close answers that
// end a close unsigned while queries stay signed; Server.ImpersonatePlatform
// plays an attacker who knows the APIv3 key but not the platform key; and
// Options.CacheResponseSignatures lets benchmarks skip most of the
// sandbox's RSA signing.
//
// It can serve several merchants (Options.Merchants), each with its own
// keys: every request is verified with the keys of the merchant it names, so
// a close signed with another merchant's key is a SIGN_ERROR, and answers
// are signed with that merchant's own platform key (v3) or API key (v2).
// Options.RateLimit (or SetRateLimit, POST /sandbox/rate-limit) enforces a
// per-merchant Close Order limit, answering 429 RATE_LIMITED (v2
// FREQUENCY_LIMITED) above it.
//
// Keys are generated fresh (RSA-2048, self-signed certificates) unless
// Options.Credentials supplies keys from an earlier run; Credentials.WriteFiles
// writes them, with a sandbox.env for the worker, and LoadCredentials reads
// them back.
package sandbox
