package main

import (
	"fmt"
	"os"

	"github.com/gpuledger/gpuledger/node"
	"github.com/spf13/cobra"
)

func serveCmd() *cobra.Command {
	var c common
	var genesis, nodeKey string
	cmd := &cobra.Command{
		Use:   "serve --data DIR --genesis FILE --node-key FILE [--listen ADDR]",
		Short: "serve a node of an existing consortium",
		Long: `serve runs a node of a consortium whose genesis file and node key you have.
The node key is a signed-note private key (PRIVATE+KEY+<name>+...) whose name
is the node's name and whose verifier key is listed in the genesis; the file
must have mode 0600. The genesis is needed on first start; later starts check
it against the store.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			log, err := c.logger()
			if err != nil {
				return err
			}
			if nodeKey == "" {
				return fmt.Errorf("--node-key is required")
			}
			signer, err := readNodeKey(nodeKey)
			if err != nil {
				return err
			}
			var g []byte
			if genesis != "" {
				if g, err = os.ReadFile(genesis); err != nil {
					return fmt.Errorf("--genesis: %w", err)
				}
			}
			cfg := node.DefaultConfig(signer.Name(), c.data)
			cfg.Genesis, cfg.NodeSigner = g, signer
			return serve(cmd.Context(), &c, log, cfg, func(addr string) {
				fmt.Fprintf(cmd.OutOrStdout(), "gpuledger node %s serving on %s\n", cfg.Name, addr)
			})
		},
	}
	c.flags(cmd, "gpuledger-data")
	cmd.Flags().StringVar(&genesis, "genesis", "", "genesis file (protojson); required on first start")
	cmd.Flags().StringVar(&nodeKey, "node-key", "", "node key file (signed-note private key, mode 0600)")
	return cmd
}
