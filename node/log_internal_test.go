package node

import (
	"log/slog"
	"testing"
)

// Raft's lines are logged at the level hclog gave them, without its prefix.
func TestHCLogLevel(t *testing.T) {
	for _, tc := range []struct {
		line, msg string
		level     slog.Level
	}{
		{"[ERROR] raft: failed to heartbeat to: peer=x", "raft: failed to heartbeat to: peer=x", slog.LevelError},
		{"[WARN]  raft: heartbeat timeout reached", "raft: heartbeat timeout reached", slog.LevelWarn},
		{"2026-12-01T22:00:00.000Z [INFO]  snapshot: creating new snapshot", "snapshot: creating new snapshot", slog.LevelInfo},
		{"[DEBUG] raft: vote granted", "raft: vote granted", slog.LevelDebug},
		{"no prefix here", "no prefix here", slog.LevelWarn},
	} {
		level, msg := hclogLevel(tc.line)
		if level != tc.level || msg != tc.msg {
			t.Errorf("hclogLevel(%q) = %v, %q; want %v, %q", tc.line, level, msg, tc.level, tc.msg)
		}
	}
}
