package pipelines

import (
	"fmt"
	"io"
	"os"
	"time"
)

// Progress prints one status line: redrawn in place on a terminal, a plain
// line every few seconds otherwise (logs stay readable).
type Progress struct {
	w       io.Writer
	tty     bool
	every   time.Duration
	last    time.Time
	start   time.Time
	printed bool
}

// NewProgress writes to w; nil means no progress output.
func NewProgress(w io.Writer) *Progress {
	p := &Progress{w: w, start: time.Now(), every: 10 * time.Second}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.tty, p.every = true, 200*time.Millisecond
		}
	}
	return p
}

// Update shows line if enough time has passed since the last one.
func (p *Progress) Update(line func() string) {
	if p == nil || p.w == nil {
		return
	}
	now := time.Now()
	if now.Sub(p.last) < p.every {
		return
	}
	p.last = now
	p.show(line())
}

func (p *Progress) show(s string) {
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", s)
	} else {
		fmt.Fprintln(p.w, s)
	}
	p.printed = true
}

// Done prints the final line.
func (p *Progress) Done(s string) {
	if p == nil || p.w == nil {
		return
	}
	p.show(s)
	if p.tty {
		fmt.Fprintln(p.w)
	}
}

// Elapsed since the progress started.
func (p *Progress) Elapsed() time.Duration { return time.Since(p.start) }

// Bar renders done/total as a 20-cell bar with percentage.
func Bar(done, total int64) string {
	if total <= 0 {
		return ""
	}
	f := float64(done) / float64(total)
	f = min(max(f, 0), 1)
	n := int(f * 20)
	b := make([]byte, 20)
	for i := range b {
		if i < n {
			b[i] = '#'
		} else {
			b[i] = '.'
		}
	}
	return fmt.Sprintf("[%s] %3.0f%%", b, 100*f)
}

// HumanBytes formats a byte count.
func HumanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
