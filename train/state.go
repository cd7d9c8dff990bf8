package train

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/emopipe/emopipe/packing/store"
)

// Trainer state lives in the store under these entries, written together
// in ONE store transaction after the checkpoint file they reference is
// durable: a kill at any moment leaves the old state (and its file, which
// is kept) or the new one.
const (
	stateKey   = "train"
	historyKey = "train/history"
)

// stateVersion is bumped when State's meaning changes.
const stateVersion = 1

// State is the trainer's resume point.
type State struct {
	Version int `json:"version"`
	// Step is the number of optimizer steps done.
	Step int `json:"step"`
	// Cursor is the data position of the next step's first sequence.
	Cursor store.Cursor `json:"cursor"`
	// Tokens counts real tokens trained on.
	Tokens int64 `json:"tokens"`
	// Checkpoint holds weights and optimizer moments after Step steps;
	// Previous is the one before (kept on disk too).
	Checkpoint CheckpointRef  `json:"checkpoint"`
	Previous   *CheckpointRef `json:"previous,omitempty"`
	// Run is every setting that shapes the losses; a resume must match it.
	Run runKey `json:"run"`
	// Params is the model's parameter count (informational).
	Params int64 `json:"params"`
}

// CheckpointRef names a checkpoint file under the checkpoint directory.
type CheckpointRef struct {
	File   string `json:"file"`
	SHA256 string `json:"sha256"`
	Bytes  int64  `json:"bytes"`
	Step   int    `json:"step"`
}

// History is the per-step record kept with the state ("losses so far").
type History struct {
	// Loss is the total objective (CE + weighted aux) of each step; CE its
	// cross-entropy. Values are float32 results widened to float64, so
	// equal runs give equal values bit for bit.
	Loss []float64 `json:"loss"`
	CE   []float64 `json:"ce"`
	// Evals are the held-out evaluations so far.
	Evals []EvalResult `json:"evals,omitempty"`
}

func (h History) clone() History {
	return History{Loss: append([]float64(nil), h.Loss...), CE: append([]float64(nil), h.CE...),
		Evals: append([]EvalResult(nil), h.Evals...)}
}

// LoadState reads the trainer state of st (nil if it has none).
func LoadState(st *store.Store) (*State, *History, error) {
	b, err := st.State(stateKey)
	if err != nil {
		return nil, nil, fmt.Errorf("train: read state: %w", err)
	}
	if b == nil {
		return nil, nil, nil
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, nil, fmt.Errorf("train: decode state: %w", err)
	}
	if s.Version != stateVersion {
		return nil, nil, fmt.Errorf("train: state version %d, this build reads %d", s.Version, stateVersion)
	}
	var h History
	if hb, err := st.State(historyKey); err != nil {
		return nil, nil, fmt.Errorf("train: read history: %w", err)
	} else if hb != nil {
		if err := json.Unmarshal(hb, &h); err != nil {
			return nil, nil, fmt.Errorf("train: decode history: %w", err)
		}
	}
	return &s, &h, nil
}

// commitState writes state and history in one store transaction and syncs.
func commitState(st *store.Store, s State, h History) error {
	sb, err := json.Marshal(s)
	if err != nil {
		return err
	}
	hb, err := json.Marshal(h)
	if err != nil {
		return err
	}
	if _, err := st.Commit(&store.Batch{State: map[string][]byte{stateKey: sb, historyKey: hb}}); err != nil {
		return fmt.Errorf("train: commit state: %w", err)
	}
	return st.Sync()
}

// diffKeys names the first setting in which two runs differ, as
// "model.n_layers: 2 in the store, 4 requested".
func diffKeys(stored, want runKey) string {
	a, b := flatJSON(stored), flatJSON(want)
	keys := map[string]bool{}
	for k := range a {
		keys[k] = true
	}
	for k := range b {
		keys[k] = true
	}
	sorted := make([]string, 0, len(keys))
	for k := range keys {
		sorted = append(sorted, k)
	}
	sort.Strings(sorted)
	for _, k := range sorted {
		if a[k] != b[k] {
			va, vb := a[k], b[k]
			if va == "" {
				va = "unset"
			}
			if vb == "" {
				vb = "unset"
			}
			return fmt.Sprintf("%s: %s in the store, %s requested", k, va, vb)
		}
	}
	return ""
}

func flatJSON(v any) map[string]string {
	b, _ := json.Marshal(v)
	var m any
	_ = json.Unmarshal(b, &m)
	out := map[string]string{}
	var walk func(prefix string, x any)
	walk = func(prefix string, x any) {
		switch t := x.(type) {
		case map[string]any:
			for k, v := range t {
				walk(strings.TrimPrefix(prefix+"."+k, "."), v)
			}
		default:
			j, _ := json.Marshal(t)
			out[prefix] = string(j)
		}
	}
	walk("", m)
	return out
}
