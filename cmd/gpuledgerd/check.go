package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/gpuledger/gpuledger/ledger"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"github.com/gpuledger/gpuledger/verify"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
)

func checkCmd() *cobra.Command {
	var data string
	cmd := &cobra.Command{
		Use:   "check [DIR | --data DIR]",
		Short: "check a node's store fully, naming the first bad entry",
		Long: `check reads a stopped node's whole store and checks it: every entry present,
hashing to the Merkle leaf the log committed to and found again by its hash;
every serial's state naming its last entry as head; the serial map's tiles
holding one tree whose root is the one recorded; then, as an auditor would,
every signature under the registry rebuilt from the genesis and the log,
every serial's chain links and state, and the Merkle root and the serial
map recomputed from the entries against the store's. It names the first bad entry and exits 0 only
when everything holds. (A node also checks the newest entries at every start.)

DIR is the node's --data directory (for a development node, its DIR/node).`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				data = args[0]
			}
			dir := filepath.Join(data, "ledger")
			if _, err := os.Stat(dir); err != nil {
				if alt := filepath.Join(data, "node", "ledger"); fileExists(alt) {
					dir = alt
				} else {
					return fmt.Errorf("no ledger in %s (give the node's --data directory)", data)
				}
			}
			return runCheck(cmd.Context(), dir, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	cmd.Flags().StringVar(&data, "data", "gpuledger-data", "the node's data directory")
	return cmd
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func runCheck(ctx context.Context, dir string, out, errOut io.Writer) error {
	cfg := ledger.DefaultConfig(dir)
	cfg.Logger = slog.New(slog.DiscardHandler)
	l, err := ledger.Open(ctx, cfg)
	if err != nil {
		if errors.Is(err, ledger.ErrCorrupt) {
			fmt.Fprintf(out, "FAILED: %v\n", err)
			return errFailed
		}
		if errors.Is(err, ledger.ErrStoreInUse) {
			return fmt.Errorf("%s is in use by a running node: stop the node first; check reads a stopped node's store (a running node checks its own head at every start)", dir)
		}
		return err
	}
	defer l.Close()
	if err := l.CheckStore(ctx, progress(errOut, "1/2 checking the store", l.Size())); err != nil {
		var ce *ledger.CorruptError
		if errors.As(err, &ce) {
			fmt.Fprintf(out, "FAILED: %v\n", err)
			return errFailed
		}
		return err
	}
	if _, err := l.CheckMap(ctx); err != nil && !errors.Is(err, ledger.ErrNoMap) {
		var ce *ledger.CorruptError
		if errors.As(err, &ce) {
			fmt.Fprintf(out, "FAILED: %v\n", err)
			return errFailed
		}
		return err
	}
	v, err := verify.New(l.Genesis())
	if err != nil {
		return err
	}
	entries := make(chan *pb.Entry, 256)
	errc := make(chan error, 1)
	ictx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		errc <- l.Entries(ictx, 0, l.Size(), func(e *pb.Entry) error {
			select {
			case entries <- e:
				return nil
			case <-ictx.Done():
				return ictx.Err()
			}
		})
		close(entries)
	}()
	rep, err := v.All(ctx, func() (*pb.Entry, error) {
		e, ok := <-entries
		if !ok {
			return nil, nil
		}
		return e, nil
	}, progress(errOut, "2/2 verifying signatures and chains", l.Size()))
	if err != nil {
		return err
	}
	cancel()
	if err := <-errc; err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	root := l.Root()
	if !rep.OK() {
		fmt.Fprintf(out, "FAILED: entry %d: %s (%d problems)\n", rep.First(), rep.FirstProblem(), len(rep.Failures))
		return errFailed
	}
	if rep.Root != root {
		fmt.Fprintf(out, "FAILED: the entries hash to root %x; the store's tree to %x\n", rep.Root[:], root[:])
		return errFailed
	}
	switch mr, err := l.MapRoot(l.Size()); {
	case err == nil && rep.MapRoot != nil && *rep.MapRoot != mr:
		fmt.Fprintf(out, "FAILED: the serial map rebuilt from the entries has root %x; the store's map, %x\n", rep.MapRoot[:], mr[:])
		return errFailed
	case err != nil && !errors.Is(err, ledger.ErrNotFound):
		return err
	}
	fmt.Fprintf(out, "OK: %s, %s, %s; root %x\n", count(int(rep.Entries), "entry", "entries"), count(rep.Serials, "serial", "serials"),
		count(rep.Registry, "registry change", "registry changes"), root[:])
	return nil
}

var errFailed = errors.New("the store check failed")

// count is "1 entry" or "n entries".
func count(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// progress reports a phase's progress on w: a progress bar on a terminal,
// else a line at each quarter.
func progress(w io.Writer, phase string, total uint64) func(uint64) {
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			bar := progressbar.NewOptions64(int64(total), progressbar.OptionSetWriter(w), progressbar.OptionSetDescription(phase),
				progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetItsString("entries"),
				progressbar.OptionSetPredictTime(true), progressbar.OptionThrottle(200*time.Millisecond), progressbar.OptionClearOnFinish())
			return func(n uint64) {
				bar.Set64(int64(n))
				if n >= total {
					bar.Finish()
				}
			}
		}
	}
	next := uint64(0)
	return func(n uint64) {
		if total == 0 || n*4 < next*total {
			return
		}
		for n*4 >= next*total && next <= 4 {
			next++
		}
		fmt.Fprintf(w, "%s: %d of %d entries\n", phase, n, total)
	}
}
