//go:build cgo

package train

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/gomlx/compute"
	"github.com/gomlx/go-xla/compute/xla"
	"k8s.io/klog/v2"
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
	quietKlog()
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

// quietKlog stops go-xla's klog warnings (a failed dlopen logs one before
// returning its error): the error is reported once, as one line.
func quietKlog() {
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	fs.Set("logtostderr", "false")
	fs.Set("alsologtostderr", "false")
	fs.Set("stderrthreshold", "FATAL")
	klog.SetOutput(io.Discard)
}
