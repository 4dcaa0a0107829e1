package verify

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gpuledger/gpuledger/ledger"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// PassportHeader starts every custody passport file.
const PassportHeader = "gpuledger-passport v1"

// A custody passport is everything needed to verify one serial's custody
// offline, as text (after C2SP tlog-proof: header lines, then a blank line,
// then the signed checkpoint the proofs lead to):
//
//	gpuledger-passport v1
//	serial <serial>
//	from <n>                                                     (only when the entries start at event n > 0)
//	genesis <base64 of the genesis file>
//	registry <index> <accepted_at Unix ns> <base64 envelope>     (each registry change)
//	proof <base64 hash>...                                       (its inclusion proof)
//	entry <index> <accepted_at Unix ns> <base64 envelope>        (each entry of the serial)
//	proof <base64 hash>...
//	map <base64 MapProof>                                        (the serial's map proof, when the checkpoint has a map)
//	registry-map <base64 MapProof>                               (the registry's)
//	<blank line>
//	<checkpoint: a C2SP signed note>
//
// Numbers are canonical decimal, base64 is standard with padding, and no
// other line, space or byte is allowed: any change fails to parse or to
// verify, with a message naming the line or entry. A passport with a "from"
// line is a reader's under read scope scoped: the serial's history from the
// entry at which that reader became party.

// FormatPassport writes a passport.
func FormatPassport(p *pb.CustodyPassport) ([]byte, error) {
	var b bytes.Buffer
	enc := base64.StdEncoding.EncodeToString
	fmt.Fprintf(&b, "%s\nserial %s\n", PassportHeader, p.GetSerial())
	if p.GetFirstPosition() > 0 {
		fmt.Fprintf(&b, "from %d\n", p.GetFirstPosition())
	}
	fmt.Fprintf(&b, "genesis %s\n", enc(p.GetGenesis()))
	write := func(kind string, es []*pb.Entry, proofs []*pb.InclusionProof) error {
		if len(es) != len(proofs) {
			return fmt.Errorf("passport: %d %s entries, %d proofs", len(es), kind, len(proofs))
		}
		for i, e := range es {
			fmt.Fprintf(&b, "%s %d %d %s\nproof", kind, e.GetIndex(), e.GetAcceptedAt().AsTime().UnixNano(), enc(e.GetEnvelope()))
			for _, h := range proofs[i].GetHashes() {
				b.WriteString(" " + enc(h))
			}
			b.WriteString("\n")
		}
		return nil
	}
	if err := write("registry", p.GetRegistryEntries(), p.GetRegistryInclusionProofs()); err != nil {
		return nil, err
	}
	if err := write("entry", p.GetEntries(), p.GetInclusionProofs()); err != nil {
		return nil, err
	}
	for _, m := range []struct {
		name string
		p    *pb.MapProof
	}{{"map", p.GetMapProof()}, {"registry-map", p.GetRegistryMapProof()}} {
		if m.p == nil {
			continue
		}
		raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(m.p)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&b, "%s %s\n", m.name, enc(raw))
	}
	b.WriteString("\n")
	b.WriteString(p.GetCheckpoint().GetNote())
	return b.Bytes(), nil
}

