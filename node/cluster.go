package node

import (
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gpuledger/gpuledger/ledger"
	"github.com/gpuledger/gpuledger/ledger/custody"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"github.com/gpuledger/gpuledger/proto/gpuledger/v1/gpuledgerv1grpc"
	"github.com/hashicorp/raft"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// peerProblem says in words why a peer did not cosign, without nesting
// gRPC's "rpc error: code = ... desc = ..." text in the message a client gets.
func peerProblem(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return err.Error()
	}
	switch st.Code() {
	case codes.DeadlineExceeded:
		return "did not answer in time"
	case codes.Unavailable:
		return "unreachable or not serving (" + st.Message() + ")"
	}
	return strings.ToLower(st.Code().String()) + ": " + st.Message()
}

// Metadata keys.
const (
	// mdForwarded marks a write a follower forwarded to the leader; the
	// leader does not forward it again.
	mdForwarded = "gpuledger-forwarded"
	// MDAppliedSize is sent as a header on every read: the log size the
	// answering node had applied.
	MDAppliedSize = "gpuledger-applied-size"
	// MDStale is sent as a header on reads from a node that may be behind the
	// cluster (no leader, or none heard from recently); it says why.
	MDStale = "gpuledger-stale"
	// MDMinIndex, sent by a client, asks any read to wait (briefly) until the
	// node has applied at least that log size: read your own writes on
	// another node. GetSerial also takes it as the field min_index.
	MDMinIndex = "gpuledger-min-index"
)

// Reasons of cluster errors.
const (
	ReasonNodeAlarm  = "NODE_ALARM"
	ReasonRestoring  = "RESTORING"
	ReasonNotAllowed = "NOT_A_NODE"
)

// peerConns keeps one gRPC client connection per peer address.
type peerConns struct {
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
	creds credentials.TransportCredentials
}

// newPeerConns dials with creds (TLS between nodes), or in plaintext when nil.
func newPeerConns(creds credentials.TransportCredentials) *peerConns {
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	return &peerConns{conns: make(map[string]*grpc.ClientConn), creds: creds}
}

func (p *peerConns) get(addr string) (*grpc.ClientConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.conns[addr]; ok {
		return c, nil
	}
	// Peers restart: reconnect within a second, not grpc's default two minutes.
	bo := backoff.DefaultConfig
	bo.MaxDelay = time.Second
	c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(p.creds),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: bo, MinConnectTimeout: 2 * time.Second}),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(MaxRecvMsgBytes), grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		return nil, err
	}
	p.conns[addr] = c
	return c, nil
}

func (p *peerConns) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

// leaderConn returns a connection to the leader when this node is a
// follower that knows it; nil when this node leads. A write that was
// forwarded once is not forwarded again.
func (n *Node) leaderConn(ctx context.Context) (*grpc.ClientConn, error) {
	if n.raft.State() == raft.Leader {
		return nil, nil
	}
	addr, id := n.raft.LeaderWithID()
	if md, _ := metadata.FromIncomingContext(ctx); len(md.Get(mdForwarded)) > 0 {
		return nil, errUnavailable{fmt.Sprintf("node %s received a forwarded write but does not lead (the leader is %q)", n.cfg.Name, id)}
	}
	if addr == "" {
		return nil, errUnavailable{fmt.Sprintf("node %s knows no leader (an election is under way, or fewer than a majority of nodes are up)", n.cfg.Name)}
	}
	if n.mux == nil {
		return nil, errUnavailable{"this node does not lead and cannot reach the leader"}
	}
	c, err := n.peers.get(string(addr))
	if err != nil {
		return nil, errUnavailable{fmt.Sprintf("reach leader %s at %s: %v", id, addr, err)}
	}
	return c, nil
}

// forwardCtx marks an outgoing call as forwarded, keeping the caller's
// deadline.
func forwardCtx(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, mdForwarded, "1")
}

