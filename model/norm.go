package model

import (
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	gmodel "github.com/gomlx/gomlx/ml/model"
	"github.com/gomlx/gomlx/ml/model/initializer"
)

// rmsNorm is OLMo-core's RMSNorm: weight * x / sqrt(mean(x²) + eps), with a
// learned per-channel weight (initialised to 1) and no bias. 1/Sqrt instead of
// Rsqrt: the go backend has no gradient for Rsqrt.
func rmsNorm(s *gmodel.Scope, x *Node, eps float64) *Node {
	d := x.Shape().Dim(-1)
	w := s.WithInitializer(initializer.One).
		VariableWithShape("weight", shapes.Make(x.DType(), d)).NodeValue(x.Graph()) // [d]
	meanSq := ReduceAndKeep(Square(x), ReduceMean, -1) // [..., 1]
	y := Div(x, Sqrt(AddScalar(meanSq, eps)))          // [..., d]
	return Mul(y, ExpandLeftToRank(w, y.Rank()))
}
