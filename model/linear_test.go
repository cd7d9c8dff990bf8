package model

import (
	"math/rand/v2"
	"testing"

	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
)

func randTensor(r *rand.Rand, dims ...int) *tensors.Tensor {
	n := 1
	for _, d := range dims {
		n *= d
	}
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	return tensors.FromFlatDataAndDimensions(v, dims...)
}

// linear and blockLinear give the outputs and the input and weight
// gradients of GoMLX's own einsum and its gradient, for out < in, out = in
// and out > in (the two weight-gradient forms), with the output used twice
// downstream (the gradient sums both uses).
func TestLinearMatchesEinsumAndItsGradient(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, c := range []struct{ in, out int }{{16, 8}, {12, 12}, {8, 40}} {
		// linear: x [2,5,in], w [out,in]
		x, w, up := randTensor(r, 2, 5, c.in), randTensor(r, c.out, c.in), randTensor(r, 2, 5, c.out)
		grads := func(f func(x, w *Node) *Node) func(x, w, up *Node) []*Node {
			return func(x, w, up *Node) []*Node {
				y := f(x, w)
				loss := Add(ReduceAllSum(Mul(y, up)), ReduceAllSum(Square(y)))
				return append([]*Node{y}, Gradient(loss, x, w)...)
			}
		}
		mine := MustExecOnceN(backend(t), grads(linear), x, w, up)
		want := MustExecOnceN(backend(t), grads(func(x, w *Node) *Node { return Einsum("bsi,oi->bso", x, w) }), x, w, up)
		for i, name := range []string{"y", "dx", "dw"} {
			assertAllClose(t, "linear "+name, mine[i], want[i], 1e-5)
		}

		// blockLinear: x [3,4,in], w [3,out,in]
		xb, wb, ub := randTensor(r, 3, 4, c.in), randTensor(r, 3, c.out, c.in), randTensor(r, 3, 4, c.out)
		mine = MustExecOnceN(backend(t), grads(blockLinear), xb, wb, ub)
		want = MustExecOnceN(backend(t), grads(func(x, w *Node) *Node { return Einsum("nbi,noi->nbo", x, w) }), xb, wb, ub)
		for i, name := range []string{"y", "dx", "dw"} {
			assertAllClose(t, "blockLinear "+name, mine[i], want[i], 1e-5)
		}
	}
}
