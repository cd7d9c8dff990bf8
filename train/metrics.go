package train

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// MetricsSink receives gauges (Prometheus style: name, value, label
// pairs). *pipelines.Metrics satisfies it; train does not import pipelines.
type MetricsSink interface {
	Set(name string, v float64, labels ...string)
}

// publish sends a step's gauges to the sink.
func (t *Trainer) publish(m StepMetrics) {
	s := t.cfg.Metrics
	if s == nil {
		return
	}
	s.Set("emopipe_train_step", float64(m.Step))
	s.Set("emopipe_train_loss", m.Loss)
	s.Set("emopipe_train_ce", m.CE)
	s.Set("emopipe_train_router_z", m.RouterZ)
	s.Set("emopipe_train_lm_head_z", m.LMHeadZ)
	s.Set("emopipe_train_lb", m.LB)
	s.Set("emopipe_train_grad_norm", m.GradNorm)
	s.Set("emopipe_train_lr", m.LR)
	s.Set("emopipe_train_tokens_per_second", m.TokensPerSec)
	s.Set("emopipe_train_mfu", m.MFU)
	s.Set("emopipe_train_tokens", float64(t.tokens))
	for l, row := range m.Load {
		ls := fmt.Sprint(l)
		for e, v := range row {
			s.Set("emopipe_train_expert_load", v, "layer", ls, "expert", fmt.Sprint(e))
		}
		if m.PoolSize != nil {
			s.Set("emopipe_train_pool_size", m.PoolSize[l], "layer", ls)
		}
	}
}

func (t *Trainer) publishEval(r EvalResult) {
	s := t.cfg.Metrics
	if s == nil {
		return
	}
	s.Set("emopipe_eval_loss", r.Loss, "domain", "all")
	for d, v := range r.Domains {
		s.Set("emopipe_eval_loss", v.Loss, "domain", d)
	}
}

// metricsLog appends one JSON object per line: StepMetrics, or
// {"eval": EvalResult}. Opening it for a run resumed at step n drops the
// lines of steps after n (they were lost with the kill and will be
// redone), so the log of a resumed run reads like an uninterrupted one.
type metricsLog struct {
	f *os.File
	w *bufio.Writer
}

func openMetricsLog(path string, resumeStep int) (*metricsLog, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("train: metrics log: %w", err)
	}
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("train: metrics log: %w", err)
	}
	var keep bytes.Buffer
	if resumeStep > 0 {
		for _, line := range bytes.Split(old, []byte("\n")) {
			if st, ok := logLineStep(line); ok && st <= resumeStep {
				keep.Write(line)
				keep.WriteByte('\n')
			}
		}
	}
	if err := writeFileAtomic(path, func(w io.Writer) error { _, err := w.Write(keep.Bytes()); return err }); err != nil {
		return nil, fmt.Errorf("train: metrics log: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("train: metrics log: %w", err)
	}
	return &metricsLog{f: f, w: bufio.NewWriter(f)}, nil
}

// logLineStep is the step a log line belongs to.
func logLineStep(line []byte) (int, bool) {
	var v struct {
		Step *int `json:"step"`
		Eval *struct {
			Step int `json:"step"`
		} `json:"eval"`
	}
	if len(bytes.TrimSpace(line)) == 0 || json.Unmarshal(line, &v) != nil {
		return 0, false
	}
	switch {
	case v.Step != nil:
		return *v.Step, true
	case v.Eval != nil:
		return v.Eval.Step, true
	}
	return 0, false
}

func (l *metricsLog) write(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	l.w.Write(b)
	l.w.WriteByte('\n')
	return l.w.Flush()
}

func (l *metricsLog) close() error {
	if l == nil || l.f == nil {
		return nil
	}
	l.w.Flush()
	err := l.f.Close()
	l.f = nil
	return err
}

// ReadMetricsLog reads a metrics.jsonl back (plots, reports, tests).
func ReadMetricsLog(path string) ([]StepMetrics, []EvalResult, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	var steps []StepMetrics
	var evals []EvalResult
	for _, line := range bytes.Split(b, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		if bytes.HasPrefix(line, []byte(`{"eval"`)) {
			var v struct {
				Eval EvalResult `json:"eval"`
			}
			if err := json.Unmarshal(line, &v); err != nil {
				return nil, nil, err
			}
			evals = append(evals, v.Eval)
			continue
		}
		var m StepMetrics
		if err := json.Unmarshal(line, &m); err != nil {
			return nil, nil, err
		}
		steps = append(steps, m)
	}
	return steps, evals, nil
}

// progress prints one status line: redrawn in place on a terminal, a
// plain line every few seconds otherwise (logs stay readable).
type progress struct {
	w     io.Writer
	tty   bool
	every time.Duration
	last  time.Time
	shown bool
}

func newProgress(w io.Writer) *progress {
	p := &progress{w: w, every: 10 * time.Second}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.tty, p.every = true, 250*time.Millisecond
		}
	}
	return p
}

func (p *progress) update(force bool, line func() string) {
	if p == nil || p.w == nil {
		return
	}
	now := time.Now()
	if !force && now.Sub(p.last) < p.every {
		return
	}
	p.last = now
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", line())
		p.shown = true
		return
	}
	fmt.Fprintln(p.w, line())
}

func (p *progress) done(line string) {
	if p == nil || p.w == nil {
		return
	}
	if p.tty && p.shown {
		fmt.Fprint(p.w, "\r\033[K")
	}
	fmt.Fprintln(p.w, line)
}

// bar draws a fixed-width progress bar.
func bar(done, total, width int) string {
	if total <= 0 {
		return ""
	}
	n := min(width, done*width/total)
	return "[" + strings.Repeat("█", n) + strings.Repeat("·", width-n) + "]"
}

func fmtDuration(d time.Duration) string {
	d = d.Round(time.Second)
	if d >= time.Hour {
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return d.String()
}