// ParsePassport reads a passport, insisting on its exact form.
func ParsePassport(data []byte) (*pb.CustodyPassport, error) {
	head, note, ok := bytes.Cut(data, []byte("\n\n"))
	if !ok {
		return nil, fmt.Errorf("passport: no blank line before the checkpoint")
	}
	p := &pb.CustodyPassport{Checkpoint: &pb.Checkpoint{Note: string(note)}}
	sc := bufio.NewScanner(bytes.NewReader(head))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	line := 0
	bad := func(format string, args ...any) error {
		return fmt.Errorf("passport line %d: %s", line, fmt.Sprintf(format, args...))
	}
	b64 := func(s string) ([]byte, error) {
		b, err := base64.StdEncoding.Strict().DecodeString(s)
		if err != nil || base64.StdEncoding.EncodeToString(b) != s {
			return nil, bad("not canonical base64")
		}
		return b, nil
	}
	num := func(s string) (uint64, error) {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil || strconv.FormatUint(n, 10) != s {
			return 0, bad("%q is not a canonical number", s)
		}
		return n, nil
	}
	var pending *[]*pb.InclusionProof
	var last *pb.Entry
	extra := 0 // 1 after a "from" line
	for sc.Scan() {
		line++
		text := sc.Text()
		f := strings.Split(text, " ")
		switch {
		case line == 1:
			if text != PassportHeader {
				return nil, bad("want %q", PassportHeader)
			}
		case line == 2:
			if len(f) != 2 || f[0] != "serial" || f[1] == "" {
				return nil, bad("want serial <serial>")
			}
			p.Serial = f[1]
		case line == 3 && f[0] == "from":
			n, err := num(strings.TrimPrefix(text, "from "))
			if err != nil || n == 0 || len(f) != 2 {
				return nil, bad("want from <position above 0>")
			}
			p.FirstPosition = n
			extra = 1
		case line == 3+extra:
			if len(f) != 2 || f[0] != "genesis" {
				return nil, bad("want genesis <base64>")
			}
			g, err := b64(f[1])
			if err != nil {
				return nil, err
			}
			p.Genesis = g
		case (f[0] == "registry" || f[0] == "entry") && pending == nil:
			if len(f) != 4 {
				return nil, bad("want %s <index> <accepted_at ns> <base64 envelope>", f[0])
			}
			idx, err := num(f[1])
			if err != nil {
				return nil, err
			}
			ns, err := num(f[2])
			if err != nil {
				return nil, err
			}
			env, err := b64(f[3])
			if err != nil {
				return nil, err
			}
			last = &pb.Entry{Index: idx, AcceptedAt: timestamppb.New(time.Unix(0, int64(ns))), Envelope: env}
			if p.MapProof != nil {
				return nil, bad("entries come before the map proofs")
			}
			if f[0] == "registry" {
				if len(p.Entries) > 0 {
					return nil, bad("registry entries come before the serial's")
				}
				p.RegistryEntries = append(p.RegistryEntries, last)
				pending = &p.RegistryInclusionProofs
			} else {
				p.Entries = append(p.Entries, last)
				pending = &p.InclusionProofs
			}
		case (f[0] == "map" || f[0] == "registry-map") && pending == nil && len(p.Entries) > 0:
			if len(f) != 2 || (f[0] == "map" && (p.MapProof != nil || p.RegistryMapProof != nil)) || (f[0] == "registry-map" && (p.MapProof == nil || p.RegistryMapProof != nil)) {
				return nil, bad("want map then registry-map <base64>, once each, after the entries")
			}
			raw, err := b64(f[1])
			if err != nil {
				return nil, err
			}
			m := new(pb.MapProof)
			if err := proto.Unmarshal(raw, m); err != nil {
				return nil, bad("not a map proof: %v", err)
			}
			if f[0] == "map" {
				p.MapProof = m
			} else {
				p.RegistryMapProof = m
			}
		case f[0] == "proof" && pending != nil:
			pr := &pb.InclusionProof{LeafIndex: last.GetIndex()}
			for _, h := range f[1:] {
				b, err := b64(h)
				if err != nil {
					return nil, err
				}
				pr.Hashes = append(pr.Hashes, b)
			}
			*pending = append(*pending, pr)
			pending = nil
		default:
			return nil, bad("unexpected %q", text)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("passport: %w", err)
	}
	if (p.MapProof == nil) != (p.RegistryMapProof == nil) {
		return nil, fmt.Errorf("passport: a map proof without the registry's")
	}
	if line < 3+extra || pending != nil || len(p.Entries) == 0 {
		return nil, fmt.Errorf("passport: incomplete (header, serial, genesis, entries each with a proof, then the checkpoint)")
	}
	return p, nil
}

// Passport verifies a passport offline: its checkpoint against the genesis
// it carries (which must equal pinned, when given) signed by nodes of at
// least minSigners organisations, its registry entries and the serial's
// entries with their proofs, the chain and the rules.
func Passport(p *pb.CustodyPassport, pinned []byte, minSigners int) (*SerialReport, error) {
	if pinned != nil && !bytes.Equal(pinned, p.GetGenesis()) {
		return nil, fail(-1, "the passport is for another ledger than the genesis you trust")
	}
	v, err := New(p.GetGenesis())
	if err != nil {
		return nil, fail(-1, "the passport's genesis: %v", err)
	}
	v.MinSigners = minSigners
	cp, err := v.CheckpointWith(p.GetCheckpoint().GetNote(), p.GetRegistryEntries())
	if err != nil {
		return nil, err
	}
	proofOf := func(es []*pb.Entry, ps []*pb.InclusionProof) func(*pb.Entry) ([][]byte, error) {
		return func(e *pb.Entry) ([][]byte, error) {
			for i, x := range es {
				if x == e {
					return ps[i].GetHashes(), nil
				}
			}
			return nil, fail(int64(e.GetIndex()), "no proof")
		}
	}
	changes, err := v.registryFrom(cp, p.GetRegistryEntries(), proofOf(p.GetRegistryEntries(), p.GetRegistryInclusionProofs()))
	if err != nil {
		return nil, err
	}
	for _, e := range p.GetEntries() {
		if e.GetIndex() >= cp.Size {
			return nil, fail(int64(e.GetIndex()), "beyond the passport's checkpoint (size %d)", cp.Size)
		}
	}
	rep, err := v.chain(p.GetSerial(), p.GetFirstPosition(), cp, changes, p.GetEntries(), proofOf(p.GetEntries(), p.GetInclusionProofs()), false)
	if err != nil || cp.MapRoot == nil {
		return rep, err
	}
	// The checkpoint commits to a serial map: the passport must show that
	// its entries are the serial's whole history at that size, and its
	// registry entries the whole registry.
	if p.GetMapProof() == nil || p.GetRegistryMapProof() == nil {
		return nil, fail(-1, "WITHHELD: the passport's checkpoint commits to a serial map, and the passport carries no map proof of %s", p.GetSerial())
	}
	if err := serialMapProof(p.GetSerial(), p.GetMapProof(), *cp.MapRoot); err != nil {
		return nil, err
	}
	if err := mapHead(p.GetSerial(), rep, p.GetMapProof(), cp.Size); err != nil {
		return nil, err
	}
	var last uint64
	if len(changes) > 0 {
		last = changes[len(changes)-1].index
	}
	d, err := ledger.RegistryDigest(rep.Registry)
	if err != nil {
		return nil, err
	}
	want := ledger.RegistryLeaf(uint64(len(changes)), last, d)
	if rm := p.GetRegistryMapProof(); !bytes.Equal(rm.GetKey(), ledger.RegistryMapKey[:]) || !bytes.Equal(rm.GetValue(), want[:]) {
		return nil, fail(-1, "WITHHELD: the passport's %d registry entries do not rebuild the registry its checkpoint commits to", len(changes))
	}
	if err := mapProofLeads(p.GetRegistryMapProof(), &want, *cp.MapRoot, "the registry"); err != nil {
		return nil, err
	}
	rep.MapSize = cp.Size
	return rep, nil
}
