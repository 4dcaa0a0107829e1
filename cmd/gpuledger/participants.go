package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

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

func policyCmd(c *cli) *cobra.Command {
	return &cobra.Command{
		Use:   "policy",
		Short: "show the export policy in force and its version",
		Long: `policy shows the export policy in force: its version, windows and thresholds,
and each country's class. -o json prints it as protojson, the form
"gpuledger registry set-policy --file" takes.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var r *pb.GetPolicyResponse
			if err := c.call(cmd.Context(), func(ctx context.Context, conn *grpc.ClientConn) (err error) {
				r, err = gpuledgerv1grpc.NewRegistryServiceClient(conn).GetPolicy(ctx, &pb.GetPolicyRequest{})
				return err
			}); err != nil {
				return err
			}
			p := r.GetPolicy()
			if c.json() {
				return c.printJSON(p)
			}
			w := c.table()
			fmt.Fprintf(w, "version\t%d (%s)\n", p.GetVersion(), safeText(p.GetName()))
			fmt.Fprintf(w, "handoff window\t%s\n", days(p.GetHandoffWindow().AsDuration()))
			fmt.Fprintf(w, "silence\t%s installed, %s otherwise\n", days(p.GetSilenceInstalled().AsDuration()), days(p.GetSilenceInCustody().AsDuration()))
			fmt.Fprintf(w, "max speed\t%d km/h\n", p.GetMaxSpeedKmh())
			fmt.Fprintf(w, "clock skew\t%s\n", p.GetClockSkew().AsDuration())
			if p.HubDwell != nil {
				fmt.Fprintf(w, "hub dwell\t%s\n", days(p.GetHubDwell().AsDuration()))
			}
			if p.GetMaxCustodyChanges() != 0 || p.ResaleWindow != nil {
				fmt.Fprintf(w, "rapid resale\tmore than %d custodians within %s\n", p.GetMaxCustodyChanges(), days(p.GetResaleWindow().AsDuration()))
			}
			byClass := map[pb.CountryClass][]string{}
			for _, r := range p.GetCountries() {
				byClass[r.GetClass()] = append(byClass[r.GetClass()], r.GetCountry())
			}
			for _, k := range []pb.CountryClass{pb.CountryClass_COUNTRY_CLASS_RESTRICTED, pb.CountryClass_COUNTRY_CLASS_LICENSED, pb.CountryClass_COUNTRY_CLASS_WATCH} {
				cs := byClass[k]
				slices.Sort(cs)
				fmt.Fprintf(w, "%s\t%s\n", strings.ToLower(className(k)), dash(strings.Join(cs, " ")))
			}
			fmt.Fprintf(w, "denied parties\t%s\n", dash(strings.Join(p.GetDeniedParties(), " ")))
			return w.Flush()
		},
	}
}

func days(d time.Duration) string {
	if d > 0 && d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%d days", d/(24*time.Hour))
	}
	return d.String()
}

func serialsCmd(c *cli) *cobra.Command {
	var custodian, state, country, model string
	var limit int
	cmd := &cobra.Command{
		Use:   "serials [--custodian ID] [--state STATE] [--country CC] [--model M] [--limit N]",
		Short: "list serials by custodian, state, country or model",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &pb.ListSerialsRequest{Custodian: custodian, Country: strings.ToUpper(country), Model: model, PageSize: int32(min(limit, 1000))}
			if state != "" {
				v, ok := pb.CustodyState_value["CUSTODY_STATE_"+strings.ToUpper(state)]
				if !ok || v == 0 {
					return fmt.Errorf("--state %q: want in_custody, in_transit, installed, destroyed or lost", state)
				}
				req.State = pb.CustodyState(v)
			}
			if limit < 1 {
				return fmt.Errorf("--limit %d: want at least 1", limit)
			}
			var all []*pb.SerialState
			more := false
			for {
				var r *pb.ListSerialsResponse
				if err := c.call(cmd.Context(), func(ctx context.Context, conn *grpc.ClientConn) (err error) {
					r, err = gpuledgerv1grpc.NewLedgerServiceClient(conn).ListSerials(ctx, req)
					return err
				}); err != nil {
					return err
				}
				all = append(all, r.GetSerials()...)
				req.PageToken = r.GetNextPageToken()
				if req.PageToken == "" || len(all) >= limit {
					more = req.PageToken != "" || len(all) > limit
					break
				}
			}
			if len(all) > limit {
				all = all[:limit]
			}
			if c.json() {
				return c.printJSON(&pb.ListSerialsResponse{Serials: all, NextPageToken: req.GetPageToken()})
			}
			w := c.table()
			fmt.Fprintln(w, "SERIAL\tSTATE\tCUSTODIAN\tLOCATION\tMODEL\tEVENTS\tLAST EVENT")
			for _, st := range all {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", st.GetSerial(), trimEnum(st.GetState().String(), "CUSTODY_STATE_"), st.GetCustodian(),
					place(st.GetLocation()), safeText(st.GetModel()), st.GetEventCount(), st.GetLastEventAt().AsTime().Format(time.RFC3339))
			}
			if err := w.Flush(); err != nil {
				return err
			}
			if more {
				fmt.Fprintf(c.errOut, "%s shown; more match (raise --limit)\n", plural(len(all), "serial"))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&custodian, "custodian", "", "only serials this participant holds")
	f.StringVar(&state, "state", "", "only serials in this state: in_custody, in_transit, installed, destroyed, lost")
	f.StringVar(&country, "country", "", "only serials whose location is in this country")
	f.StringVar(&model, "model", "", "only serials of this model")
	f.IntVar(&limit, "limit", 100, "show at most this many")
	return cmd
}
