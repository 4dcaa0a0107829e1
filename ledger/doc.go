// Package ledger is gpuledger's deterministic state machine: it validates and
// applies batches of signed envelopes to a badger store that holds a hash
// chain per GPU serial and an RFC 6962 Merkle log over every entry, and it
// produces signed checkpoints and proofs.
//
// The ledger knows nothing of gRPC or raft. Apply is deterministic: the same
// genesis and the same batches give the same entries, roots, serial states and
// flags on every machine. It reads no clock (the acceptance time arrives with
// the batch), draws no randomness and never iterates a map for output.
//
// # Storage layout
//
// One badger database; keys start with a one-byte table prefix:
//
//	'm' name                   meta: "genesis" (file bytes), "size" (uint64be),
//	                           "applied" (uint64be, the caller's replication index)
//	'e' uint64be(index)        entry: a serialized gpuledger.v1.Entry holding only
//	                           accepted_at, envelope and flags (the rest is derived)
//	'h' entry hash (32 bytes)  uint64be(index): idempotency and look-up by hash
//	't' uint64be(storage idx)  a Merkle hash, laid out by x/mod/sumdb/tlog
//	's' serial                 the serial's gpuledger.v1.SerialState
//	'c' serial 0x00 uint64be(n) uint64be(index) of the serial's n-th entry
//	'r' uint64be(index)        marks a registry-change entry
//
// Everything a batch writes — entries, hashes, serial states, indexes and the
// new size — is written in one badger transaction, so a batch is applied
// whole or not at all.
//
// # Leaves and checkpoints
//
// The Merkle leaf of entry i is RFC 6962 over
//
//	"gpuledger-entry-v1" || uint64be(i) || int64be(accepted_at Unix ns) || SHA-256(envelope)
//
// (the entry hash stands for the envelope, so a leaf is 58 bytes whatever the
// envelope's size, and a verifier that checks chain links has computed it
// already).
// A checkpoint is a C2SP tlog-checkpoint
//
//	gpuledger/<ledger id, lowercase hex SHA-256 of the genesis file>
//	<size, decimal>
//	<root hash, base64>
//
// signed as a C2SP signed note with the node's Ed25519 note key.
package ledger
