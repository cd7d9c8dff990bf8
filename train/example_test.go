package train_test

import (
	"context"
	"fmt"
	"os"

	"github.com/emopipe/emopipe/model"
	"github.com/emopipe/emopipe/train"
)

// Training a tiny EMO model from a store packed with
// `emopipe pack ... --seq-len 129 --tokenizer dolma2-8k`, evaluating on a
// held-out store. Running it again resumes from the store's state.
func Example() {
	cfg := train.DefaultConfig()
	cfg.Store, cfg.EvalStore = "/data/emo-store", "/data/emo-heldout"
	cfg.Model = model.Tiny()
	cfg.Model.VocabSize = 0 // from the store
	cfg.Steps, cfg.Batch, cfg.Accum = 300, 16, 2
	cfg.Progress = os.Stderr
	res, err := train.Run(context.Background(), cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("step %d, held-out loss %.3f, %.0f tokens/s\n", res.Steps, res.Eval.Loss, res.TokensPerSec)
}
