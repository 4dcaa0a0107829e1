package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"github.com/gpuledger/gpuledger/proto/gpuledger/v1/gpuledgerv1grpc"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
)

func serialCmd(c *cli) *cobra.Command {
	return &cobra.Command{
		Use:   "serial SERIAL",
		Short: "show a GPU's current state: custodian, location, head",
		Args:  needArgs("SERIAL"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var r *pb.GetSerialResponse
			if err := c.call(cmd.Context(), func(ctx context.Context, conn *grpc.ClientConn) (err error) {
				r, err = gpuledgerv1grpc.NewLedgerServiceClient(conn).GetSerial(ctx, &pb.GetSerialRequest{Serial: args[0]})
				return err
			}); err != nil {
				return err
			}
			if c.json() {
				return c.printJSON(r)
			}
			st := r.GetSerial()
			w := c.table()
			fmt.Fprintf(w, "serial\t%s\n", st.GetSerial())
			fmt.Fprintf(w, "state\t%s\n", trimEnum(st.GetState().String(), "CUSTODY_STATE_"))
			fmt.Fprintf(w, "custodian\t%s\n", st.GetCustodian())
			fmt.Fprintf(w, "location\t%s\n", place(st.GetLocation()))
			fmt.Fprintf(w, "model\t%s %s\n", safeText(st.GetModel()), safeText(st.GetEccn()))
			fmt.Fprintf(w, "manufacturer\t%s\n", st.GetManufacturer())
			if sh := st.GetOpenShipment(); sh != nil {
				fmt.Fprintf(w, "open shipment\t%s -> %s (bound for %s, entry %d, %s)\n", sh.GetShipper(), sh.GetConsignee(), sh.GetDestinationCountry(), sh.GetShippedIndex(), sh.GetShippedAt().AsTime().Format(time.RFC3339))
			}
			if s := st.GetInstallSite(); s != nil {
				fmt.Fprintf(w, "installed at\t%s\n", place(s))
			}
			for _, cl := range st.GetClaims() {
				fmt.Fprintf(w, "DISPUTED\t%s claims to have received it at %s on %s (entry %d); the record gives it to %s\n", cl.GetClaimant(), place(cl.GetLocation()),
					cl.GetClaimedAt().AsTime().Format(time.RFC3339), cl.GetIndex(), holderOf(st))
			}
			if h := st.GetHubArrival(); h != nil {
				fmt.Fprintf(w, "in a hub\tarrived in %s (a watched transshipment hub) on %s, entry %d\n", h.GetCountry(), h.GetReceivedAt().AsTime().Format(time.RFC3339), h.GetIndex())
			}
			fmt.Fprintf(w, "events\t%d (entries %d to %d)\n", st.GetEventCount(), st.GetFirstIndex(), st.GetLastIndex())
			fmt.Fprintf(w, "custodian's last word\t%s (entry %d); SILENT runs from here\n", st.GetCustodyAt().AsTime().Format(time.RFC3339), st.GetCustodyIndex())
			fmt.Fprintf(w, "last event\t%s\n", st.GetLastEventAt().AsTime().Format(time.RFC3339))
			fmt.Fprintf(w, "head\t%x\n", st.GetHeadHash())
			for _, f := range st.GetOpenFindings() {
				fmt.Fprintf(w, "open finding\t%s %s: %s\n", trimEnum(f.GetSeverity().String(), "SEVERITY_"), trimEnum(f.GetKind().String(), "FINDING_KIND_"), f.GetSummary())
			}
			return w.Flush()
		},
	}
}

// holderOf names who the record gives a GPU to.
func holderOf(st *pb.SerialState) string {
	if sh := st.GetOpenShipment(); sh != nil && st.GetState() == pb.CustodyState_CUSTODY_STATE_IN_TRANSIT {
		return sh.GetShipper() + ", in transit to " + sh.GetConsignee()
	}
	return st.GetCustodian()
}

func place(l *pb.Location) string {
	if l == nil {
		return "-"
	}
	if l.GetSiteId() != "" {
		return l.GetSiteId() + " (" + l.GetCountry() + ")"
	}
	return l.GetCountry()
}

// allEvents pages through a serial's history.
func (c *cli) allEvents(ctx context.Context, serial string) ([]*pb.Entry, error) {
	conn, err := c.dial()
	if err != nil {
		return nil, err
	}
	lc := gpuledgerv1grpc.NewLedgerServiceClient(conn)
	var out []*pb.Entry
	tok := ""
	for {
		cctx, cancel := c.ctx(ctx)
		r, err := lc.ListSerialEvents(cctx, &pb.ListSerialEventsRequest{Serial: serial, PageSize: 1000, PageToken: tok})
		cancel()
		if err != nil {
			return nil, err
		}
		out = append(out, r.GetEntries()...)
		if tok = r.GetNextPageToken(); tok == "" {
			return out, nil
		}
	}
}

