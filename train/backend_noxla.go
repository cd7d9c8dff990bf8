//go:build !cgo

package train

import (
	"errors"

	"github.com/gomlx/compute"
)

// newXLA: the xla backend loads its PJRT plugin through cgo.
func newXLA(string) (compute.Backend, error) {
	return nil, errors.New("train: backend xla: this emopipe was built without cgo (CGO_ENABLED=0); rebuild with cgo to load PJRT plugins")
}
