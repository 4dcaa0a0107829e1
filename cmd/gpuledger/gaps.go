package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"github.com/gpuledger/gpuledger/proto/gpuledger/v1/gpuledgerv1grpc"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func gapsCmd(c *cli) *cobra.Command {
	var kinds []string
	var minSev, serial, participant, country, asOf string
	var resolved, watch bool
	var limit int
	cmd := &cobra.Command{
		Use:   "gaps [--kind K]... [--min-severity S] [--serial S] [--participant P] [--country CC] [--as-of T] [--resolved] [--watch]",
		Short: "list the findings: gaps in custody that suggest diversion",
		Long: `gaps lists findings: shipments never confirmed (HANDOFF_UNCONFIRMED), receipts by
the wrong party (RECEIVER_MISMATCH), custody breaks, silent GPUs (SILENT),
restricted destinations, missing licences, unregistered consignees, impossible
travel, activity after destruction, reported losses, attestations from the
wrong place, short stops in transshipment hubs (TRANSSHIPMENT_HUB), rapid
resale (RAPID_RESALE), datacentres selling on what they never installed
(DATACENTRE_RESALE), and keys that regulators added to a participant without
its signature (KEY_ADDED_BY_REGULATOR, a finding about participants, not a
serial).

--as-of T shows the findings as they stood at T (default now), by event
time: a finding is listed when it arose at or before T and nothing at or
before T resolved it (a shipment received after T is still unconfirmed at
T). With --resolved, findings resolved at or before T are listed too.
--country files findings where they point: a shipment's destination for
findings about it, else where the event happened.
--watch streams new findings as they arise instead.

Kinds and severities may be given in any case without their prefixes, for
example --kind silent --kind handoff_unconfirmed --min-severity high.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var ks []pb.FindingKind
			for _, k := range kinds {
				v, ok := pb.FindingKind_value["FINDING_KIND_"+strings.ToUpper(k)]
				if !ok || v == 0 {
					return fmt.Errorf("--kind %q: want one of %s", k, kindNames())
				}
				ks = append(ks, pb.FindingKind(v))
			}
			var sev pb.Severity
			if minSev != "" {
				v, ok := pb.Severity_value["SEVERITY_"+strings.ToUpper(minSev)]
				if !ok || v == 0 {
					return fmt.Errorf("--min-severity %q: want low, medium, high or critical", minSev)
				}
				sev = pb.Severity(v)
			}
			if watch {
				return c.watchGaps(cmd.Context(), ks, sev)
			}
			req := &pb.ListFindingsRequest{Kinds: ks, MinSeverity: sev, Serial: serial, Participant: participant,
				Country: strings.ToUpper(country), IncludeResolved: resolved, PageSize: int32(min(limit, 1000))}
			if asOf != "" {
				t, err := time.Parse(time.RFC3339, asOf)
				if err != nil {
					return fmt.Errorf("--as-of %q: want RFC 3339, e.g. 2026-12-01T00:00:00Z", asOf)
				}
				req.AsOf = timestamppb.New(t)
			}
			var all []*pb.Finding
			for {
				var r *pb.ListFindingsResponse
				if err := c.call(cmd.Context(), func(ctx context.Context, conn *grpc.ClientConn) (err error) {
					r, err = gpuledgerv1grpc.NewAuditServiceClient(conn).ListFindings(ctx, req)
					return err
				}); err != nil {
					return err
				}
				all = append(all, r.GetFindings()...)
				if req.PageToken = r.GetNextPageToken(); req.PageToken == "" || len(all) >= limit {
					break
				}
			}
			more := req.PageToken != "" || len(all) > limit
			if len(all) > limit {
				all = all[:limit]
			}
			if c.json() {
				return c.printJSON(&pb.ListFindingsResponse{Findings: all, NextPageToken: req.GetPageToken()})
			}
			w := c.table()
			fmt.Fprintln(w, "ID\tKIND\tSEVERITY\tSERIAL\tWHEN\tCOUNTRY\tSUMMARY")
			for _, f := range all {
				printFinding(w, f)
			}
			if err := w.Flush(); err != nil {
				return err
			}
			if more {
				fmt.Fprintf(c.errOut, "%s shown; more match (raise --limit, or narrow with --kind, --serial, --country)\n", plural(len(all), "finding"))
			} else {
				fmt.Fprintf(c.errOut, "%s\n", plural(len(all), "finding"))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&kinds, "kind", nil, "only this kind (repeatable)")
	f.StringVar(&minSev, "min-severity", "", "only findings at least this severe: low, medium, high, critical")
	f.StringVar(&serial, "serial", "", "only this serial")
	f.StringVar(&participant, "participant", "", "only findings involving this participant")
	f.StringVar(&country, "country", "", "only findings located in this country")
	f.StringVar(&asOf, "as-of", "", "judge time-based findings at this instant, RFC 3339 (default now)")
	f.BoolVar(&resolved, "resolved", false, "include findings a later event resolved")
	f.BoolVar(&watch, "watch", false, "stream new findings until interrupted")
	f.IntVar(&limit, "limit", 1000, "at most this many findings")
	return cmd
}

func kindNames() string {
	var names []string
	for i := 1; i < len(pb.FindingKind_name); i++ {
		names = append(names, strings.ToLower(strings.TrimPrefix(pb.FindingKind(i).String(), "FINDING_KIND_")))
	}
	return strings.Join(names, ", ")
}

func printFinding(w io.Writer, f *pb.Finding) {
	id := f.GetId()
	if f.GetResolved() {
		id += fmt.Sprintf(" (resolved by %d)", f.GetResolvedByIndex())
	}
	fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", id, trimEnum(f.GetKind().String(), "FINDING_KIND_"), trimEnum(f.GetSeverity().String(), "SEVERITY_"),
		f.GetSerial(), f.GetTime().AsTime().UTC().Format(time.RFC3339), dash(f.GetCountry()), f.GetSummary())
}

func (c *cli) watchGaps(ctx context.Context, kinds []pb.FindingKind, sev pb.Severity) error {
	conn, err := c.dial()
	if err != nil {
		return err
	}
	stream, err := gpuledgerv1grpc.NewAuditServiceClient(conn).WatchFindings(ctx, &pb.WatchFindingsRequest{Kinds: kinds, MinSeverity: sev})
	if err != nil {
		return err
	}
	fmt.Fprintln(c.errOut, "watching for findings; interrupt to stop")
	for {
		r, err := stream.Recv()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if status.Code(err) == codes.Unavailable {
				return fmt.Errorf("the node at %s closed the stream (it stopped or restarted); run gaps --watch again to resume", c.node)
			}
			return err
		}
		if c.json() { // JSON Lines: one finding a line
			b, err := protojson.Marshal(r.GetFinding())
			if err != nil {
				return err
			}
			fmt.Fprintf(c.out, "%s\n", b)
			continue
		}
		printFinding(c.out, r.GetFinding())
	}
}