func historyCmd(c *cli) *cobra.Command {
	return &cobra.Command{
		Use:   "history SERIAL",
		Short: "list a GPU's custody events, oldest first",
		Args:  needArgs("SERIAL"),
		RunE: func(cmd *cobra.Command, args []string) error {
			es, err := c.allEvents(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if c.json() {
				return c.printJSON(&pb.ListSerialEventsResponse{Entries: es})
			}
			w := c.table()
			fmt.Fprintln(w, "INDEX\tWHEN\tEVENT\tACTOR\tCOUNTERPARTY\tWHERE\tFLAGS")
			for _, e := range es {
				ev := e.GetEvent()
				var flags []string
				for _, f := range e.GetFlags() {
					flags = append(flags, trimEnum(f.GetKind().String(), "FINDING_KIND_"))
				}
				fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", e.GetIndex(), ev.GetOccurredAt().AsTime().Format(time.RFC3339),
					trimEnum(ev.GetType().String(), "EVENT_TYPE_"), ev.GetActor(), dash(ev.GetCounterparty()), place(ev.GetLocation()), dash(strings.Join(flags, ",")))
			}
			return w.Flush()
		},
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func checkpointCmd(c *cli) *cobra.Command {
	var k uint32
	cmd := &cobra.Command{
		Use:   "checkpoint [--min-cosigners K]",
		Short: "print the node's latest signed checkpoint (a C2SP signed note)",
		Long: `checkpoint prints the node's latest checkpoint, a C2SP signed note. With
--min-cosigners K the node gathers its peers' signatures of the same tree and
prints one note signed by nodes of at least K organisations, or fails.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var r *pb.GetCheckpointResponse
			if err := c.call(cmd.Context(), func(ctx context.Context, conn *grpc.ClientConn) (err error) {
				r, err = gpuledgerv1grpc.NewAuditServiceClient(conn).GetCheckpoint(ctx, &pb.GetCheckpointRequest{MinCosigners: k})
				return err
			}); err != nil {
				return err
			}
			if c.json() {
				return c.printJSON(r)
			}
			_, err := fmt.Fprint(c.out, r.GetCheckpoint().GetNote())
			return err
		},
	}
	cmd.Flags().Uint32Var(&k, "min-cosigners", 1, "require signatures by nodes of at least K organisations")
	return cmd
}

func proofCmd(c *cli) *cobra.Command {
	var size uint64
	cmd := &cobra.Command{
		Use:   "proof INDEX [--size N]",
		Short: "print an entry's RFC 6962 inclusion proof",
		Args:  needArgs("INDEX"),
		RunE: func(cmd *cobra.Command, args []string) error {
			idx, err := strconv.ParseUint(args[0], 10, 64)
			if err != nil {
				return fmt.Errorf("INDEX %q: want an entry index (a whole number)", args[0])
			}
			var r *pb.GetInclusionProofResponse
			if err := c.call(cmd.Context(), func(ctx context.Context, conn *grpc.ClientConn) (err error) {
				r, err = gpuledgerv1grpc.NewAuditServiceClient(conn).GetInclusionProof(ctx, &pb.GetInclusionProofRequest{LeafIndex: idx, TreeSize: size})
				return err
			}); err != nil {
				return err
			}
			if c.json() {
				return c.printJSON(r)
			}
			fmt.Fprintf(c.out, "entry %d in tree size %d\nleaf hash %x\n", idx, r.GetProof().GetTreeSize(), r.GetLeafHash())
			for i, h := range r.GetProof().GetHashes() {
				fmt.Fprintf(c.out, "  %2d %x\n", i, h)
			}
			return nil
		},
	}
	cmd.Flags().Uint64Var(&size, "size", 0, "tree size to prove against (default: the latest checkpoint's)")
	return cmd
}

func clusterCmd(c *cli) *cobra.Command {
	cmd := &cobra.Command{Use: "cluster", Short: "replication status"}
	cmd.AddCommand(&cobra.Command{
		Use:   "status",
		Short: "show the node's raft role, leader, peers, applied size and index, staleness, warnings and alarm",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var r *pb.GetClusterStatusResponse
			if err := c.call(cmd.Context(), func(ctx context.Context, conn *grpc.ClientConn) (err error) {
				r, err = gpuledgerv1grpc.NewClusterServiceClient(conn).GetClusterStatus(ctx, &pb.GetClusterStatusRequest{})
				return err
			}); err != nil {
				return err
			}
			if c.json() {
				return c.printJSON(r)
			}
			w := c.table()
			fmt.Fprintf(w, "node\t%s\nrole\t%s\nleader\t%s\napplied size\t%d\napplied raft index\t%d\ncheckpoint size\t%d\n",
				r.GetNode(), r.GetRole(), dash(r.GetLeader()), r.GetAppliedSize(), r.GetAppliedIndex(), r.GetCheckpointSize())
			if r.GetRole() != "leader" {
				fmt.Fprintf(w, "leader contact\t%s ago\n", time.Duration(r.GetLastLeaderContactMs())*time.Millisecond)
			}
			if r.GetStale() {
				fmt.Fprintf(w, "STALE\treads from this node may be behind the cluster\n")
			}
			for _, warning := range r.GetWarnings() {
				fmt.Fprintf(w, "WARNING\t%s\n", safeText(warning))
			}
			if r.GetAlarm() != "" {
				fmt.Fprintf(w, "ALARM\t%s\n", r.GetAlarm())
			}
			for _, p := range r.GetPeers() {
				fmt.Fprintf(w, "peer\t%s %s voter=%v\n", p.GetId(), p.GetAddress(), p.GetVoter())
			}
			return w.Flush()
		},
	})
	return cmd
}
