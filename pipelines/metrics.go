package pipelines

import (
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
)

// Metrics is a small Prometheus registry: counters and gauges with
// labels, written in the text exposition format at /metrics. emopipe
// needs a dozen series; this avoids a dependency for them.
type Metrics struct {
	mu     sync.Mutex
	help   map[string]string
	kind   map[string]string
	values map[string]map[string]float64 // name → rendered labels → value
}

// NewMetrics returns an empty registry.
func NewMetrics() *Metrics {
	return &Metrics{help: map[string]string{}, kind: map[string]string{}, values: map[string]map[string]float64{}}
}

// Describe registers a series family ("counter" or "gauge").
func (m *Metrics) Describe(name, kind, help string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.help[name], m.kind[name] = help, kind
	if m.values[name] == nil {
		m.values[name] = map[string]float64{}
	}
}

func labelString(labels []string) string {
	if len(labels) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteByte('{')
	for i := 0; i+1 < len(labels); i += 2 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%q", labels[i], labels[i+1])
	}
	b.WriteByte('}')
	return b.String()
}

// Add increases a counter; labels are name, value pairs.
func (m *Metrics) Add(name string, v float64, labels ...string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.values[name] == nil {
		m.values[name] = map[string]float64{}
	}
	m.values[name][labelString(labels)] += v
}

// Set sets a gauge.
func (m *Metrics) Set(name string, v float64, labels ...string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.values[name] == nil {
		m.values[name] = map[string]float64{}
	}
	m.values[name][labelString(labels)] = v
}

// Get returns a series' value (tests, progress lines).
func (m *Metrics) Get(name string, labels ...string) float64 {
	if m == nil {
		return 0
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.values[name][labelString(labels)]
}

// Sum adds a family's series over all labels.
func (m *Metrics) Sum(name string) float64 {
	if m == nil {
		return 0
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	s := 0.0
	for _, v := range m.values[name] {
		s += v
	}
	return s
}

// WriteTo writes the exposition text, families and series sorted.
func (m *Metrics) WriteTo(w io.Writer) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var b strings.Builder
	names := make([]string, 0, len(m.values))
	for n := range m.values {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if h := m.help[n]; h != "" {
			fmt.Fprintf(&b, "# HELP %s %s\n", n, h)
		}
		if k := m.kind[n]; k != "" {
			fmt.Fprintf(&b, "# TYPE %s %s\n", n, k)
		}
		series := make([]string, 0, len(m.values[n]))
		for l := range m.values[n] {
			series = append(series, l)
		}
		sort.Strings(series)
		for _, l := range series {
			v := m.values[n][l]
			if v == math.Trunc(v) && math.Abs(v) < 1e15 {
				fmt.Fprintf(&b, "%s%s %d\n", n, l, int64(v))
			} else {
				fmt.Fprintf(&b, "%s%s %g\n", n, l, v)
			}
		}
	}
	k, err := io.WriteString(w, b.String())
	return int64(k), err
}

// Serve exposes /metrics on addr until the returned closer is called.
// It returns the bound address (addr may use port 0).
func (m *Metrics) Serve(addr string) (string, func() error, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("metrics: listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		m.WriteTo(w)
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	return ln.Addr().String(), srv.Close, nil
}
