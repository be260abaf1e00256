// Package redisurl turns a Redis URL (REDIS_URL, --redis) into asynq's
// connection option, and redacts such URLs for logs.
//
// A Redis URL usually carries a password, and an operator who mistypes one
// must not find it in a log collector. asynq.ParseRedisURI wraps url.Parse's
// errors, which quote the input (the password included, or the part before a
// '#', since url.Parse cuts the fragment first). Parse therefore checks the
// URL itself first and reports each problem in fixed words: its errors never
// contain any part of the input.
//
// Accepted are what asynq.ParseRedisURI accepts (redis://, rediss://,
// redis-socket:// and redis-sentinel://) and redis-cluster:// for a Redis
// Cluster, which asynq's parser lacks. A '#' is rejected rather than
// silently cutting the URL (and the password) short.
package redisurl

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/hibiken/asynq"
)

// ErrInvalid is wrapped by every error Parse returns.
var ErrInvalid = errors.New("not a valid Redis URL")

// Schemes are the URL schemes Parse accepts, for help texts.
const Schemes = "redis://, rediss://, redis-socket://, redis-sentinel:// or redis-cluster://"

// encodeHint tells the operator how to write a password with URL
// delimiters in it, the most common reason a Redis URL does not parse.
const encodeHint = "percent-encode '@' ':' '/' '?' '#' '%' in a password (%40 %3A %2F %3F %23 %25)"

// Parse validates raw and returns the connection option asynq needs. Its
// errors wrap ErrInvalid and say what is wrong without quoting raw, so they
// are safe to print; callers prefix the variable or flag name.
func Parse(raw string) (asynq.RedisConnOpt, error) {
	if scheme, _, ok := strings.Cut(raw, "://"); ok && strings.EqualFold(scheme, "redis-cluster") {
		return parseClusterURL(raw)
	}
	u, err := parse(raw)
	if err != nil {
		return nil, err
	}
	switch u.Scheme {
	case "redis", "rediss":
		if u.Hostname() == "" {
			return nil, invalid("it has no host (redis://[:PASSWORD@]HOST[:PORT][/DB])")
		}
		if db := strings.Split(strings.Trim(u.Path, "/"), "/")[0]; db != "" {
			if n, err := strconv.Atoi(db); err != nil || n < 0 {
				return nil, invalid("the path must be the database number, e.g. redis://HOST:6379/0")
			}
		} else if u.Path != "" {
			// asynq v0.26.0 rejects "redis://host/" (an empty database
			// segment); it means database 0.
			u.Path, u.RawPath = "", ""
			raw = u.String()
		}
	case "redis-socket":
		if u.Path == "" {
			return nil, invalid("it has no socket path (redis-socket://[:PASSWORD@]/path/to/redis.sock[?db=N])")
		}
		if db := u.Query().Get("db"); db != "" {
			if n, err := strconv.Atoi(db); err != nil || n < 0 {
				return nil, invalid("the db parameter must be a database number")
			}
		}
	case "redis-sentinel":
		if u.Host == "" {
			return nil, invalid("it has no sentinel addresses (redis-sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...]?master=NAME)")
		}
		if u.Query().Get("master") == "" {
			return nil, invalid("the master parameter is required (redis-sentinel://HOST:PORT?master=NAME)")
		}
	}
	opt, err := asynq.ParseRedisURI(raw)
	if err != nil {
		// Unreachable with asynq v0.26.0 after the checks above; its text
		// is not passed on because it may quote the URL.
		return nil, invalid("asynq does not accept it")
	}
	return opt, nil
}

// parse checks what every scheme shares and returns the parsed URL with a
// lower-case scheme Parse knows.
func parse(raw string) (*url.URL, error) {
	scheme, _, ok := strings.Cut(raw, "://")
	if !ok {
		return nil, invalid("it must start with " + Schemes)
	}
	switch strings.ToLower(scheme) {
	case "redis", "rediss", "redis-socket", "redis-sentinel", "redis-cluster":
	default:
		// The scheme is not quoted: without "://" in the expected place a
		// password typed first would land here.
		return nil, invalid("the scheme must be " + Schemes)
	}
	if strings.Contains(raw, "#") {
		return nil, invalid("it contains '#', which would cut it short; " + encodeHint)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, invalid(describe(err) + "; " + encodeHint)
	}
	return u, nil
}

