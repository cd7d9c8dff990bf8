package tokenize

import (
	"os"
	"path/filepath"
	"testing"
)

// TestExportBundled writes the bundled tokenizers as tokenizer.json files for
// scripts/tokenizer/make_goldens.py, which loads them in Hugging Face tokenizers.
// It runs only when EMOPIPE_TOKENIZE_EXPORT names a directory.
func TestExportBundled(t *testing.T) {
	dir := os.Getenv("EMOPIPE_TOKENIZE_EXPORT")
	if dir == "" {
		t.Skip("set EMOPIPE_TOKENIZE_EXPORT=dir to export the bundled tokenizers")
	}
	for _, name := range BundledNames() {
		tk, err := Bundled(name)
		if err != nil {
			t.Fatal(err)
		}
		js, err := tk.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name+".json"), js, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
