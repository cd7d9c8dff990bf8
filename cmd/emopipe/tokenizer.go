package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/emopipe/emopipe/tokenize"
)

// loadTokenizer takes a bundled name or a tokenizer.json path.
func loadTokenizer(name string) (*tokenize.Tokenizer, error) {
	if name == "" {
		name = "dolma2"
	}
	if strings.ContainsAny(name, "/.") {
		return tokenize.Load(name)
	}
	return tokenize.Bundled(name)
}

func newTokenizerCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "tokenizer", Short: "Bundled tokenizers: list, export, encode"}
	cmd.AddCommand(&cobra.Command{
		Use:   "export NAME FILE",
		Short: "Write a bundled tokenizer as a Hugging Face tokenizer.json",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			tok, err := loadTokenizer(args[0])
			if err != nil {
				return err
			}
			b, err := tok.MarshalJSON()
			if err != nil {
				return err
			}
			return os.WriteFile(args[1], b, 0o644)
		},
	}, &cobra.Command{
		Use:   "encode NAME TEXT",
		Short: "Print the token ids of TEXT",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			tok, err := loadTokenizer(args[0])
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), tok.Encode(args[1]))
			return nil
		},
	}, &cobra.Command{
		Use:   "list",
		Short: "List bundled tokenizers",
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, n := range tokenize.BundledNames() {
				fmt.Fprintln(cmd.OutOrStdout(), n)
			}
			return nil
		},
	})
	return cmd
}
