package main

import (
	"context"
	"fmt"
	"os"

	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"github.com/gpuledger/gpuledger/proto/gpuledger/v1/gpuledgerv1grpc"
	"github.com/gpuledger/gpuledger/verify"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
)

func passportCmd(c *cli) *cobra.Command {
	var file string
	var k uint32
	cmd := &cobra.Command{
		Use:   "passport SERIAL --file FILE",
		Short: "save a serial's custody passport: its evidence, verifiable offline",
		Long: `passport writes one text file holding everything needed to verify a serial's
custody without the network: the genesis, the serial's entries and the
registry entries with their inclusion proofs, and the signed checkpoint they
lead to (format: the verify package's documentation, after C2SP tlog-proof).
In a cluster, --min-cosigners K makes that checkpoint one signed by nodes of K
organisations. Check it anywhere with:
gpuledger verify --passport FILE [--genesis FILE] [--min-signers K].`,
		Args: needArgs("SERIAL"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if file == "" {
				return fmt.Errorf("--file is required: where to write the passport")
			}
			var r *pb.GetCustodyPassportResponse
			if err := c.call(cmd.Context(), func(ctx context.Context, conn *grpc.ClientConn) (err error) {
				r, err = gpuledgerv1grpc.NewAuditServiceClient(conn).GetCustodyPassport(ctx, &pb.GetCustodyPassportRequest{Serial: args[0], MinCosigners: k})
				return err
			}); err != nil {
				return err
			}
			b, err := verify.FormatPassport(r.GetPassport())
			if err != nil {
				return err
			}
			if err := os.WriteFile(file, b, 0o644); err != nil {
				return err
			}
			pp := r.GetPassport()
			return c.result(fmt.Sprintf("passport of %s: %s, %s, checkpoint size %d, %d bytes: %s\n", args[0],
				plural(len(pp.GetEntries()), "entry"), plural(len(pp.GetRegistryEntries()), "registry entry"), pp.GetCheckpoint().GetSize(), len(b), file),
				map[string]any{"serial": args[0], "entries": len(pp.GetEntries()), "registryEntries": len(pp.GetRegistryEntries()),
					"checkpointSize": pp.GetCheckpoint().GetSize(), "bytes": len(b), "file": file})
		},
	}
	cmd.Flags().StringVar(&file, "file", "", "the passport file to write")
	cmd.Flags().Uint32Var(&k, "min-cosigners", 1, "the checkpoint must be signed by nodes of at least K organisations")
	return cmd
}
