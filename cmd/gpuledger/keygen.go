package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/gpuledger/gpuledger/crypto/keys"
	"github.com/spf13/cobra"
)

func keygenCmd(c *cli) *cobra.Command {
	var participant, scheme, out string
	cmd := &cobra.Command{
		Use:   "keygen --participant ID --out FILE [--scheme ed25519|ml-dsa-65|hybrid]",
		Short: "make a participant's key set",
		Long: `keygen makes a key set and writes the private key file FILE (mode 0600; it
refuses to overwrite one) and the public keys to FILE.pub, one line per key,
for the genesis or a registry change. A hybrid set holds an Ed25519 and an
ML-DSA-65 key and signs with both.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var schemes []keys.Scheme
			switch strings.ToLower(scheme) {
			case "ed25519":
				schemes = []keys.Scheme{keys.Ed25519}
			case "ml-dsa-65", "mldsa65":
				schemes = []keys.Scheme{keys.MLDSA65}
			case "hybrid":
				schemes = []keys.Scheme{keys.Ed25519, keys.MLDSA65}
			default:
				return fmt.Errorf("--scheme %q: want ed25519, ml-dsa-65 or hybrid", scheme)
			}
			if out == "" {
				return fmt.Errorf("--out is required: where to write the private key file")
			}
			ks, err := keys.Generate(participant, nil, schemes...)
			if err != nil {
				return err
			}
			if err := ks.WriteFile(out); err != nil {
				return err
			}
			var pubs []string
			for _, pk := range ks.PublicKeys() {
				pubs = append(pubs, pk.String())
			}
			if err := os.WriteFile(out+".pub", []byte(strings.Join(pubs, "\n")+"\n"), 0o644); err != nil {
				return err
			}
			for _, s := range ks.Signers() {
				fmt.Fprintf(c.out, "%s key %s\n", s.Scheme(), s.KeyID())
			}
			fmt.Fprintf(c.out, "private key: %s (mode 0600)\npublic keys: %s.pub\n", out, out)
			return nil
		},
	}
	cmd.Flags().StringVar(&participant, "participant", "", "participant id the keys belong to (recorded in the key file)")
	cmd.Flags().StringVar(&scheme, "scheme", "ed25519", "ed25519, ml-dsa-65 or hybrid")
	cmd.Flags().StringVar(&out, "out", "", "private key file to write")
	return cmd
}
