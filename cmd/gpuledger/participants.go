package main

import (
	"context"
	"fmt"

	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"github.com/gpuledger/gpuledger/proto/gpuledger/v1/gpuledgerv1grpc"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
)

func participantsCmd(c *cli) *cobra.Command {
	return &cobra.Command{
		Use:   "participants [ID]",
		Short: "list the registered participants, or show one with its keys and sites",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rc := func(conn *grpc.ClientConn) gpuledgerv1grpc.RegistryServiceClient {
				return gpuledgerv1grpc.NewRegistryServiceClient(conn)
			}
			if len(args) == 1 {
				var r *pb.GetParticipantResponse
				if err := c.call(cmd.Context(), func(ctx context.Context, conn *grpc.ClientConn) (err error) {
					r, err = rc(conn).GetParticipant(ctx, &pb.GetParticipantRequest{Id: args[0]})
					return err
				}); err != nil {
					return err
				}
				if c.json() {
					return c.printJSON(r)
				}
				return c.printParticipant(r.GetParticipant())
			}
			all := &pb.ListParticipantsResponse{}
			req := &pb.ListParticipantsRequest{PageSize: 1000}
			for {
				var r *pb.ListParticipantsResponse
				if err := c.call(cmd.Context(), func(ctx context.Context, conn *grpc.ClientConn) (err error) {
					r, err = rc(conn).ListParticipants(ctx, req)
					return err
				}); err != nil {
					return err
				}
				all.Participants = append(all.Participants, r.GetParticipants()...)
				if req.PageToken = r.GetNextPageToken(); req.PageToken == "" {
					break
				}
			}
			if c.json() {
				return c.printJSON(all)
			}
			w := c.table()
			fmt.Fprintln(w, "ID\tROLE\tCOUNTRY\tKEYS\tSITES\tSTATUS\tNAME")
			for _, p := range all.GetParticipants() {
				active := 0
				for _, k := range p.GetKeys() {
					if k.GetRevokedAtIndex() == 0 {
						active++
					}
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%d active of %d\t%d\t%s\t%s\n", p.GetId(), trimEnum(p.GetRole().String(), "ROLE_"), p.GetCountry(),
					active, len(p.GetKeys()), len(p.GetSites()), participantStatus(p), safeText(p.GetDisplayName()))
			}
			return w.Flush()
		},
	}
}

func participantStatus(p *pb.Participant) string {
	if i := p.GetSuspendedAtIndex(); i != 0 {
		return fmt.Sprintf("suspended from entry %d", i)
	}
	return "active"
}

func (c *cli) printParticipant(p *pb.Participant) error {
	w := c.table()
	fmt.Fprintf(w, "id\t%s\n", p.GetId())
	fmt.Fprintf(w, "name\t%s\n", safeText(p.GetDisplayName()))
	fmt.Fprintf(w, "role\t%s\n", trimEnum(p.GetRole().String(), "ROLE_"))
	fmt.Fprintf(w, "country\t%s\n", p.GetCountry())
	fmt.Fprintf(w, "status\t%s\n", participantStatus(p))
	if p.GetRequireHybrid() {
		fmt.Fprintf(w, "signatures\thybrid: Ed25519 and ML-DSA-65 on everything\n")
	}
	for _, s := range p.GetSites() {
		coords := ""
		if s.LatitudeE6 != nil && s.LongitudeE6 != nil {
			coords = fmt.Sprintf(" at %s,%s", microDegrees(s.GetLatitudeE6()), microDegrees(s.GetLongitudeE6()))
		}
		fmt.Fprintf(w, "site\t%s (%s)%s %s\n", s.GetId(), s.GetCountry(), coords, safeText(s.GetDescription()))
	}
	for _, k := range p.GetKeys() {
		state := fmt.Sprintf("active from entry %d", k.GetActiveFromIndex())
		if r := k.GetRevokedAtIndex(); r != 0 {
			state += fmt.Sprintf(", revoked at entry %d", r)
		}
		fmt.Fprintf(w, "key\t%s %s (%s)\n", k.GetKeyId(), trimEnum(k.GetScheme().String(), "KEY_SCHEME_"), state)
	}
	return w.Flush()
}

// microDegrees prints micro-degrees as exact decimal degrees.
func microDegrees(v int32) string {
	sign := ""
	if v < 0 {
		sign, v = "-", -v
	}
	return fmt.Sprintf("%s%d.%06d", sign, v/1_000_000, v%1_000_000)
}
