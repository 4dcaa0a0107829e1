package custody

import (
	"time"

	"github.com/gpuledger/gpuledger/ledger/geo"
	gpuledgerv1 "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
)

// Field limits.
const (
	MaxSerialLen    = 64
	MaxModelLen     = 128
	MaxTextLen      = 256
	MaxEvidence     = 16
	HeadHashSize    = 32
	maxLatitudeE6   = 90_000_000
	maxLongitudeE6  = 180_000_000
	participantSpec = "[a-z0-9][a-z0-9-]{1,62}"
)

// ValidSerial reports whether s is a well-formed serial number: 1 to 64
// characters of A-Z a-z 0-9 . _ : / -
func ValidSerial(s string) bool {
	if len(s) == 0 || len(s) > MaxSerialLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(isLower(c) || isDigit(c) || 'A' <= c && c <= 'Z' || c == '.' || c == '_' || c == ':' || c == '/' || c == '-') {
			return false
		}
	}
	return true
}

// ValidParticipantID reports whether s is a well-formed participant (or site)
// id: [a-z0-9][a-z0-9-]{1,62}.
func ValidParticipantID(s string) bool {
	if len(s) < 2 || len(s) > 63 || s[0] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(isLower(c) || isDigit(c) || c == '-') {
			return false
		}
	}
	return true
}

// ValidCountry reports whether s is an officially assigned ISO 3166-1
// alpha-2 code (upper case), from the list the ledger ships (ledger/geo).
func ValidCountry(s string) bool {
	_, ok := geo.Country(s)
	return ok
}

// CheckCountry returns nil when code is a country, else an UNKNOWN_COUNTRY
// rejection naming field.
func CheckCountry(field, code string) *Error {
	if ValidCountry(code) {
		return nil
	}
	e := Reject(Malformed, ReasonUnknownCountry, "%s %s is not an ISO 3166-1 alpha-2 country code; give one such as DE, US or SG", field, Quote(code))
	e.Field = field
	return e
}

func isLower(c byte) bool { return 'a' <= c && c <= 'z' }
func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func invalid(format string, args ...any) *Error {
	return Reject(Malformed, ReasonInvalidField, format, args...)
}

// ValidateEvent checks an event's structure: every field well-formed, and the
// fields its type needs present. It knows nothing of state or registry.
func ValidateEvent(ev *gpuledgerv1.CustodyEvent) *Error {
	if !ValidSerial(ev.GetSerial()) {
		return Reject(Malformed, ReasonSerialFormat,
			"serial %s: want 1 to %d characters of A-Z a-z 0-9 . _ : / -", Quote(ev.GetSerial()), MaxSerialLen)
	}
	if _, ok := gpuledgerv1.EventType_name[int32(ev.GetType())]; !ok || ev.GetType() == gpuledgerv1.EventType_EVENT_TYPE_UNSPECIFIED {
		return Reject(Malformed, ReasonEventType, "event type %d is not one of MANUFACTURED, SHIPPED, RECEIVED, INSTALLED, ATTESTED, DECOMMISSIONED, DESTROYED, REPORTED_LOST", int32(ev.GetType()))
	}
	if !ValidParticipantID(ev.GetActor()) {
		return invalid("actor %s is not a participant id (%s)", Quote(ev.GetActor()), participantSpec)
	}
	if c := ev.GetCounterparty(); c != "" && !ValidParticipantID(c) {
		return invalid("counterparty %s is not a participant id (%s)", Quote(c), participantSpec)
	}
	if err := validateLocation(ev.GetLocation()); err != nil {
		return err
	}
	if ev.GetOccurredAt() == nil {
		return invalid("occurred_at is required")
	}
	if err := ev.GetOccurredAt().CheckValid(); err != nil {
		return invalid("occurred_at: %v", err)
	}
	if ev.GetOccurredAt().AsTime().Before(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)) {
		return invalid("occurred_at %s is before 2000", ev.GetOccurredAt().AsTime().Format(time.RFC3339))
	}
	isGenesis := ev.GetType() == gpuledgerv1.EventType_EVENT_TYPE_MANUFACTURED
	switch n := len(ev.GetPrevEventHash()); {
	case isGenesis && n != 0:
		return invalid("prev_event_hash must be empty on MANUFACTURED")
	case !isGenesis && n != 0 && n != HeadHashSize: // empty: the rules say NOT_FOUND or STALE_HEAD
		return invalid("prev_event_hash is %d bytes; want the %d-byte entry hash of the serial's head", n, HeadHashSize)
	}
	if isGenesis && ev.GetModel() == "" {
		return invalid("model is required on MANUFACTURED")
	}
	if len(ev.GetModel()) > MaxModelLen {
		return invalid("model is %d bytes; at most %d", len(ev.GetModel()), MaxModelLen)
	}
	for _, f := range [...]struct{ name, v string }{{"eccn", ev.GetEccn()}, {"reference", ev.GetReference()}, {"export_license", ev.GetExportLicense()}} {
		if len(f.v) > MaxTextLen {
			return invalid("%s is %d bytes; at most %d", f.name, len(f.v), MaxTextLen)
		}
	}
	if p := ev.GetParentSerial(); p != "" && !ValidSerial(p) {
		return invalid("parent_serial %s is not a serial", Quote(p))
	}
	if d := ev.GetDestinationCountry(); d != "" {
		if err := CheckCountry("destination_country", d); err != nil {
			return err
		}
	}
	if ev.GetType() == gpuledgerv1.EventType_EVENT_TYPE_SHIPPED && ev.GetCounterparty() == "" {
		return Reject(Malformed, ReasonNoConsignee, "SHIPPED needs a counterparty: the consignee")
	}
	if len(ev.GetEvidence()) > MaxEvidence {
		return invalid("%d evidence items; at most %d", len(ev.GetEvidence()), MaxEvidence)
	}
	for i, e := range ev.GetEvidence() {
		if e.GetType() == "" || len(e.GetType()) > MaxTextLen {
			return invalid("evidence[%d].type must be a media type of 1 to %d bytes", i, MaxTextLen)
		}
	}
	return nil
}

func validateLocation(l *gpuledgerv1.Location) *Error {
	if err := CheckCountry("location.country", l.GetCountry()); err != nil {
		return err
	}
	if s := l.GetSiteId(); s != "" && !ValidParticipantID(s) {
		return invalid("location.site_id %s: want %s", Quote(s), participantSpec)
	}
	return validateCoordinates("location", l.LatitudeE6, l.LongitudeE6)
}

func validateCoordinates(where string, lat, lng *int32) *Error {
	if (lat == nil) != (lng == nil) {
		return invalid("%s: give both latitude_e6 and longitude_e6, or neither", where)
	}
	if lat != nil && (*lat < -maxLatitudeE6 || *lat > maxLatitudeE6) {
		return invalid("%s.latitude_e6 %d out of range ±%d", where, *lat, maxLatitudeE6)
	}
	if lng != nil && (*lng < -maxLongitudeE6 || *lng > maxLongitudeE6) {
		return invalid("%s.longitude_e6 %d out of range ±%d", where, *lng, maxLongitudeE6)
	}
	return nil
}

// ValidateSite checks a registered site.
func ValidateSite(s *gpuledgerv1.Site) *Error {
	if !ValidParticipantID(s.GetId()) {
		return invalid("site id %s: want %s", Quote(s.GetId()), participantSpec)
	}
	if err := CheckCountry("site "+s.GetId()+" country", s.GetCountry()); err != nil {
		return err
	}
	return validateCoordinates("site "+s.GetId(), s.LatitudeE6, s.LongitudeE6)
}
