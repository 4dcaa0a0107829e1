// Package custody holds gpuledger's custody rules: the structure an event must
// have, and the per-serial state machine that decides who may do what.
//
// The principle: reject what is malformed or unauthorised; accept and flag
// what is suspicious. Evidence of diversion is never refused, so a receipt by
// the wrong party, an attestation from the wrong place or any activity after
// destruction is accepted and carries a Flag; only structural violations
// (a non-custodian shipping, a second MANUFACTURED, a stale head) are errors.
//
// Everything here is pure and deterministic: no clocks, no randomness, no
// iteration over maps for output.
package custody
