package main

import (
	"errors"
	"fmt"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestParseMicroDegrees(t *testing.T) {
	for _, tc := range []struct {
		in    string
		limit int64
		want  int32
		ok    bool
	}{
		{"0.522654", 90, 522_654, true},
		{"-0.522654", 90, -522_654, true},
		{"50.11", 90, 50_110_000, true},
		{"103.850000", 180, 103_850_000, true},
		{"90", 90, 90_000_000, true},
		{"-180.0", 180, -180_000_000, true},
		{"90.000001", 90, 0, false},
		{"1.2345678", 90, 0, false},
		{"1e3", 90, 0, false},
		{"+1.5", 90, 0, false},
		{"--1", 90, 0, false},
		{"", 90, 0, false},
		{".5", 90, 0, false},
		{"1.-5", 90, 0, false},
	} {
		got, err := parseMicroDegrees(tc.in, tc.limit)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseMicroDegrees(%q) = %d, %v; want %d, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

// describe renders a gRPC error once, keeping the context it was wrapped in.
func TestDescribe(t *testing.T) {
	st, _ := status.New(codes.Unavailable, "no leader").WithDetails(&errdetails.ErrorInfo{Reason: "NO_LEADER", Domain: "gpuledger.dev"})
	for _, tc := range []struct {
		err  error
		want string
	}{
		{st.Err(), "Unavailable (NO_LEADER): no leader"},
		{fmt.Errorf("lines 1 to 7: %w", st.Err()), "lines 1 to 7: Unavailable (NO_LEADER): no leader"},
		{fmt.Errorf("serial: %w", status.Error(codes.NotFound, "no serial X")), "serial: NotFound: no serial X"},
		{errors.New("plain"), "plain"},
	} {
		if got := describe(tc.err); got != tc.want {
			t.Errorf("describe(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
