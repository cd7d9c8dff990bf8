package model

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"sync"
	"testing"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/gobackend"
	"github.com/gomlx/gomlx/core/tensors"
	gmodel "github.com/gomlx/gomlx/ml/model"
)

var testBackend = sync.OnceValue(func() compute.Backend {
	b, err := gobackend.New("")
	if err != nil {
		panic(err)
	}
	return b
})

// backend returns the pure-Go backend shared by the tests.
func backend(t testing.TB) compute.Backend {
	t.Helper()
	return testBackend()
}

// jtensor is a tensor in the goldens' JSON: flat row-major data and a shape.
type jtensor struct {
	Shape []int     `json:"shape"`
	DType string    `json:"dtype"`
	Data  []float64 `json:"data"`
}

func (j *jtensor) UnmarshalJSON(b []byte) error {
	var v struct {
		Shape []int             `json:"shape"`
		DType string            `json:"dtype"`
		Data  []json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	j.Shape, j.DType = v.Shape, v.DType
	j.Data = make([]float64, len(v.Data))
	for i, r := range v.Data {
		switch string(r) {
		case "true":
			j.Data[i] = 1
		case "false":
			j.Data[i] = 0
		case `"inf"`:
			j.Data[i] = math.Inf(1)
		case `"-inf"`:
			j.Data[i] = math.Inf(-1)
		default:
			if err := json.Unmarshal(r, &j.Data[i]); err != nil {
				return err
			}
		}
	}
	return nil
}

func (j *jtensor) dims() []int {
	if len(j.Shape) == 0 {
		return nil
	}
	return j.Shape
}

// tensor converts to a GoMLX tensor of the JSON dtype (float -> float32).
func (j *jtensor) tensor() *tensors.Tensor {
	switch j.DType {
	case "int32":
		v := make([]int32, len(j.Data))
		for i, x := range j.Data {
			v[i] = int32(x)
		}
		if len(j.Shape) == 0 {
			return tensors.FromValue(v[0])
		}
		return tensors.FromFlatDataAndDimensions(v, j.Shape...)
	case "bool":
		v := make([]bool, len(j.Data))
		for i, x := range j.Data {
			v[i] = x != 0
		}
		return tensors.FromFlatDataAndDimensions(v, j.Shape...)
	default:
		v := make([]float32, len(j.Data))
		for i, x := range j.Data {
			v[i] = float32(x)
		}
		if len(j.Shape) == 0 {
			return tensors.FromValue(v[0])
		}
		return tensors.FromFlatDataAndDimensions(v, j.Shape...)
	}
}

func (j *jtensor) ints() []int32 {
	v := make([]int32, len(j.Data))
	for i, x := range j.Data {
		v[i] = int32(x)
	}
	return v
}

// rows returns a [B,S] int tensor as rows.
func (j *jtensor) rows() [][]int32 {
	v := j.ints()
	s := j.Shape[1]
	out := make([][]int32, j.Shape[0])
	for b := range out {
		out[b] = v[b*s : (b+1)*s]
	}
	return out
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("golden file: %v (regenerate with scripts/emo_reference/make_goldens.py)", err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// flatFloat returns a tensor's values as float64 (any numeric or bool dtype).
func flatFloat(t *tensors.Tensor) []float64 {
	var out []float64
	t.MustConstFlatData(func(flat any) {
		switch v := flat.(type) {
		case []float32:
			for _, x := range v {
				out = append(out, float64(x))
			}
		case []float64:
			out = append(out, v...)
		case []int32:
			for _, x := range v {
				out = append(out, float64(x))
			}
		case []int64:
			for _, x := range v {
				out = append(out, float64(x))
			}
		case []bool:
			for _, x := range v {
				if x {
					out = append(out, 1)
				} else {
					out = append(out, 0)
				}
			}
		default:
			panic(fmt.Sprintf("flatFloat: unsupported %T", flat))
		}
	})
	return out
}

// maxRelErr is max_i |got-want| / max(|want_i|, max_j |want_j|): the error
// relative to the tensor's scale. Element-wise relative error is meaningless
// for float32 values that cancel to ~0 (logits, residual outputs reach 1e-4
// there while their absolute error stays ~1e-7 of the scale). Infinities must
// match exactly; NaN is returned when sizes differ.
func maxRelErr(got, want []float64) float64 {
	if len(got) != len(want) {
		return math.NaN()
	}
	scale := 0.0
	for _, w := range want {
		if !math.IsInf(w, 0) {
			scale = max(scale, math.Abs(w))
		}
	}
	floor := max(scale, 1e-30)
	worst := 0.0
	for i := range got {
		if math.IsInf(want[i], 0) || math.IsInf(got[i], 0) {
			if got[i] != want[i] {
				return math.NaN()
			}
			continue
		}
		e := math.Abs(got[i]-want[i]) / max(math.Abs(want[i]), floor)
		if math.IsNaN(e) {
			return e
		}
		worst = max(worst, e)
	}
	return worst
}

// checkClose fails unless got matches want to rel (see maxRelErr).
func checkClose(t *testing.T, name string, got *tensors.Tensor, want *jtensor, rel float64) {
	t.Helper()
	if want.Shape != nil && !sameDims(got.Shape().Dimensions, want.Shape) {
		t.Errorf("%s: shape %v, want %v", name, got.Shape().Dimensions, want.Shape)
		return
	}
	e := maxRelErr(flatFloat(got), want.Data)
	if !(e <= rel) {
		t.Errorf("%s: max relative error %.3g > %.1g", name, e, rel)
	} else {
		t.Logf("%s: max relative error %.2g", name, e)
	}
}

// checkExact fails unless every value matches (indices, masks, counts).
func checkExact(t *testing.T, name string, got *tensors.Tensor, want *jtensor) {
	t.Helper()
	g := flatFloat(got)
	if !sameDims(got.Shape().Dimensions, want.Shape) || len(g) != len(want.Data) {
		t.Errorf("%s: shape %v, want %v", name, got.Shape().Dimensions, want.Shape)
		return
	}
	bad := 0
	for i := range g {
		if g[i] != want.Data[i] {
			if bad < 5 {
				t.Errorf("%s[%d] = %v, want %v", name, i, g[i], want.Data[i])
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d of %d values differ", name, bad, len(g))
	}
}

func sameDims(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// setVar creates the variable at path with the given value.
func setVar(t *testing.T, store *gmodel.Store, path string, v *tensors.Tensor) {
	t.Helper()
	if _, err := store.CreateVariable(path, v); err != nil {
		t.Fatalf("variable %s: %v", path, err)
	}
}
