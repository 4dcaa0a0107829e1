package custody

import (
	"fmt"
	"strconv"
	"unicode/utf8"
)

// Code classifies a rejection so that a server can map it to a status code.
type Code int

// Rejection classes. The comment names the gRPC code a server should use.
const (
	// Malformed input: INVALID_ARGUMENT.
	Malformed Code = iota + 1
	// A signature does not verify or the signer is unknown: UNAUTHENTICATED.
	Unauthenticated
	// A role or custody rule forbids it: PERMISSION_DENIED.
	Forbidden
	// prev_event_hash is not the serial's head: ABORTED (retry on the new head).
	StaleHead
	// The thing to create exists already: ALREADY_EXISTS.
	Exists
	// The thing named does not exist: NOT_FOUND.
	NotFound
	// A size or count limit was exceeded: RESOURCE_EXHAUSTED.
	TooLarge
	// The state does not allow it (the last regulators able to act, a
	// participant that is not suspended): FAILED_PRECONDITION.
	Precondition
)

func (c Code) String() string {
	switch c {
	case Malformed:
		return "malformed"
	case Unauthenticated:
		return "unauthenticated"
	case Forbidden:
		return "forbidden"
	case StaleHead:
		return "stale head"
	case Precondition:
		return "failed precondition"
	case Exists:
		return "exists"
	case NotFound:
		return "not found"
	case TooLarge:
		return "too large"
	}
	return fmt.Sprintf("Code(%d)", int(c))
}

// Error is why an envelope was rejected. Nothing of a rejected envelope is
// stored. Callers branch on Code and Reason (stable, upper snake case, for
// machines) and show Msg (what is wrong and what to fix, for people).
type Error struct {
	Code   Code
	Reason string
	Msg    string
	// Head is the serial's current head entry hash, on StaleHead.
	Head []byte
	// Field names the offending field when one field is at fault, as a path
	// into the payload, for example "location.country".
	Field string
}

func (e *Error) Error() string { return e.Msg }

// Is makes errors.Is(err, &Error{Reason: r}) match on reason, and
// errors.Is(err, &Error{Code: c}) on code.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	if !ok {
		return false
	}
	return (t.Reason == "" || t.Reason == e.Reason) && (t.Code == 0 || t.Code == e.Code)
}

// Reject returns an *Error.
func Reject(code Code, reason, format string, args ...any) *Error {
	return &Error{Code: code, Reason: reason, Msg: fmt.Sprintf(format, args...)}
}

// Reasons. Stable: clients may branch on them.
const (
	ReasonEnvelopeMalformed   = "ENVELOPE_MALFORMED"
	ReasonNotCanonical        = "NOT_CANONICAL"
	ReasonPayloadType         = "UNKNOWN_PAYLOAD_TYPE"
	ReasonPayloadMalformed    = "PAYLOAD_MALFORMED"
	ReasonInvalidField        = "INVALID_FIELD"
	ReasonEventType           = "UNKNOWN_EVENT_TYPE"
	ReasonSerialFormat        = "INVALID_SERIAL"
	ReasonFutureTime          = "TIME_IN_FUTURE"
	ReasonTooLarge            = "TOO_LARGE"
	ReasonNoSignature         = "NO_SIGNATURE"
	ReasonUnknownParticipant  = "UNKNOWN_PARTICIPANT"
	ReasonUnknownKey          = "UNKNOWN_KEY"
	ReasonWrongSigner         = "KEY_NOT_ACTORS"
	ReasonBadSignature        = "BAD_SIGNATURE"
	ReasonKeyRevoked          = "KEY_REVOKED"
	ReasonHybridRequired      = "HYBRID_SIGNATURE_REQUIRED"
	ReasonSuspended           = "PARTICIPANT_SUSPENDED"
	ReasonNotManufacturer     = "NOT_MANUFACTURER"
	ReasonNotCustodian        = "NOT_CUSTODIAN"
	ReasonNotRegulator        = "NOT_REGULATOR"
	ReasonSerialExists        = "SERIAL_EXISTS"
	ReasonUnknownSerial       = "UNKNOWN_SERIAL"
	ReasonStaleHead           = "STALE_HEAD"
	ReasonNoConsignee         = "NO_CONSIGNEE"
	ReasonParticipantExists   = "PARTICIPANT_EXISTS"
	ReasonKeyExists           = "KEY_EXISTS"
	ReasonPolicyVersion       = "POLICY_VERSION_NOT_NEWER"
	ReasonNodeExists          = "NODE_EXISTS"
	ReasonRegistryChangeEmpty = "EMPTY_REGISTRY_CHANGE"
	ReasonUnknownCountry      = "UNKNOWN_COUNTRY"
	ReasonUnknownSite         = "UNKNOWN_SITE"
	ReasonCannotHold          = "ROLE_CANNOT_HOLD"
	ReasonWrongLedger         = "WRONG_LEDGER"
	ReasonQuorum              = "QUORUM_NOT_MET"
	ReasonLastRegulator       = "LAST_REGULATOR"
	ReasonNotSuspended        = "NOT_SUSPENDED"
	ReasonChangeSigner        = "SIGNER_NOT_REGULATOR"
	ReasonEvidenceTooLarge    = "EVIDENCE_TOO_LARGE"
	ReasonSerialBudget        = "SERIAL_BUDGET_EXCEEDED"
)

// MaxQuote is the most of a client's input an error message quotes.
const MaxQuote = 64

// Quote returns s for an error message: at most MaxQuote bytes of it, cut at
// a character boundary, quoted once with Go escapes (so control bytes and
// invalid UTF-8 arrive as printable text), and how long it was when cut. An
// error never echoes a client's input whole: a 4 MiB serial would make a
// 4 MiB message, escaped to four times that.
func Quote(s string) string {
	if len(s) <= MaxQuote {
		return strconv.Quote(s)
	}
	cut := MaxQuote
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s... (%d bytes)", strconv.Quote(s[:cut]), len(s))
}
