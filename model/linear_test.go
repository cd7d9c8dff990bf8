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

// attnScores and attnMix give the outputs and both gradients of GoMLX's
// einsum, for Sq = Sk > dh as in the model and for dh > S.
func TestAttentionProductsMatchEinsumAndItsGradient(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, c := range []struct{ s, dh int }{{16, 4}, {3, 8}} {
		q, k, v := randTensor(r, 2, 3, c.s, c.dh), randTensor(r, 2, 3, c.s, c.dh), randTensor(r, 2, 3, c.s, c.dh)
		up := randTensor(r, 2, 3, c.s, c.dh)
		run := func(scores func(q, k *Node) *Node, mix func(p, v *Node) *Node) []*tensors.Tensor {
			return MustExecOnceN(backend(t), func(q, k, v, up *Node) []*Node {
				p := Softmax(scores(q, k), -1)
				o := mix(p, v)
				loss := Add(ReduceAllSum(Mul(o, up)), ReduceAllSum(Square(p)))
				return append([]*Node{o}, Gradient(loss, q, k, v)...)
			}, q, k, v, up)
		}
		mine := run(attnScores, attnMix)
		want := run(func(q, k *Node) *Node { return Einsum("bhqd,bhkd->bhqk", q, k) },
			func(p, v *Node) *Node { return Einsum("bhqk,bhkd->bhqd", p, v) })
		for i, name := range []string{"out", "dq", "dk", "dv"} {
			assertAllClose(t, name, mine[i], want[i], 1e-5)
		}
	}
}

// crossEntropy's written-out logit gradient equals GoMLX's gradient of the
// plain formula, for the loss mix the trainer uses (CE + w·Z), CE alone and
// Z alone, with unused positions (padding, label -1).
func TestCrossEntropyGradientMatchesAutodiff(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	logits := randTensor(r, 3, 5, 11)
	labels := tensors.FromFlatDataAndDimensions([]int32{0, 3, 10, -1, 4, 5, 5, 1, 2, 9, 7, -1, 0, 6, 8}, 3, 5)
	valid := tensors.FromFlatDataAndDimensions([]bool{true, true, true, true, true, true, true, true, false, false, true, true, true, true, true}, 3, 5)
	plain := func(logits, labels, valid *Node) (ce, z *Node) {
		g := logits.Graph()
		use := And(valid, GreaterOrEqual(labels, ScalarZero(g, labels.DType())))
		lbl := ClipScalar(labels, 0, 10)
		lse := logSumExp(logits)
		picked := Squeeze(Gather(logits, rowIndexed(InsertAxes(lbl, -1))), -1)
		uf := ConvertDType(use, logits.DType())
		n := MaxScalar(ReduceAllSum(uf), 1.0)
		return Div(ReduceAllSum(Mul(Sub(lse, picked), uf)), n), Div(ReduceAllSum(Mul(Square(lse), uf)), n)
	}
	for _, mix := range [][2]float64{{1, 1e-2}, {1, 0}, {0, 1}} {
		run := func(f func(logits, labels, valid *Node) (ce, z *Node)) []*tensors.Tensor {
			return MustExecOnceN(backend(t), func(logits, labels, valid *Node) []*Node {
				ce, z := f(logits, labels, valid)
				var loss *Node
				switch {
				case mix[1] == 0:
					loss = MulScalar(ce, mix[0])
				case mix[0] == 0:
					loss = MulScalar(z, mix[1])
				default:
					loss = Add(MulScalar(ce, mix[0]), MulScalar(z, mix[1]))
				}
				return []*Node{ce, z, Gradient(loss, logits)[0]}
			}, logits, labels, valid)
		}
		mine, want := run(crossEntropy), run(plain)
		for i, name := range []string{"ce", "z", "dlogits"} {
			assertAllClose(t, name, mine[i], want[i], 1e-5)
		}
	}
}

// The training head computed in row groups gives the loss values and the
// gradients (hidden states, LM-head weight) of the one-piece head.
func TestHeadLossInChunksMatchesOnePiece(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	hn, w := randTensor(r, 4, 3, 8), randTensor(r, 13, 8)
	labels := tensors.FromFlatDataAndDimensions([]int32{0, 3, 12, -1, 4, 5, 5, 1, 2, 9, 7, -1}, 4, 3)
	valid := tensors.FromFlatDataAndDimensions([]bool{true, true, true, true, false, true, true, true, true, true, true, true}, 4, 3)
	run := func(f func(hn, w, labels, valid *Node) (ce, z *Node)) []*tensors.Tensor {
		return MustExecOnceN(backend(t), func(hn, w, labels, valid *Node) []*Node {
			ce, z := f(hn, w, labels, valid)
			return append([]*Node{ce, z}, Gradient(Add(ce, MulScalar(z, 1e-2)), hn, w)...)
		}, hn, w, labels, valid)
	}
	mine := run(headLossInChunks)
	want := run(func(hn, w, labels, valid *Node) (ce, z *Node) { return crossEntropy(linear(hn, w), labels, valid) })
	for i, name := range []string{"ce", "z", "dhn", "dw"} {
		assertAllClose(t, name, mine[i], want[i], 1e-5)
	}
}
