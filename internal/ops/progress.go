package ops

import (
	"fmt"
	"io"
	"time"
)

// progressInterval limits redraws so that a fast bulk run is not slowed by
// terminal output.
const progressInterval = 100 * time.Millisecond

// progress draws one self-overwriting status line on a terminal. It is used
// from a single goroutine only. A nil *progress or one with a nil writer
// draws nothing.
type progress struct {
	w     io.Writer
	last  time.Time
	shown bool
}

func newProgress(w io.Writer) *progress { return &progress{w: w} }

// update redraws the line with text, at most every progressInterval unless
// force is set.
func (p *progress) update(force bool, format string, args ...any) {
	if p == nil || p.w == nil {
		return
	}
	now := time.Now()
	if !force && now.Sub(p.last) < progressInterval {
		return
	}
	p.last = now
	fmt.Fprintf(p.w, "\r\x1b[K"+format, args...)
	p.shown = true
}

// clear erases the line, so that a message can be written to the same
// terminal; the next update draws it again.
func (p *progress) clear() {
	if p == nil || p.w == nil || !p.shown {
		return
	}
	fmt.Fprint(p.w, "\r\x1b[K")
	p.shown = false
	p.last = time.Time{}
}
