package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/gpuledger/gpuledger/crypto/dsse"
	"github.com/gpuledger/gpuledger/crypto/keys"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"github.com/gpuledger/gpuledger/proto/gpuledger/v1/gpuledgerv1grpc"
	"github.com/spf13/cobra"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func registryCmd(c *cli) *cobra.Command {
	cmd := &cobra.Command{Use: "registry", Short: "change the registry of a running ledger (regulators)"}
	var key, name, operator, vkey, reason string
	addNode := &cobra.Command{
		Use:   "add-node --key REGULATOR.key --name NAME --participant ID --verifier-key KEY [--reason TEXT]",
		Short: "add a checkpoint-signing node to the registry, so that it may join the cluster",
		Long: `add-node signs, with a REGULATOR's key, a registry change that adds a node
(its name, the participant that operates it and its signed-note verifier key,
from "gpuledger nodekey") and submits it. From that entry on the node's
checkpoint signatures count, and "gpuledgerd serve --join" admits it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if key == "" || name == "" || operator == "" || vkey == "" {
				return fmt.Errorf("--key, --name, --participant and --verifier-key are required")
			}
			ks, err := keys.ReadFile(key)
			if err != nil {
				return err
			}
			if vkey, err = readVerifierKey(vkey); err != nil {
				return err
			}
			ch := &pb.RegistryChange{Actor: ks.Participant, OccurredAt: timestamppb.New(time.Now().UTC()), Reason: reason,
				Change: &pb.RegistryChange_AddNode{AddNode: &pb.Node{Name: name, ParticipantId: operator, VerifierKey: vkey}}}
			env, err := dsse.SignMessage(dsse.RegistryChangeType, ch, ks.Signers()...)
			if err != nil {
				return err
			}
			var r *pb.AppendResponse
			if err := c.call(cmd.Context(), func(ctx context.Context, conn *grpc.ClientConn) (err error) {
				r, err = gpuledgerv1grpc.NewLedgerServiceClient(conn).Append(ctx, &pb.AppendRequest{Envelope: env})
				return err
			}); err != nil {
				return err
			}
			return c.printReceipt(r.GetReceipt())
		},
	}
	f := addNode.Flags()
	f.StringVar(&key, "key", "", "a REGULATOR's private key file")
	f.StringVar(&name, "name", "", "node name (the name in its note key)")
	f.StringVar(&operator, "participant", "", "participant that operates the node")
	f.StringVar(&vkey, "verifier-key", "", "node verifier key, or a file holding it (nodekey's FILE.pub)")
	f.StringVar(&reason, "reason", "", "why, for the record (a decision reference)")
	cmd.AddCommand(addNode)
	return cmd
}

// readVerifierKey takes a signed-note verifier key, or a file holding one.
func readVerifierKey(s string) (string, error) {
	if b, err := os.ReadFile(s); err == nil {
		s = strings.TrimSpace(string(b))
	}
	if _, err := note.NewVerifier(s); err != nil {
		return "", fmt.Errorf("--verifier-key: %w (give the node's <name>+<hash>+<key> text or a file holding it)", err)
	}
	return s, nil
}
