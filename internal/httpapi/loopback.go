package httpapi

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// The rule for an API without tokens is the dashboard's (see
// internal/dashboard): a loopback listen address, checked by New, and per
// request a loopback client and a loopback Host (a web page that renames
// itself to 127.0.0.1 by DNS rebinding must not reach the API). The helpers
// are copied rather than imported so that the API does not depend on the
// dashboard; the worker's config has a third copy, a candidate for a
// shared internal package.

// isLoopbackHost reports whether host (without port or brackets) can only
// be reached from this machine. Other names are not resolved: what they
// resolve to can change after the check.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

func isLoopbackRemote(remoteAddr string) bool {
	if ap, err := netip.ParseAddrPort(remoteAddr); err == nil {
		return ap.Addr().Unmap().IsLoopback()
	}
	ip, err := netip.ParseAddr(remoteAddr)
	return err == nil && ip.Unmap().IsLoopback()
}

// loopbackRequest reports whether r comes from this machine and names a
// loopback host.
func loopbackRequest(r *http.Request) bool {
	if !isLoopbackRemote(r.RemoteAddr) {
		return false
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return isLoopbackHost(strings.Trim(host, "[]"))
}