// forwarded passes on the leader's answer to a forwarded call. When the
// leader could not be reached (no answer of its own), the caller gets
// UNAVAILABLE with a retry hint: the leader is probably being replaced.
func (n *Node) forwarded(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	st, _ := status.FromError(err)
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == ErrorDomain {
			return err // the leader's own answer
		}
	}
	if st.Code() == codes.Unavailable || st.Code() == codes.DeadlineExceeded {
		_, id := n.raft.LeaderWithID()
		return toStatus(ctx, n.log, errUnavailable{fmt.Sprintf("node %s could not reach the leader %s: %s", n.cfg.Name, id, st.Message())})
	}
	return err
}

// staleness says why this node's reads may be behind the cluster, or "".
func (n *Node) staleness() string {
	if n.raft == nil && n.readOnly {
		return "this node serves its store read-only for lack of disk space and takes no part in the cluster; its reads may be behind"
	}
	if n.raft == nil {
		return "this node is not part of the cluster: " + n.alarmText()
	}
	if n.raft.State() == raft.Leader {
		return ""
	}
	if _, id := n.raft.LeaderWithID(); id == "" {
		return "this node knows no leader; its reads may be behind the cluster"
	}
	if d := time.Since(n.raft.LastContact()); d > staleAfter {
		return fmt.Sprintf("this node last heard from the leader %s ago; its reads may be behind the cluster", d.Round(time.Millisecond))
	}
	return ""
}

// staleAfter is how long without word from the leader makes reads stale.
const staleAfter = 2 * time.Second

// guard refuses the ledger's RPCs while the node has raised its alarm or is
// installing a snapshot, and marks every answer with the applied size (and
// staleness). ClusterService and health always answer.
func (n *Node) guard(ctx context.Context, method string) (context.Context, error) {
	if err := n.admit(ctx); err != nil {
		return ctx, err
	}
	if n.ledger == nil && n.cfg.ReadScope != ScopeOpen {
		// No registry to authenticate against: nothing is served.
		return ctx, withInfo(codes.Unavailable, ReasonNodeAlarm, "node "+n.cfg.Name+" does not serve: "+n.alarmText()+"; ask another node", nil)
	}
	ctx, err := n.authorize(ctx, method)
	if err != nil {
		return ctx, err
	}
	if strings.HasPrefix(method, "/gpuledger.v1.ClusterService/") {
		return ctx, nil
	}
	if a := n.alarmText(); a != "" {
		return ctx, withInfo(codes.Unavailable, ReasonNodeAlarm, "node "+n.cfg.Name+" does not serve: "+a+"; ask another node", nil)
	}
	if n.restoring.Load() {
		return ctx, withInfo(codes.Unavailable, ReasonRestoring, "node "+n.cfg.Name+" is installing a snapshot from the leader; retry shortly or ask another node", nil)
	}
	if in, _ := metadata.FromIncomingContext(ctx); len(in.Get(MDMinIndex)) > 0 {
		v := in.Get(MDMinIndex)[0]
		min, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return ctx, invalid(fmt.Sprintf("header %s %s: want a log size (a whole number)", MDMinIndex, custody.Quote(v)))
		}
		if err := n.waitSize(ctx, min); err != nil {
			return ctx, toStatus(ctx, n.log, err)
		}
	}
	md := metadata.Pairs(MDAppliedSize, strconv.FormatUint(n.ledger.Size(), 10))
	if s := n.staleness(); s != "" {
		md.Append(MDStale, s)
	}
	return ctx, grpc.SetHeader(ctx, md)
}

// nodeOf finds the node behind a registered service.
type nodeOf interface{ node() *Node }

func (s *ledgerService) node() *Node   { return s.n }
func (s *auditService) node() *Node    { return s.n }
func (s *registryService) node() *Node { return s.n }
func (s *clusterService) node() *Node  { return s.n }

func guardUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := undecodable(req); err != nil {
		return nil, err
	}
	if s, ok := info.Server.(nodeOf); ok {
		var err error
		if ctx, err = s.node().guard(ctx, info.FullMethod); err != nil {
			return nil, err
		}
	}
	return h(ctx, req)
}

func guardStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if s, ok := srv.(nodeOf); ok {
		n := s.node()
		ctx, err := n.guard(ss.Context(), info.FullMethod)
		if err != nil {
			return err
		}
		if c := callerOf(ctx); c != nil {
			ss = &authStream{ServerStream: ss, n: n, ctx: ctx, c: c}
		}
	}
	return h(srv, decodedStream{ss})
}

