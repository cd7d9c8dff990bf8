package train

import (
	"fmt"
	"runtime"
	"strconv"
	"strings"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/gobackend"
)

// NewBackend opens a compute backend from a spec:
//
//	"go" or "go:OPTIONS"      pure Go CPU backend (GoMLX's gobackend)
//	"xla:/abs/plugin.so[,k=v]" a PJRT plugin by absolute path (GPU: a CUDA
//	                           plugin, e.g. JAX's xla_cuda_plugin.so)
//
// Nothing is ever downloaded: GoMLX's plugin auto-installer is not linked
// and GOMLX_NO_AUTO_INSTALL is set before xla starts. Errors are one line.
func NewBackend(spec string) (compute.Backend, error) {
	name, opts, _ := strings.Cut(spec, ":")
	switch name {
	case "", "go":
		b, err := gobackend.New(goBackendOptions(opts))
		if err != nil {
			return nil, fmt.Errorf("train: backend go: %s", firstLine(err))
		}
		return b, nil
	case "xla":
		return newXLA(opts)
	}
	return nil, fmt.Errorf("train: backend %q: want go or xla:/abs/path/to/pjrt_plugin.so", spec)
}

// isGoBackend reports whether spec names the go backend.
func isGoBackend(spec string) bool {
	name, _, _ := strings.Cut(spec, ":")
	return name == "" || name == "go"
}

// goBackendOptions adds num_executors=min(8, GOMAXPROCS) unless opts sets
// it. GoMLX runs up to 8 graph nodes at once by default; on a machine
// with fewer cores the extra executors only contend with the kernels'
// own workers (measured on 2 cores: tiny model 1,650 → 2,350 tokens/s,
// small 222 → 284; docs/benchmarks.md). It changes no result: each node's
// kernel is the same, only when it runs.
func goBackendOptions(opts string) string {
	for _, o := range strings.Split(opts, ",") {
		if k, _, _ := strings.Cut(o, "="); k == "num_executors" {
			return opts
		}
	}
	n := "num_executors=" + strconv.Itoa(min(8, runtime.GOMAXPROCS(0)))
	if opts == "" {
		return n
	}
	return n + "," + opts
}

func firstLine(err error) string {
	s := strings.TrimSpace(err.Error())
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}