// describe names the kind of url.Parse error in fixed words: the errors
// themselves quote the offending part, which may be the password.
func describe(err error) string {
	var esc url.EscapeError
	var host url.InvalidHostError
	switch {
	case errors.As(err, &esc):
		return "it has an invalid %-escape"
	case errors.As(err, &host):
		return "its host has an invalid character"
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		msg := ue.Err.Error()
		switch {
		case strings.HasPrefix(msg, "invalid port"):
			return "its host:port part is invalid"
		case strings.Contains(msg, "invalid userinfo"):
			return "its user or password part is invalid"
		case strings.Contains(msg, "control character"):
			return "it contains a control character"
		}
	}
	return "it cannot be parsed as a URL"
}

// clusterForm is the form of a Cluster URL, for messages.
const clusterForm = "redis-cluster://[:PASSWORD@]HOST:PORT[,HOST:PORT...][?tls=true]"

// parseCluster reads redis-cluster://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...][?tls=true]:
// the addresses are seed nodes (the client learns the others from the
// cluster), every one with its port; tls=true connects with TLS, checking
// each node's certificate against the name it is dialled by. A cluster has
// only database 0, so a path is an error rather than silently ignored.
func parseClusterURL(raw string) (asynq.RedisConnOpt, error) {
	// url.Parse rejects most lists of host:port (its port check reads
	// "7000,n2" as one port, and brackets only work alone), so the node list
	// is cut out and checked here, and the rest parsed with a placeholder
	// host.
	scheme, rest, _ := strings.Cut(raw, "://")
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	authority := rest[:end]
	at := strings.LastIndex(authority, "@")
	hosts := authority[at+1:]
	u, err := parse(scheme + "://" + authority[:at+1] + "cluster.invalid" + rest[end:])
	if err != nil {
		return nil, err
	}
	if hosts == "" {
		return nil, invalid("it has no node addresses (" + clusterForm + ")")
	}
	var opt asynq.RedisClusterClientOpt
	for addr := range strings.SplitSeq(hosts, ",") {
		host, port, err := net.SplitHostPort(addr)
		if err != nil || host == "" {
			return nil, invalid("every cluster node must be written HOST:PORT, separated by commas (" + clusterForm + ")")
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, invalid("a cluster node's port must be a number from 1 to 65535")
		}
		opt.Addrs = append(opt.Addrs, addr)
	}
	if strings.Trim(u.Path, "/") != "" {
		return nil, invalid("a Redis Cluster has only database 0: drop the path (" + clusterForm + ")")
	}
	q := u.Query()
	for k := range q {
		if k != "tls" {
			// The name is not quoted: whatever follows '?' could be a
			// misplaced password.
			return nil, invalid("it has a query parameter other than tls (" + clusterForm + ")")
		}
	}
	if v := q.Get("tls"); v != "" {
		on, err := strconv.ParseBool(v)
		if err != nil || len(q["tls"]) > 1 {
			return nil, invalid("the tls parameter must be true or false, once")
		}
		if on {
			// No ServerName: crypto/tls then checks each node against the
			// host it is dialled by, which differs from node to node.
			opt.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
	}
	if u.User != nil {
		opt.Username = u.User.Username()
		opt.Password, _ = u.User.Password()
	}
	return opt, nil
}

func invalid(reason string) error {
	return fmt.Errorf("%w: %s", ErrInvalid, reason)
}

// Redacted stands in for user information and parameter values Redact
// hides.
const Redacted = "xxxxx"

// shownParams are query parameters whose values are never secret.
var shownParams = map[string]bool{"db": true, "master": true, "tls": true}

// Redact returns raw fit for a log line or an error: the user information
// (the user name too, since a password written without the leading ':'
// lands there) and the values of query parameters other than db and master
// are replaced by Redacted. It works on any URL (WECHATPAY_BASE_URL as
// well). A value that is not a plain parsable URL, or that contains '#',
// is replaced whole, because its password cannot be located reliably.
func Redact(raw string) string {
	const unparsable = "[unparsable URL, not shown]"
	if raw == "" {
		return ""
	}
	if !strings.Contains(raw, "://") || strings.Contains(raw, "#") {
		return unparsable
	}
	u, err := url.Parse(raw)
	if err != nil || u.Opaque != "" {
		return unparsable
	}
	if u.User != nil {
		u.User = url.User(Redacted)
	}
	if u.RawQuery != "" {
		q := u.Query()
		for k, vs := range q {
			if !shownParams[strings.ToLower(k)] {
				for i := range vs {
					vs[i] = Redacted
				}
			}
		}
		u.RawQuery = q.Encode()
	}
	return u.String()
}
