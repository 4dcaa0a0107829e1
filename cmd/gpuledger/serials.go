package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"github.com/gpuledger/gpuledger/proto/gpuledger/v1/gpuledgerv1grpc"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
)

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