// decodedStream answers a request message the codec could not decode with
// INVALID_ARGUMENT (see undecodable).
type decodedStream struct{ grpc.ServerStream }

func (s decodedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return undecodable(m)
}

// cosigned returns this node's checkpoint with the signatures of other nodes
// of distinct organisations added, until it carries k organisations' node
// signatures. Peers sign only a tree size they have applied themselves and
// whose root they computed themselves.
func (n *Node) cosigned(ctx context.Context, k int) (*pb.Checkpoint, error) {
	cp, err := n.ledger.Checkpoint(ctx)
	if err != nil {
		return nil, err
	}
	reg := n.ledger.Registry()
	orgs := map[string]bool{operatorOf(reg, n.cfg.Name): true}
	if k <= 1 {
		return cp, nil
	}
	var peers []raft.Server
	if f := n.raft.GetConfiguration(); f.Error() == nil && n.mux != nil {
		peers = f.Configuration().Servers
	}
	type answer struct {
		name string
		cp   *pb.Checkpoint
		err  error
	}
	answers := make(chan answer, len(peers))
	cctx, cancel := context.WithTimeout(ctx, n.cfg.ReadWait+time.Second)
	defer cancel()
	asked := 0
	for _, p := range peers {
		name := string(p.ID)
		if name == n.cfg.Name || orgs[operatorOf(reg, name)] {
			continue
		}
		asked++
		go func() {
			c, err := n.peers.get(string(p.Address))
			if err != nil {
				answers <- answer{name: name, err: err}
				return
			}
			resp, err := gpuledgerv1grpc.NewClusterServiceClient(c).CosignCheckpoint(cctx, &pb.CosignCheckpointRequest{Size: cp.GetSize()}, grpc.WaitForReady(true))
			answers <- answer{name: name, cp: resp.GetCheckpoint(), err: err}
		}()
	}
	var problems []string
	for ; asked > 0 && len(orgs) < k; asked-- {
		a := <-answers
		if a.err != nil {
			problems = append(problems, fmt.Sprintf("%s: %s", a.name, peerProblem(a.err)))
			continue
		}
		org := operatorOf(reg, a.name)
		if orgs[org] {
			continue
		}
		merged, err := addCosignature(cp, a.cp, reg, a.name)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", a.name, err))
			continue
		}
		cp, orgs[org] = merged, true
	}
	if len(orgs) < k {
		msg := fmt.Sprintf("a checkpoint of size %d has node signatures from %d organisations, fewer than min_cosigners %d", cp.GetSize(), len(orgs), k)
		if len(problems) > 0 {
			slices.Sort(problems)
			msg += " (" + strings.Join(problems, "; ") + ")"
		}
		return nil, withInfo(codes.Unavailable, ReasonStale, msg+"; retry when more nodes are up and caught up, or ask for fewer", nil)
	}
	return cp, nil
}

// addCosignature returns cp with the signature of the named registry node
// taken from its answer peer: only that node's signature, verified with its
// registry key over cp's own body, in canonical base64. Anything else the
// answer carries is left out.
func addCosignature(cp, peer *pb.Checkpoint, reg *ledger.Registry, name string) (*pb.Checkpoint, error) {
	var v note.Verifier
	for _, nd := range reg.Nodes() {
		if nd.GetName() == name {
			var err error
			if v, err = note.NewVerifier(nd.GetVerifierKey()); err != nil {
				return nil, err
			}
		}
	}
	if v == nil {
		return nil, fmt.Errorf("not a node of the registry")
	}
	m, err := note.Open([]byte(peer.GetNote()), note.VerifierList(v))
	if err != nil {
		return nil, fmt.Errorf("its signature does not verify with its registry key: %w", err)
	}
	// The peer signs the body it computed itself for the size (log root
	// and serial map root): it must be this checkpoint's, byte for byte.
	if body, _, _ := strings.Cut(cp.GetNote(), "\n\n"); m.Text != body+"\n" {
		return nil, fmt.Errorf("it signed another checkpoint:\n%s", m.Text)
	}
	s := m.Sigs[0]
	if _, err := base64.StdEncoding.Strict().DecodeString(s.Base64); err != nil {
		return nil, fmt.Errorf("its signature is not canonical base64")
	}
	out := proto.Clone(cp).(*pb.Checkpoint)
	out.Note += "— " + s.Name + " " + s.Base64 + "\n"
	return out, nil
}

