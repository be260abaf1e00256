package tasks

import (
	"testing"
	"time"
)

func TestFormatParseDue(t *testing.T) {
	tests := []struct {
		t    time.Time
		want string
	}{
		{time.Date(2026, 11, 22, 10, 5, 2, 0, time.UTC), "1795341902"},
		{time.Date(2026, 11, 22, 18, 5, 2, 0, time.FixedZone("", 8*3600)), "1795341902"},
		{time.Date(2026, 11, 22, 10, 5, 2, 250_000_000, time.UTC), "1795341902.25"},
		{time.Date(2026, 11, 22, 10, 5, 2, 7_999_999, time.UTC), "1795341902.007"},
		{time.Date(2026, 11, 22, 10, 5, 2, 999_999, time.UTC), "1795341902"},
		{time.Unix(0, 0), "0"},
	}
	for _, tt := range tests {
		got := FormatDue(tt.t)
		if got != tt.want {
			t.Errorf("FormatDue(%v) = %q, want %q", tt.t, got, tt.want)
		}
		back, ok := ParseDue(got)
		if want := tt.t.Truncate(time.Millisecond); !ok || !back.Equal(want) {
			t.Errorf("ParseDue(%q) = %v, %t; want %v", got, back, ok, want)
		}
	}
	for _, bad := range []string{"", ".5", "1.", "1.1234567890", "+1", "1e9", "1.5x", "x", "2026-11-22T10:05:02Z", "1 "} {
		if got, ok := ParseDue(bad); ok {
			t.Errorf("ParseDue(%q) = %v, want not ok", bad, got)
		}
	}
	if got, ok := ParseDue("-1.5"); !ok || !got.Equal(time.Unix(-1, 500_000_000)) {
		t.Errorf("ParseDue(-1.5) = %v, %t", got, ok)
	}
}

func TestDueFromHeaders(t *testing.T) {
	due := time.Date(2026, 11, 22, 10, 5, 2, 0, time.UTC)
	later := due.Add(90 * time.Minute)
	tests := []struct {
		name   string
		h      map[string]string
		want   time.Time
		wantOK bool
	}{
		{"new header", map[string]string{HeaderDue: FormatDue(due)}, due, true},
		{"header of an earlier producer", map[string]string{HeaderDueAt: "2026-11-22T18:05:02+08:00"}, due, true},
		{"earlier producer, with nanoseconds", map[string]string{HeaderDueAt: "2026-11-22T10:05:02.123456789Z"}, due.Add(123456789), true},
		{"both, replayed in the old format", map[string]string{HeaderDue: FormatDue(due), HeaderDueAt: later.Format(time.RFC3339Nano)}, later, true},
		{"both, replayed in the new format", map[string]string{HeaderDue: FormatDue(later), HeaderDueAt: due.Format(time.RFC3339Nano)}, later, true},
		{"unreadable new, readable old", map[string]string{HeaderDue: "soon", HeaderDueAt: due.Format(time.RFC3339)}, due, true},
		{"unreadable", map[string]string{HeaderDue: "soon", HeaderDueAt: "later"}, time.Time{}, false},
		{"none", map[string]string{"other": "1"}, time.Time{}, false},
		{"nil", nil, time.Time{}, false},
	}
	for _, tt := range tests {
		got, ok := DueFromHeaders(tt.h)
		if ok != tt.wantOK || !got.Equal(tt.want) {
			t.Errorf("%s: DueFromHeaders(%v) = %v, %t; want %v, %t", tt.name, tt.h, got, ok, tt.want, tt.wantOK)
		}
	}
}
