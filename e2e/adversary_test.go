package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gpuledger/gpuledger/crypto/dsse"
	"github.com/gpuledger/gpuledger/crypto/keys"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"github.com/gpuledger/gpuledger/proto/gpuledger/v1/gpuledgerv1grpc"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// The evasions a registered participant tried against a development node
// (issue "findings an adversary cannot game"), each through the real CLI or
// gRPC, and each shown to fail.

// day returns the RFC 3339 time of day n after base.
func dayOf(base time.Time, n float64) string {
	return base.Add(time.Duration(n * float64(24*time.Hour))).UTC().Format(time.RFC3339)
}

// finding is the part of a finding the tests read from gaps -o json.
type finding struct {
	ID              string   `json:"id"`
	Kind            string   `json:"kind"`
	Severity        string   `json:"severity"`
	Serial          string   `json:"serial"`
	Participants    []string `json:"participants"`
	EvidenceIndexes []string `json:"evidenceIndexes"`
	Summary         string   `json:"summary"`
	Country         string   `json:"country"`
	Resolved        bool     `json:"resolved"`
}

func (d *devNode) gaps(t *testing.T, args ...string) []finding {
	t.Helper()
	out := d.cli(t, append([]string{"gaps", "-o", "json"}, args...)...)
	var r struct {
		Findings []finding `json:"findings"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("gaps -o json: %v\n%s", err, out)
	}
	return r.Findings
}

func kindsOfFindings(fs []finding) []string {
	var out []string
	for _, f := range fs {
		out = append(out, strings.TrimPrefix(f.Kind, "FINDING_KIND_"))
	}
	return out
}

func (d *devNode) serialJSON(t *testing.T, sn string) *pb.SerialState {
	t.Helper()
	var r struct {
		Serial json.RawMessage `json:"serial"`
	}
	out := d.cli(t, "serial", sn, "-o", "json")
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	var st struct {
		State     string `json:"state"`
		Custodian string `json:"custodian"`
		Location  struct {
			Country string `json:"country"`
			SiteID  string `json:"siteId"`
		} `json:"location"`
		CustodyAt string `json:"custodyAt"`
		Claims    []struct {
			Claimant string `json:"claimant"`
		} `json:"claims"`
	}
	if err := json.Unmarshal(r.Serial, &st); err != nil {
		t.Fatal(err)
	}
	s := &pb.SerialState{State: pb.CustodyState(pb.CustodyState_value[st.State]), Custodian: st.Custodian,
		Location: &pb.Location{Country: st.Location.Country, SiteId: st.Location.SiteID}}
	if ts, err := time.Parse(time.RFC3339, st.CustodyAt); err == nil {
		s.CustodyAt = timestamppb.New(ts)
	}
	for _, c := range st.Claims {
		s.Claims = append(s.Claims, &pb.Claim{Claimant: c.Claimant})
	}
	return s
}

func TestAdversaryCLI(t *testing.T) {
	d := startDev(t, t.TempDir())
	base := time.Now().UTC().Add(-100 * 24 * time.Hour).Truncate(time.Hour)
	submit := func(args ...string) string {
		t.Helper()
		return d.cli(t, append([]string{"submit"}, args...)...)
	}
	deliver := func(sn, to string) {
		t.Helper()
		submit("manufacture", "--key", d.key("acme-gpu"), "--serial", sn, "--model", "H100", "--at", dayOf(base, 0))
		submit("ship", "--key", d.key("acme-gpu"), "--serial", sn, "--to", to, "--at", dayOf(base, 0.1))
		submit("receive", "--key", d.key(to), "--serial", sn, "--at", dayOf(base, 2))
	}

	t.Run("1 an impostor's attestations move nothing and do not stop SILENT", func(t *testing.T) {
		const sn = "ADV-1"
		deliver(sn, "dc-frankfurt")
		submit("install", "--key", d.key("dc-frankfurt"), "--serial", sn, "--site", "fra-dc1", "--at", dayOf(base, 3))
		before := d.serialJSON(t, sn)
		for n := 10.0; n < 100; n += 10 {
			out := submit("attest", "--key", d.key("dc-virginia"), "--serial", sn, "--at", dayOf(base, n))
			if !strings.Contains(out, "CUSTODY_BREAK") {
				t.Fatalf("impostor's attestation receipt lacks CUSTODY_BREAK:\n%s", out)
			}
		}
		if after := d.serialJSON(t, sn); !proto.Equal(after, before) {
			t.Fatalf("the impostor moved the GPU: %v -> %v", before, after)
		}
		silent := d.gaps(t, "--serial", sn, "--kind", "silent")
		if len(silent) != 1 || !slices.Contains(silent[0].Participants, "dc-frankfurt") {
			t.Fatalf("SILENT = %+v; want it open for dc-frankfurt despite the impostor", silent)
		}
		// The custodian's own attestation, from its site, is not IMPOSSIBLE_TRAVEL.
		if out := submit("attest", "--key", d.key("dc-frankfurt"), "--serial", sn); strings.Contains(out, "IMPOSSIBLE_TRAVEL") || strings.Contains(out, "flag") {
			t.Fatalf("the custodian's attestation was flagged:\n%s", out)
		}
	})

	t.Run("2 activity after destruction cites the DESTROYED entry and its actor", func(t *testing.T) {
		const sn = "ADV-2"
		deliver(sn, "dc-frankfurt")
		var destroyed struct {
			Index string `json:"index"`
		}
		if err := json.Unmarshal([]byte(submit("destroy", "--key", d.key("dc-frankfurt"), "--serial", sn, "--at", dayOf(base, 5), "-o", "json")), &destroyed); err != nil {
			t.Fatal(err)
		}
		out := submit("attest", "--key", d.key("us-dist"), "--serial", sn, "--at", dayOf(base, 6))
		if !strings.Contains(out, "ACTIVITY_AFTER_TERMINAL") || !strings.Contains(out, "CUSTODY_BREAK") {
			t.Fatalf("late event by a stranger:\n%s", out)
		}
		fs := d.gaps(t, "--serial", sn)
		if got := kindsOfFindings(fs); !slices.Equal(got, []string{"CUSTODY_BREAK", "ACTIVITY_AFTER_TERMINAL"}) {
			t.Fatalf("findings %v", got)
		}
		for _, f := range fs {
			if !slices.Equal(f.Participants, []string{"us-dist", "dc-frankfurt"}) || len(f.EvidenceIndexes) != 2 || f.EvidenceIndexes[0] != destroyed.Index ||
				!strings.Contains(f.Summary, "dc-frankfurt destroyed") {
				t.Errorf("%s names %v, cites %v: %s; want us-dist and dc-frankfurt, the DESTROYED entry and the late one", f.ID, f.Participants, f.EvidenceIndexes, f.Summary)
			}
		}
	})

	t.Run("3 as-of is a point in time", func(t *testing.T) {
		const sn = "ADV-3"
		submit("manufacture", "--key", d.key("acme-gpu"), "--serial", sn, "--model", "H100", "--at", dayOf(base, 0))
		submit("ship", "--key", d.key("acme-gpu"), "--serial", sn, "--to", "eu-dist", "--at", dayOf(base, 10))
		submit("receive", "--key", d.key("eu-dist"), "--serial", sn, "--at", dayOf(base, 35))
		for _, tc := range []struct {
			asOf string
			want int
		}{
			{dayOf(base, 31), 0}, // the window ends at day 31; it arises the second after
			{dayOf(base, 31+1.0/86400), 1},
			{dayOf(base, 33), 1},
			{dayOf(base, 35-1.0/86400), 1},
			{dayOf(base, 35), 0},
		} {
			if got := d.gaps(t, "--serial", sn, "--kind", "handoff_unconfirmed", "--as-of", tc.asOf); len(got) != tc.want {
				t.Errorf("as of %s: %d open HANDOFF_UNCONFIRMED, want %d", tc.asOf, len(got), tc.want)
			}
		}
		if got := d.gaps(t, "--serial", sn, "--resolved", "--as-of", dayOf(base, 35)); len(got) != 1 || !got[0].Resolved {
			t.Fatalf("with --resolved as of the receipt: %+v", got)
		}
	})

	t.Run("4 unknown countries are refused", func(t *testing.T) {
		_, errOut, code := run(t, bin.cli, "--node", d.addr, "submit", "manufacture", "--key", d.key("acme-gpu"), "--serial", "ADV-4", "--model", "H100", "--country", "XX")
		if code != 1 || !strings.Contains(errOut, "UNKNOWN_COUNTRY") || !strings.Contains(errOut, "location.country") {
			t.Fatalf("--country XX: exit %d\n%s", code, errOut)
		}
		_, errOut, code = run(t, bin.cli, "--node", d.addr, "submit", "manufacture", "--key", d.key("acme-gpu"), "--serial", "ADV-4", "--model", "H100", "--country", "TW")
		if code != 0 {
			t.Fatalf("--country TW after the refusal: exit %d\n%s", code, errOut)
		}
		_, errOut, code = run(t, bin.cli, "--node", d.addr, "submit", "ship", "--key", d.key("acme-gpu"), "--serial", "ADV-4", "--to", "eu-dist", "--destination", "ZZ")
		if code != 1 || !strings.Contains(errOut, "UNKNOWN_COUNTRY") || !strings.Contains(errOut, "destination_country") {
			t.Fatalf("--destination ZZ: exit %d\n%s", code, errOut)
		}
	})

	t.Run("5 a stop in a watched hub is found", func(t *testing.T) {
		const sn = "ADV-5"
		submit("manufacture", "--key", d.key("acme-gpu"), "--serial", sn, "--model", "H100", "--at", dayOf(base, 0))
		submit("ship", "--key", d.key("acme-gpu"), "--serial", sn, "--to", "eu-dist", "--destination", "AE", "--at", dayOf(base, 1))
		submit("receive", "--key", d.key("eu-dist"), "--serial", sn, "--country", "AE", "--at", dayOf(base, 3))
		out := submit("ship", "--key", d.key("eu-dist"), "--serial", sn, "--to", "us-dist", "--country", "AE", "--at", dayOf(base, 6))
		if !strings.Contains(out, "TRANSSHIPMENT_HUB") {
			t.Fatalf("shipped on from AE three days after arriving:\n%s", out)
		}
		fs := d.gaps(t, "--serial", sn, "--kind", "transshipment_hub", "--country", "US")
		if len(fs) != 1 || fs[0].Severity != "SEVERITY_HIGH" || !slices.Contains(fs[0].Participants, "acme-gpu") {
			t.Fatalf("TRANSSHIPMENT_HUB filed under the onward destination: %+v", fs)
		}
	})

	t.Run("6 findings are filed under the destination", func(t *testing.T) {
		const sn = "ADV-6"
		deliver(sn, "eu-dist")
		submit("ship", "--key", d.key("eu-dist"), "--serial", sn, "--to", "dc-virginia", "--destination", "SA", "--at", dayOf(base, 4))
		if fs := d.gaps(t, "--serial", sn, "--country", "SA", "--kind", "license_missing"); len(fs) != 1 {
			t.Fatalf("gaps --country SA: %+v; want the LICENSE_MISSING", fs)
		}
		if fs := d.gaps(t, "--serial", sn, "--country", "NL", "--kind", "license_missing"); len(fs) != 0 {
			t.Fatalf("gaps --country NL (the shipper's): %+v; want none", fs)
		}
		const sn2 = "ADV-6B"
		deliver(sn2, "eu-dist")
		submit("ship", "--key", d.key("eu-dist"), "--serial", sn2, "--to", "ghost-trading", "--destination", "AE", "--at", dayOf(base, 4))
		if fs := d.gaps(t, "--serial", sn2, "--country", "AE", "--kind", "unregistered_consignee"); len(fs) != 1 {
			t.Fatalf("UNREGISTERED_CONSIGNEE under AE: %+v", fs)
		}
	})

	t.Run("7 sites are checked", func(t *testing.T) {
		const sn = "ADV-7"
		deliver(sn, "dc-virginia")
		conn, err := grpc.NewClient(d.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		lc := gpuledgerv1grpc.NewLedgerServiceClient(conn)
		ks, err := keys.ReadFile(d.key("dc-virginia"))
		if err != nil {
			t.Fatal(err)
		}
		appendAt := func(loc *pb.Location) (*pb.AppendResponse, error) {
			st, err := lc.GetSerial(t.Context(), &pb.GetSerialRequest{Serial: sn})
			if err != nil {
				t.Fatal(err)
			}
			env, err := dsse.SignMessage(dsse.CustodyEventType, &pb.CustodyEvent{LedgerId: d.ledgerID(t), Serial: sn, Type: pb.EventType_EVENT_TYPE_INSTALLED,
				Actor: "dc-virginia", Location: loc, OccurredAt: timestamppb.Now(), PrevEventHash: st.GetSerial().GetHeadHash()}, ks.Signers()...)
			if err != nil {
				t.Fatal(err)
			}
			return lc.Append(t.Context(), &pb.AppendRequest{Envelope: env})
		}
		// Another participant's site: refused, naming the field.
		_, err = appendAt(&pb.Location{Country: "DE", SiteId: "fra-dc1"})
		if status.Code(err) != codes.InvalidArgument || reasonOf(err) != "UNKNOWN_SITE" || fieldOf(err) != "location.site_id" {
			t.Fatalf("another's site: %v (reason %s, field %s); want INVALID_ARGUMENT UNKNOWN_SITE on location.site_id", err, reasonOf(err), fieldOf(err))
		}
		// Its own site, with a country that contradicts it: accepted, flagged.
		r, err := appendAt(&pb.Location{Country: "CA", SiteId: "iad-dc2"})
		if err != nil || len(r.GetReceipt().GetFlags()) != 1 || r.GetReceipt().GetFlags()[0].GetKind() != pb.FindingKind_FINDING_KIND_LOCATION_MISMATCH {
			t.Fatalf("own site in the wrong country: %v, %v; want accepted with LOCATION_MISMATCH", r, err)
		}
	})

	t.Run("8 a stranger's receipt does not take the GPU", func(t *testing.T) {
		const sn = "ADV-8"
		submit("manufacture", "--key", d.key("acme-gpu"), "--serial", sn, "--model", "H100", "--at", dayOf(base, 0))
		submit("ship", "--key", d.key("acme-gpu"), "--serial", sn, "--to", "dc-frankfurt", "--at", dayOf(base, 1))
		if out := submit("receive", "--key", d.key("dc-virginia"), "--serial", sn, "--at", dayOf(base, 3)); !strings.Contains(out, "RECEIVER_MISMATCH") {
			t.Fatalf("stranger's receipt:\n%s", out)
		}
		st := d.serialJSON(t, sn)
		if st.GetState() != pb.CustodyState_CUSTODY_STATE_IN_TRANSIT || st.GetCustodian() != "acme-gpu" || len(st.GetClaims()) != 1 {
			t.Fatalf("after the stranger's receipt: %v", st)
		}
		if out := d.cli(t, "serial", sn); !strings.Contains(out, "DISPUTED") || !strings.Contains(out, "dc-virginia claims") {
			t.Fatalf("gpuledger serial does not show the dispute:\n%s", out)
		}
		if out := submit("destroy", "--key", d.key("dc-virginia"), "--serial", sn, "--at", dayOf(base, 4)); !strings.Contains(out, "CUSTODY_BREAK") {
			t.Fatalf("the claimant's DESTROYED:\n%s", out)
		}
		if st := d.serialJSON(t, sn); st.GetState() != pb.CustodyState_CUSTODY_STATE_IN_TRANSIT {
			t.Fatalf("the claimant destroyed the GPU: %v", st)
		}
		h := d.gaps(t, "--serial", sn, "--kind", "handoff_unconfirmed", "--as-of", dayOf(base, 23))
		if len(h) != 1 || !slices.Contains(h[0].Participants, "dc-virginia") {
			t.Fatalf("HANDOFF_UNCONFIRMED as of day 23: %+v; want it open, naming the claimant", h)
		}
		_, errOut, code := run(t, bin.cli, "--node", d.addr, "submit", "receive", "--key", d.key("audit-office"), "--serial", sn)
		if code != 1 || !strings.Contains(errOut, "ROLE_CANNOT_HOLD") {
			t.Fatalf("an auditor's receipt: exit %d\n%s", code, errOut)
		}
		out := submit("receive", "--key", d.key("dc-frankfurt"), "--serial", sn, "--at", dayOf(base, 30))
		if strings.Contains(out, "flag") {
			t.Fatalf("the consignee's receipt was flagged:\n%s", out)
		}
		if st := d.serialJSON(t, sn); st.GetCustodian() != "dc-frankfurt" || len(st.GetClaims()) != 0 {
			t.Fatalf("after the consignee's receipt: %v", st)
		}
	})

	t.Run("verify reports open findings, and --fail-on-findings exits 3", func(t *testing.T) {
		g := filepath.Join(d.dir, "genesis.json")
		out, errOut, code := run(t, bin.cli, "--node", d.addr, "verify", "--genesis", g, "--fail-on-findings", "ADV-2")
		if code != 3 || !strings.Contains(out, "OK ADV-2: chain intact") || !strings.Contains(out, "2 open findings") || !strings.Contains(out, "ACTIVITY_AFTER_TERMINAL") {
			t.Fatalf("verify --fail-on-findings of a serial with findings: exit %d\n%s%s", code, out, errOut)
		}
		out, errOut, code = run(t, bin.cli, "--node", d.addr, "verify", "--genesis", g, "--fail-on-findings", "ADV-6")
		if code != 3 || !strings.Contains(out, "2 open findings") || !strings.Contains(out, "LICENSE_MISSING") {
			t.Fatalf("verify of ADV-6: exit %d\n%s%s", code, out, errOut)
		}
		deliver("ADV-CLEAN", "eu-dist")
		out, errOut, code = run(t, bin.cli, "--node", d.addr, "verify", "--genesis", g, "--fail-on-findings", "ADV-CLEAN")
		if code != 0 || !strings.Contains(out, "0 open findings") {
			t.Fatalf("verify of a clean serial: exit %d\n%s%s", code, out, errOut)
		}
	})
}

// TestGenesisUnknownCountryRefused: a genesis naming a participant in ZZ
// founds no ledger; the daemon says which country.
func TestGenesisUnknownCountryRefused(t *testing.T) {
	p := oneNodeGenesis(t)
	// The CLI refuses it where it is written.
	if _, errOut, code := run(t, bin.cli, "genesis", "add-participant", "--genesis", p("genesis.json"), "--id", "zz-front", "--role", "distributor",
		"--country", "ZZ", "--pub", p("authority.key.pub")); code == 0 || !strings.Contains(errOut, `--country "ZZ" is not an ISO 3166-1 alpha-2 country code`) {
		t.Fatalf("genesis add-participant --country ZZ: exit %d\n%s", code, errOut)
	}
	// A genesis edited by hand does not found a ledger.
	g, err := os.ReadFile(p("genesis.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p("genesis.json"), []byte(strings.Replace(string(g), `"US"`, `"ZZ"`, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := run(t, bin.daemon, "serve", "--data", p("data"), "--genesis", p("genesis.json"), "--node-key", p("node-a.key"), "--listen", "127.0.0.1:0")
	if code == 0 || !strings.Contains(out+errOut, `"ZZ"`) || !strings.Contains(out+errOut, "ISO 3166-1") {
		t.Fatalf("gpuledgerd serve on a genesis in ZZ: exit %d\n%s%s", code, out, errOut)
	}
}

func reasonOf(err error) string {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}

func fieldOf(err error) string {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetMetadata()["field"]
		}
	}
	return ""
}