// nodeVerifiers returns the signed-note verifiers of the registry's nodes.
func nodeVerifiers(reg *ledger.Registry) note.Verifiers {
	var vs []note.Verifier
	for _, nd := range reg.Nodes() {
		if v, err := note.NewVerifier(nd.GetVerifierKey()); err == nil {
			vs = append(vs, v)
		}
	}
	return note.VerifierList(vs...)
}

func isNode(reg *ledger.Registry, name string) bool { return operatorOf(reg, name) != "" }

func operatorOf(reg *ledger.Registry, name string) string {
	for _, nd := range reg.Nodes() {
		if nd.GetName() == name {
			return nd.GetParticipantId()
		}
	}
	return ""
}

// operators counts the organisations that operate the registry's nodes.
func operators(reg *ledger.Registry) int {
	orgs := make(map[string]bool)
	for _, nd := range reg.Nodes() {
		orgs[nd.GetParticipantId()] = true
	}
	return len(orgs)
}

func nodeNames(reg *ledger.Registry) string {
	var names []string
	for _, nd := range reg.Nodes() {
		names = append(names, nd.GetName())
	}
	return strings.Join(names, ", ")
}

// Join requests are signed notes of four lines; see JoinClusterRequest.
const joinTag = "gpuledger join"

// joinMaxAge bounds how old a join request may be.
const joinMaxAge = 5 * time.Minute

func (n *Node) signJoin() (string, error) {
	text := fmt.Sprintf("%s\n%s\n%s\n%d\n", joinTag, n.ledger.Origin(), n.addr, time.Now().Unix())
	msg, err := note.Sign(&note.Note{Text: text}, n.cfg.NodeSigner)
	return string(msg), err
}

// openJoin verifies a join request against the registry's nodes and returns
// the joining node's name and address.
func (n *Node) openJoin(signed string) (name, addr string, err error) {
	reg := n.ledger.Registry()
	m, err := note.Open([]byte(signed), nodeVerifiers(reg))
	if err != nil {
		return "", "", fmt.Errorf("the join request is not signed by a node of this ledger's registry (%s): %w", nodeNames(reg), err)
	}
	lines := strings.Split(strings.TrimSuffix(m.Text, "\n"), "\n")
	if len(lines) != 4 || lines[0] != joinTag {
		return "", "", fmt.Errorf("the join request's text must be four lines: %q, origin, address, Unix time", joinTag)
	}
	if lines[1] != n.ledger.Origin() {
		return "", "", fmt.Errorf("the join request is for ledger %s, this is %q", custody.Quote(lines[1]), n.ledger.Origin())
	}
	at, err := strconv.ParseInt(lines[3], 10, 64)
	if err != nil || time.Since(time.Unix(at, 0)).Abs() > joinMaxAge {
		return "", "", fmt.Errorf("the join request's time %s is not within %s of now", custody.Quote(lines[3]), joinMaxAge)
	}
	return m.Sigs[0].Name, lines[2], nil
}

