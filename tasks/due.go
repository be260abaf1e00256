package tasks

import (
	"strconv"
	"strings"
	"time"
)

// HeaderDue is the task header that records when a close became due to run:
// its due time, or the enqueue time for an order enqueued (or replayed)
// after its due time. The worker measures how late it started from it. The
// value is Unix time in decimal seconds, with a fraction of at most three
// digits when the instant is not a whole second ("1795337716",
// "1795337716.25"; see FormatDue). Producers before it wrote HeaderDueAt;
// read either with DueFromHeaders.
const HeaderDue = "due"

// HeaderDueAt is the header producers before HeaderDue wrote, with the same
// meaning as an RFC 3339 time. Tasks enqueued before an upgrade still carry
// it, and DueFromHeaders still reads it; nothing writes it any more. The
// new header is shorter: a close waiting in Redis takes 60-odd bytes less.
const HeaderDueAt = "wxclose-due-at"

// FormatDue writes t as a HeaderDue value: Unix seconds, and milliseconds
// when t is not a whole second (truncated: the lateness measured from it is
// never shorter than the truth by more than a millisecond).
func FormatDue(t time.Time) string {
	sec, ms := t.Unix(), t.Nanosecond()/int(time.Millisecond)
	s := strconv.FormatInt(sec, 10)
	if ms == 0 {
		return s
	}
	frac := strconv.Itoa(1000 + ms)[1:] // three digits
	return s + "." + strings.TrimRight(frac, "0")
}

// ParseDue reads a HeaderDue value written by FormatDue (any fraction of
// up to nine digits is accepted).
func ParseDue(v string) (time.Time, bool) {
	secPart, frac, hasFrac := strings.Cut(v, ".")
	if secPart == "" || secPart[0] == '+' || hasFrac && (frac == "" || len(frac) > 9) {
		return time.Time{}, false
	}
	sec, err := strconv.ParseInt(secPart, 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	var nsec int64
	for i := range 9 {
		nsec *= 10
		if i < len(frac) {
			c := frac[i]
			if c < '0' || c > '9' {
				return time.Time{}, false
			}
			nsec += int64(c - '0')
		}
	}
	return time.Unix(sec, nsec).UTC(), true
}

// DueFromHeaders returns when a close task became due to run, from its
// headers: HeaderDue, or HeaderDueAt for a task enqueued by an earlier
// producer. When both are present (a task written in one format and
// replayed by a tool that writes the other), the later wins: a replay only
// ever moves the instant forward. ok is false when neither is present and
// readable.
func DueFromHeaders(h map[string]string) (due time.Time, ok bool) {
	if v, found := h[HeaderDue]; found {
		due, ok = ParseDue(v)
	}
	if v, found := h[HeaderDueAt]; found {
		if t, err := time.Parse(time.RFC3339Nano, v); err == nil && (!ok || t.After(due)) {
			due, ok = t, true
		}
	}
	return due, ok
}
