package tokenize_test

import (
	"fmt"

	"github.com/emopipe/emopipe/tokenize"
)

func ExampleBundled() {
	tk, err := tokenize.Bundled("") // dolma2
	if err != nil {
		panic(err)
	}
	ids := tk.Encode("Hello world!<|endoftext|>")
	eos, _ := tk.EOS()
	fmt.Println(tk.Name(), ids, eos)
	fmt.Printf("%q\n", tk.Decode(ids))
	// Output:
	// dolma2 [9906 1917 0 100257] 100257
	// "Hello world!<|endoftext|>"
}
