package model

import (
	"testing"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
)

func benchMM(b *testing.B, f func(x, w *Node) *Node, wdims ...int) {
	be := backend(b)
	x := tensors.FromShape(shapes.Make(dtypes.Float32, 1024, 256))
	w := tensors.FromShape(shapes.Make(dtypes.Float32, wdims...))
	e := MustNewExec(be, func(x, w *Node) *Node { return ReduceAllSum(f(x, w)) })
	e.MustExec(x, w)
	b.ResetTimer()
	for range b.N {
		e.MustExec(x, w)
	}
}

func BenchmarkZMM3x256(b *testing.B) {
	benchMM(b, func(x, w *Node) *Node {
		s := ScalarZero(x.Graph(), dtypes.Float32)
		for i := 0; i < 3; i++ {
			wi := SliceAxis(w, 0, AxisRange(i*256, (i+1)*256))
			s = Add(s, ReduceAllSum(DotGeneral(x, []int{1}, nil, wi, []int{1}, nil)))
		}
		return s
	}, 768, 256)
}
func BenchmarkZMM1x768(b *testing.B) {
	benchMM(b, func(x, w *Node) *Node { return DotGeneral(x, []int{1}, nil, w, []int{1}, nil) }, 768, 256)
}
