package node_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/gpuledger/gpuledger/client"
	"github.com/gpuledger/gpuledger/crypto/keys"
	"github.com/gpuledger/gpuledger/internal/workload"
	"github.com/gpuledger/gpuledger/node"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"github.com/gpuledger/gpuledger/proto/gpuledger/v1/gpuledgerv1grpc"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

func meanOf(xs []float64) float64 {
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

// BenchmarkTLS measures what TLS and participant authentication cost: the
// same records go, in interleaved rounds, to a plaintext node with read
// scope open and to a TLS node with read scope scoped whose client
// authenticates with a certificate over the manufacturer's key (every call
// looks the key up in the registry; every read looks the party index up).
// Reported: AppendBatch (16 clients of 100) and unary Append (128 clients)
// appends/s and GetSerial reads/s (32 clients) of each, their ratios
// (TLS+auth to plaintext), and the time to open a connection and make a
// first call (TLS 1.3 handshake with a client certificate, and plaintext).
func BenchmarkTLS(b *testing.B) {
	c := benchConsortium(b, keys.Ed25519)
	const rounds, perRound = 3, 4800
	var plain, secure struct{ batch, unary, reads, dial []float64 }
	for round := range rounds {
		gen := workload.New(c, uint64(10+round), time.Now().Add(-7*24*time.Hour))
		gen.Step = time.Second
		batchRecs, unaryRecs := gen.Records("TB", perRound), gen.Records("TU", perRound)

		p := startTLSNodeOf(b, c, node.ScopeOpen, false) // the same node in plaintext, read scope open
		pconn, err := client.Dial(p.addr, client.Options{Plaintext: true})
		if err != nil {
			b.Fatal(err)
		}
		t := startTLSNodeOf(b, c, node.ScopeScoped, true)
		manufacturer := ""
		for _, m := range c.Members {
			if m.Participant.GetRole() == pb.Role_ROLE_MANUFACTURER {
				manufacturer = m.Participant.GetId()
			}
		}
		ks := c.Member(manufacturer).Keys
		tconn, err := client.Dial(t.addr, client.Options{CACertFile: t.ca, Identity: ks})
		if err != nil {
			b.Fatal(err)
		}
		tl := gpuledgerv1grpc.NewLedgerServiceClient(tconn)
		both := []struct {
			lc   gpuledgerv1grpc.LedgerServiceClient
			out  *struct{ batch, unary, reads, dial []float64 }
			dial func() (*grpc.ClientConn, error)
		}{
			{gpuledgerv1grpc.NewLedgerServiceClient(pconn), &plain, func() (*grpc.ClientConn, error) { return client.Dial(p.addr, client.Options{Plaintext: true}) }},
			{tl, &secure, func() (*grpc.ClientConn, error) {
				return client.Dial(t.addr, client.Options{CACertFile: t.ca, Identity: ks})
			}},
		}
		if round%2 == 1 { // alternate who goes first
			both[0], both[1] = both[1], both[0]
		}
		for _, x := range both {
			rate, _, _ := runLoad(b, x.lc, batchRecs, 100, 16)
			x.out.batch = append(x.out.batch, rate)
			rate, _, _ = runLoad(b, x.lc, unaryRecs, 1, 128)
			x.out.unary = append(x.out.unary, rate)
			x.out.reads = append(x.out.reads, readLoad(b, x.lc, serialsOf(b, batchRecs, manufacturer), 32, 20000))
			x.out.dial = append(x.out.dial, dialTime(b, x.dial, 50))
		}
		tconn.Close()
		pconn.Close()
	}
	b.ReportMetric(meanOf(secure.batch)/meanOf(plain.batch), "AppendBatch-ratio")
	b.ReportMetric(meanOf(secure.unary)/meanOf(plain.unary), "Append-ratio")
	b.ReportMetric(meanOf(secure.reads)/meanOf(plain.reads), "GetSerial-ratio")
	b.ReportMetric(meanOf(plain.batch), "plain-AppendBatch/s")
	b.ReportMetric(meanOf(secure.batch), "tls-AppendBatch/s")
	b.ReportMetric(meanOf(plain.unary), "plain-Append/s")
	b.ReportMetric(meanOf(secure.unary), "tls-Append/s")
	b.ReportMetric(meanOf(plain.reads), "plain-GetSerial/s")
	b.ReportMetric(meanOf(secure.reads), "tls-GetSerial/s")
	b.ReportMetric(meanOf(plain.dial), "plain-connect-ms")
	b.ReportMetric(meanOf(secure.dial), "tls-connect-ms")
}

// serialsOf returns the serials the participant manufactured in records.
func serialsOf(b *testing.B, records [][]byte, manufacturer string) []string {
	var out []string
	for _, raw := range records {
		env := new(pb.Envelope)
		if err := proto.Unmarshal(raw, env); err != nil {
			b.Fatal(err)
		}
		ev := new(pb.CustodyEvent)
		if err := proto.Unmarshal(env.GetPayload(), ev); err != nil {
			b.Fatal(err)
		}
		if ev.GetType() == pb.EventType_EVENT_TYPE_MANUFACTURED && ev.GetActor() == manufacturer {
			out = append(out, ev.GetSerial())
		}
	}
	if len(out) == 0 {
		b.Fatal("no serials of " + manufacturer)
	}
	return out
}

// readLoad reads n serials' states from clients concurrent clients and
// returns reads/s.
func readLoad(b *testing.B, lc gpuledgerv1grpc.LedgerServiceClient, serials []string, clients, n int) float64 {
	var wg sync.WaitGroup
	start := time.Now()
	for w := range clients {
		wg.Go(func() {
			for i := w; i < n; i += clients {
				if _, err := lc.GetSerial(context.Background(), &pb.GetSerialRequest{Serial: serials[i%len(serials)]}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return float64(n) / time.Since(start).Seconds()
}

// dialTime is the mean time, in ms, to open a connection and make a first
// call (a health check is not enough: it skips authentication).
func dialTime(b *testing.B, dial func() (*grpc.ClientConn, error), n int) float64 {
	var total time.Duration
	for range n {
		t0 := time.Now()
		conn, err := dial()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := gpuledgerv1grpc.NewAuditServiceClient(conn).GetCheckpoint(context.Background(), &pb.GetCheckpointRequest{}); err != nil {
			b.Fatal(err)
		}
		total += time.Since(t0)
		conn.Close()
	}
	return float64(total.Microseconds()) / 1000 / float64(n)
}