// joinLoop asks the Join address, until it succeeds or the node stops, to
// add this node to the cluster.
func (n *Node) joinLoop() {
	defer n.stopped.Done()
	delay := 200 * time.Millisecond
	for {
		err := n.joinOnce()
		if err == nil {
			n.log.Info("joined the cluster", "via", n.cfg.Join)
			return
		}
		n.log.Warn("join failed; retrying", "via", n.cfg.Join, "err", err, "in", delay)
		select {
		case <-n.stop:
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}

func (n *Node) joinOnce() error {
	signed, err := n.signJoin()
	if err != nil {
		return err
	}
	c, err := n.peers.get(n.cfg.Join)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = gpuledgerv1grpc.NewClusterServiceClient(c).JoinCluster(ctx, &pb.JoinClusterRequest{SignedRequest: signed})
	return err
}

// clusterService reports on replication and serves the node-to-node calls.
type clusterService struct {
	gpuledgerv1grpc.UnimplementedClusterServiceServer
	n *Node
}

func (s *clusterService) GetClusterStatus(ctx context.Context, req *pb.GetClusterStatusRequest) (*pb.GetClusterStatusResponse, error) {
	n := s.n
	out := &pb.GetClusterStatusResponse{Node: n.cfg.Name, Role: "stopped", Alarm: n.alarmText(), Stale: true, Warnings: n.warnings()}
	if n.raft == nil {
		if n.readOnly {
			out.Role, out.AppliedSize, out.AppliedIndex = "read-only", n.ledger.Size(), n.ledger.AppliedIndex()
		}
		return out, nil
	}
	r := n.raft
	_, leader := r.LeaderWithID()
	out.Role, out.Leader = roleName(r.State()), string(leader)
	out.AppliedSize, out.AppliedIndex = n.ledger.Size(), n.ledger.AppliedIndex()
	out.Stale = n.staleness() != "" || n.restoring.Load()
	if r.State() != raft.Leader && !r.LastContact().IsZero() {
		out.LastLeaderContactMs = time.Since(r.LastContact()).Milliseconds()
	}
	if cp, err := n.ledger.Checkpoint(ctx); err == nil {
		out.CheckpointSize = cp.GetSize()
	}
	out.Peers = n.members()
	return out, nil
}

func (n *Node) members() []*pb.Peer {
	var out []*pb.Peer
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		for _, sv := range f.Configuration().Servers {
			out = append(out, &pb.Peer{Id: string(sv.ID), Address: string(sv.Address), Voter: sv.Suffrage == raft.Voter})
		}
	}
	return out
}

func (s *clusterService) CosignCheckpoint(ctx context.Context, req *pb.CosignCheckpointRequest) (*pb.CosignCheckpointResponse, error) {
	n := s.n
	if a := n.alarmText(); a != "" {
		return nil, withInfo(codes.Unavailable, ReasonNodeAlarm, "node "+n.cfg.Name+" does not sign: "+a, nil)
	}
	if n.restoring.Load() {
		return nil, withInfo(codes.Unavailable, ReasonRestoring, "node "+n.cfg.Name+" is installing a snapshot; retry shortly", nil)
	}
	if req.GetSize() == 0 {
		return nil, invalid("size is required: the tree size to cosign")
	}
	if err := n.waitSize(ctx, req.GetSize()); err != nil {
		return nil, toStatus(ctx, n.log, err)
	}
	cp, err := n.ledger.SignCheckpointAt(ctx, req.GetSize())
	if err != nil {
		return nil, toStatus(ctx, n.log, err)
	}
	return &pb.CosignCheckpointResponse{Checkpoint: cp}, nil
}

func (s *clusterService) JoinCluster(ctx context.Context, req *pb.JoinClusterRequest) (*pb.JoinClusterResponse, error) {
	n := s.n
	if n.raft == nil {
		return nil, withInfo(codes.Unavailable, ReasonNodeAlarm, "node "+n.cfg.Name+" is not part of the cluster: "+n.alarmText(), nil)
	}
	name, addr, err := n.openJoin(req.GetSignedRequest())
	if err != nil {
		return nil, withInfo(codes.PermissionDenied, ReasonNotAllowed, err.Error(), nil)
	}
	c, err := n.leaderConn(ctx)
	if err != nil {
		return nil, toStatus(ctx, n.log, err)
	}
	if c != nil {
		resp, err := gpuledgerv1grpc.NewClusterServiceClient(c).JoinCluster(forwardCtx(ctx), req)
		return resp, n.forwarded(ctx, err)
	}
	if err := n.raft.AddVoter(raft.ServerID(name), raft.ServerAddress(addr), 0, n.cfg.ApplyTimeout).Error(); err != nil {
		return nil, toStatus(ctx, n.log, err)
	}
	n.log.Info("node joined", "node", name, "addr", addr)
	return &pb.JoinClusterResponse{Peers: n.members()}, nil
}

func roleName(s raft.RaftState) string {
	switch s {
	case raft.Leader:
		return "leader"
	case raft.Candidate:
		return "candidate"
	case raft.Follower:
		return "follower"
	}
	return "shutdown"
}
