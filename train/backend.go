package train

import (
	"fmt"
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
		b, err := gobackend.New(opts)
		if err != nil {
			return nil, fmt.Errorf("train: backend go: %s", firstLine(err))
		}
		return b, nil
	case "xla":
		return newXLA(opts)
	}
	return nil, fmt.Errorf("train: backend %q: want go or xla:/abs/path/to/pjrt_plugin.so", spec)
}

func firstLine(err error) string {
	s := strings.TrimSpace(err.Error())
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}
