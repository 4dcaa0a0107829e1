// Package workload generates signed, valid custody histories for a
// consortium: whole GPU lifecycles whose events chain to each other, ready to
// apply or submit. Tests and benchmarks use it.
package workload

import (
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/gpuledger/gpuledger/internal/consortium"
	"github.com/gpuledger/gpuledger/ledger/policy"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Generator makes lifecycles. It is not safe for concurrent use.
type Generator struct {
	rng                *rand.Rand
	now                time.Time
	makers, dists, dcs []*consortium.Member
	// Step is how far apart lifecycles start (default 1 minute).
	Step time.Duration
}

// Timeline of one lifecycle, from its start: an hour between handling steps,
// a day in transit (air freight: under the default 1,000 km/h limit between
// any two continents).
const (
	handling = time.Hour
	transit  = 24 * time.Hour
	// LifecycleSpan is how long after its start a lifecycle with two
	// attestations ends.
	LifecycleSpan = 2*transit + 7*handling
)

// New returns a generator over the consortium's members, with events from
// start on. The seed makes the choices (not the signatures) reproducible.
func New(c *consortium.Consortium, seed uint64, start time.Time) *Generator {
	g := &Generator{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), now: start, Step: time.Minute}
	pol, _ := policy.New(policy.Default())
	for _, m := range c.Members {
		if pol.Class(m.Participant.GetCountry()) != pb.CountryClass_COUNTRY_CLASS_UNSPECIFIED {
			continue // clean lives stay in countries the default policy does not single out
		}
		switch m.Participant.GetRole() {
		case pb.Role_ROLE_MANUFACTURER:
			g.makers = append(g.makers, m)
		case pb.Role_ROLE_DISTRIBUTOR, pb.Role_ROLE_INTEGRATOR:
			g.dists = append(g.dists, m)
		case pb.Role_ROLE_DATACENTRE:
			g.dcs = append(g.dcs, m)
		}
	}
	return g
}

// Now returns the start of the next lifecycle.
func (g *Generator) Now() time.Time { return g.now }

func (g *Generator) pick(ms []*consortium.Member) *consortium.Member {
	return ms[g.rng.IntN(len(ms))]
}

// Lifecycle returns the envelopes of one GPU's clean life, starting at Now
// and ending within LifecycleSpan (for more than two attestations, an hour
// more each): manufactured,
// shipped to a distributor, received, shipped to a datacentre, all in
// countries the default policy does not single out, received, installed, then attested
// the given number of times. It panics if the consortium lacks a
// manufacturer, a distributor or a datacentre.
func (g *Generator) Lifecycle(serial string, attestations int) [][]byte {
	if len(g.makers) == 0 || len(g.dists) == 0 || len(g.dcs) == 0 {
		panic("workload: the consortium needs a manufacturer, a distributor and a datacentre")
	}
	mk, dist, dc := g.pick(g.makers), g.pick(g.dists), g.pick(g.dcs)
	var out [][]byte
	var prev []byte
	at := g.now
	g.now = g.now.Add(g.Step)
	add := func(m *consortium.Member, typ pb.EventType, counterparty string) {
		if typ == pb.EventType_EVENT_TYPE_RECEIVED {
			at = at.Add(transit)
		} else {
			at = at.Add(handling)
		}
		p := m.Participant
		loc := &pb.Location{Country: p.GetCountry()}
		if s := p.GetSites(); len(s) > 0 {
			loc = &pb.Location{Country: s[0].GetCountry(), SiteId: s[0].GetId(), LatitudeE6: s[0].LatitudeE6, LongitudeE6: s[0].LongitudeE6}
		}
		ev := &pb.CustodyEvent{Serial: serial, Type: typ, Actor: p.GetId(), Counterparty: counterparty,
			Location: loc, OccurredAt: timestamppb.New(at), PrevEventHash: prev}
		if typ == pb.EventType_EVENT_TYPE_MANUFACTURED {
			ev.Model, ev.Eccn = "H100-SXM5-80GB", "3A090.a"
		}
		env := m.SignEvent(ev)
		h := sha256.Sum256(env)
		prev = h[:]
		out = append(out, env)
	}
	add(mk, pb.EventType_EVENT_TYPE_MANUFACTURED, "")
	add(mk, pb.EventType_EVENT_TYPE_SHIPPED, dist.Participant.GetId())
	add(dist, pb.EventType_EVENT_TYPE_RECEIVED, mk.Participant.GetId())
	add(dist, pb.EventType_EVENT_TYPE_SHIPPED, dc.Participant.GetId())
	add(dc, pb.EventType_EVENT_TYPE_RECEIVED, dist.Participant.GetId())
	add(dc, pb.EventType_EVENT_TYPE_INSTALLED, "")
	for range attestations {
		add(dc, pb.EventType_EVENT_TYPE_ATTESTED, "")
	}
	return out
}

// Records returns at least n envelopes made of whole lifecycles of serials
// named prefix-000000, prefix-000001, ...
func (g *Generator) Records(prefix string, n int) [][]byte {
	var out [][]byte
	for i := 0; len(out) < n; i++ {
		out = append(out, g.Lifecycle(fmt.Sprintf("%s-%06d", prefix, i), 2)...)
	}
	return out
}
