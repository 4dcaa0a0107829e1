package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/gpuledger/gpuledger/verify"
	"github.com/spf13/cobra"
)

func verifyCmd(c *cli) *cobra.Command {
	var genesis, trustDir string
	cmd := &cobra.Command{
		Use:   "verify --genesis FILE SERIAL",
		Short: "verify a GPU's custody chain on this machine, trusting only the genesis",
		Long: `verify checks a serial without trusting the node: the checkpoint must be signed
by a node key listed in the genesis, for this ledger; the registry is rebuilt
from the genesis and the log's registry-change entries, each verified; then
every entry of the serial must carry valid signatures by active keys of its
actor, link to the previous one from MANUFACTURED on, be included in the
checkpoint, and carry exactly the flags the custody rules give. It prints the
custody story and exits 0 only when everything holds.

verify keeps the last checkpoint it verified for each ledger in --trust-dir
and asks the node to prove (RFC 6962 consistency) that its new checkpoint
extends it: a node that shows a rewritten or forked history fails loudly,
with FORK.

The genesis is --genesis, else $GPULEDGER_GENESIS (a dev node's is
DIR/genesis.json).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if genesis == "" {
				genesis = os.Getenv("GPULEDGER_GENESIS")
			}
			if genesis == "" {
				return fmt.Errorf("--genesis FILE is required: the genesis you trust (a dev node's is DIR/genesis.json)")
			}
			g, err := os.ReadFile(genesis)
			if err != nil {
				return fmt.Errorf("--genesis: %w", err)
			}
			v, err := verify.New(g)
			if err != nil {
				return err
			}
			conn, err := c.dial()
			if err != nil {
				return err
			}
			ctx, cancel := c.ctx(cmd.Context())
			defer cancel()
			rep, err := v.Serial(ctx, verify.NewClient(conn), args[0], &verify.TrustStore{Dir: trustDir})
			if err != nil {
				var f *verify.Failure
				var fork *verify.ForkError
				if errors.As(err, &f) || errors.As(err, &fork) {
					fmt.Fprintf(c.out, "FAILED %s: %v\n", args[0], err)
					return errSilent
				}
				return err
			}
			fmt.Fprintf(c.out, "OK %s: %d entries verified against checkpoint size %d signed by %v\n", rep.Serial, len(rep.Entries), rep.Checkpoint.Size, rep.Checkpoint.Signers)
			if rep.Trusted != nil {
				fmt.Fprintf(c.out, "  the checkpoint extends the one verified before (size %d): consistency proved\n", rep.Trusted.Size)
			} else {
				fmt.Fprintf(c.out, "  first checkpoint of this ledger seen here; trusted from now on (%s)\n", trustDir)
			}
			for _, line := range rep.Story() {
				fmt.Fprintln(c.out, "  "+line)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&genesis, "genesis", "", "the trusted genesis file (env GPULEDGER_GENESIS)")
	cmd.Flags().StringVar(&trustDir, "trust-dir", verify.DefaultTrustDir(), "where the last verified checkpoint of each ledger is kept (env GPULEDGER_TRUST_DIR)")
	return cmd
}
