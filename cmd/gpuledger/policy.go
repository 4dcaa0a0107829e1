package main

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/gpuledger/gpuledger/ledger/gaps"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"github.com/gpuledger/gpuledger/proto/gpuledger/v1/gpuledgerv1grpc"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
)

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
			fmt.Fprintf(w, "handoff window\t%s\n", gaps.Days(p.GetHandoffWindow().AsDuration()))
			fmt.Fprintf(w, "silence\t%s installed, %s otherwise\n", gaps.Days(p.GetSilenceInstalled().AsDuration()), gaps.Days(p.GetSilenceInCustody().AsDuration()))
			fmt.Fprintf(w, "max speed\t%d km/h\n", p.GetMaxSpeedKmh())
			fmt.Fprintf(w, "clock skew\t%s\n", p.GetClockSkew().AsDuration())
			if p.HubDwell != nil {
				fmt.Fprintf(w, "hub dwell\t%s\n", gaps.Days(p.GetHubDwell().AsDuration()))
			}
			if p.GetMaxCustodyChanges() != 0 || p.ResaleWindow != nil {
				fmt.Fprintf(w, "rapid resale\tmore than %d custodians within %s\n", p.GetMaxCustodyChanges(), gaps.Days(p.GetResaleWindow().AsDuration()))
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
