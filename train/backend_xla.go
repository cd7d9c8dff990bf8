//go:build cgo

package train

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/gomlx/compute"
	"github.com/gomlx/go-xla/compute/xla"
)

// newXLA opens a PJRT plugin given by absolute path. A missing or broken
// plugin (wrong file, incompatible PJRT API version, no device) is one
// error line.
func newXLA(opts string) (b compute.Backend, err error) {
	os.Setenv("GOMLX_NO_AUTO_INSTALL", "1")
	plugin, _, _ := strings.Cut(opts, ",")
	if plugin == "" || !filepath.IsAbs(plugin) {
		return nil, fmt.Errorf("train: backend xla needs an absolute plugin path (xla:/abs/path/to/pjrt_plugin.so), got %q", plugin)
	}
	if st, err := os.Stat(plugin); err != nil {
		return nil, fmt.Errorf("train: backend xla: plugin %s: %s", plugin, firstLine(err))
	} else if st.IsDir() {
		return nil, fmt.Errorf("train: backend xla: plugin %s is a directory", plugin)
	}
	defer func() {
		if r := recover(); r != nil {
			b, err = nil, fmt.Errorf("train: backend xla: plugin %s: %s", plugin, firstLine(fmt.Errorf("%v", r)))
		}
	}()
	b, err = xla.New(opts)
	if err != nil {
		return nil, fmt.Errorf("train: backend xla: plugin %s: %s", plugin, firstLine(err))
	}
	return b, nil
}
