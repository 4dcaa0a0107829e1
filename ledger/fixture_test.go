package ledger_test

import (
	"bytes"
	"context"
	"log/slog"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/gpuledger/gpuledger/crypto/keys"
	"github.com/gpuledger/gpuledger/internal/consortium"
	"github.com/gpuledger/gpuledger/ledger"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// t0 is the fixtures' starting clock.
var t0 = time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)

// testSpecs is the development consortium plus members that exercise the
// other schemes and the policy's country classes.
func testSpecs() []consortium.Spec {
	return append(consortium.Dev(),
		consortium.Spec{ID: "pq-dist", Name: "Post-Quantum Distribution", Role: pb.Role_ROLE_DISTRIBUTOR, Country: "JP", Schemes: []keys.Scheme{keys.MLDSA65}},
		consortium.Spec{ID: "cn-trader", Name: "Restricted Trading Co", Role: pb.Role_ROLE_DISTRIBUTOR, Country: "CN"},
		consortium.Spec{ID: "sa-dc", Name: "Licensed Datacentre", Role: pb.Role_ROLE_DATACENTRE, Country: "SA"},
		consortium.Spec{ID: "sg-dist", Name: "Hub Distribution", Role: pb.Role_ROLE_DISTRIBUTOR, Country: "SG"},
	)
}

var testConsortium = func() *consortium.Consortium {
	c, err := consortium.Build(testSpecs(), consortium.Options{Rand: rand.NewChaCha8([32]byte{1})})
	if err != nil {
		panic(err)
	}
	return c
}()

type fixture struct {
	t   testing.TB
	c   *consortium.Consortium
	l   *ledger.Ledger
	dir string
	now time.Time
	// log is every batch applied, to replay into another store.
	log []ledger.Batch
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	return openFixture(t, t.TempDir())
}

func openFixture(t testing.TB, dir string) *fixture {
	t.Helper()
	cfg := ledger.DefaultConfig(dir)
	cfg.Genesis = testConsortium.Genesis
	cfg.NodeSigner = testConsortium.NodeSigner
	cfg.Logger = slog.New(slog.DiscardHandler)
	l, err := ledger.Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Open(%s) = %v", dir, err)
	}
	t.Cleanup(func() { l.Close() })
	return &fixture{t: t, c: testConsortium, l: l, dir: dir, now: t0}
}

func (f *fixture) member(id string) *consortium.Member {
	m := f.c.Member(id)
	if m == nil {
		f.t.Fatalf("no member %q", id)
	}
	return m
}

// event builds an event by actor at its first site (or its country), at f.now,
// naming the serial's current head.
func (f *fixture) event(actor string, typ pb.EventType, serial string, mods ...func(*pb.CustodyEvent)) *pb.CustodyEvent {
	loc := &pb.Location{Country: "US"}
	if m := f.c.Member(actor); m != nil {
		p := m.Participant
		loc = &pb.Location{Country: p.GetCountry()}
		if len(p.GetSites()) > 0 {
			s := p.GetSites()[0]
			loc = &pb.Location{Country: s.GetCountry(), SiteId: s.GetId()}
		}
	}
	ev := &pb.CustodyEvent{LedgerId: f.c.LedgerID, Serial: serial, Type: typ, Actor: actor, Location: loc, OccurredAt: timestamppb.New(f.now)}
	if typ == pb.EventType_EVENT_TYPE_MANUFACTURED {
		ev.Model, ev.Eccn = "H100-SXM5-80GB", "3A090.a"
	} else if st, err := f.l.Serial(context.Background(), serial); err == nil {
		ev.PrevEventHash = st.GetHeadHash()
	}
	for _, m := range mods {
		m(ev)
	}
	return ev
}

// sign builds and signs an event with all of actor's keys.
func (f *fixture) sign(actor string, typ pb.EventType, serial string, mods ...func(*pb.CustodyEvent)) []byte {
	return f.member(actor).SignEvent(f.event(actor, typ, serial, mods...))
}

func to(p string) func(*pb.CustodyEvent) { return func(e *pb.CustodyEvent) { e.Counterparty = p } }

// apply applies one batch at f.now and advances the clock by a day (so that
// consecutive events between continents are plausible travel).
func (f *fixture) apply(envs ...[]byte) []ledger.Result {
	f.t.Helper()
	b := ledger.Batch{AcceptedAt: f.now, Envelopes: envs}
	f.log = append(f.log, b)
	rs, err := f.l.Apply(context.Background(), b)
	if err != nil {
		f.t.Fatalf("Apply: %v", err)
	}
	f.now = f.now.Add(24 * time.Hour)
	return rs
}

// must applies envelopes one batch each and fails on any rejection.
func (f *fixture) must(envs ...[]byte) []*pb.Entry {
	f.t.Helper()
	var out []*pb.Entry
	for _, e := range envs {
		r := f.apply(e)[0]
		if r.Err != nil {
			f.t.Fatalf("setup entry rejected: %v", r.Err)
		}
		out = append(out, r.Entry)
	}
	return out
}

// life records a serial's manufacture and shipment to consignee and receipt.
func (f *fixture) delivered(serial, consignee string) {
	f.t.Helper()
	f.must(f.sign("acme-gpu", pb.EventType_EVENT_TYPE_MANUFACTURED, serial))
	f.must(f.sign("acme-gpu", pb.EventType_EVENT_TYPE_SHIPPED, serial, to(consignee)))
	f.must(f.sign(consignee, pb.EventType_EVENT_TYPE_RECEIVED, serial, to("acme-gpu")))
}

// snapshot is what a rejection must leave unchanged.
type snapshot struct {
	size   uint64
	root   [32]byte
	serial *pb.SerialState
}

func (f *fixture) snap(serial string) snapshot {
	st, _ := f.l.Serial(context.Background(), serial)
	return snapshot{size: f.l.Size(), root: f.l.Root(), serial: st}
}

func (s snapshot) equal(o snapshot) bool {
	return s.size == o.size && s.root == o.root && proto.Equal(s.serial, o.serial)
}

func headOf(t testing.TB, l *ledger.Ledger, serial string) []byte {
	st, err := l.Serial(context.Background(), serial)
	if err != nil {
		t.Fatalf("Serial(%q) = %v", serial, err)
	}
	return bytes.Clone(st.GetHeadHash())
}
