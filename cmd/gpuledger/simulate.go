package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gpuledger/gpuledger/crypto/keys"
	"github.com/gpuledger/gpuledger/internal/simulate"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
)

func simulateCmd(c *cli) *cobra.Command {
	var keyDir, out string
	var serials int
	var rate float64
	var seed uint64
	var check bool
	cmd := &cobra.Command{
		Use:   "simulate --keys DIR [--serials N] [--rate R] [--seed S] [--out DIR] | simulate --check [--out DIR]",
		Short: "build a synthetic supply chain with planted diversions, and score the findings",
		Long: `simulate builds a realistic GPU supply chain through the node's API, every record
signed by its participant's key: a manufacturer in Taiwan, distributors and an
integrator in the Netherlands, the US and Germany, datacentres in Germany and
the US, with transits of days and attestations every 30 days. It registers
four more participants with the regulator's key (a transshipment hub in
Singapore, a front company in the UAE, a buyer in a restricted country, a
datacentre in a licensed country) and plants diversion patterns in --rate of
the serials, at least one of each: a shipment never received, a receipt by a
front company, an installed GPU gone silent, transshipment through a hub into
a restricted country, a shipment into a licensed country without a licence,
a shipment to an unregistered consignee, impossible travel, a fake destruction
followed by an attestation elsewhere, a reported loss, an attestation by a
non-custodian and an attestation from another country.

It needs the development consortium's keys (--keys, a dev node's DIR/keys)
and writes the ground truth to OUT/truth.json and the extra participants'
keys to OUT/keys. "simulate --check" then compares the node's findings with
the ground truth and prints precision and recall per kind; it exits 0 only
when every planted finding is found and nothing else.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := c.dial()
			if err != nil {
				return err
			}
			truthFile := filepath.Join(out, "truth.json")
			if check {
				b, err := os.ReadFile(truthFile)
				if err != nil {
					return fmt.Errorf("%w (run gpuledger simulate first, with the same --out)", err)
				}
				truth, err := simulate.UnmarshalTruth(b)
				if err != nil {
					return err
				}
				rep, err := simulate.Check(cmd.Context(), conn, truth)
				if err != nil {
					return err
				}
				if c.json() {
					b, err := json.MarshalIndent(struct {
						OK                bool                 `json:"ok"`
						Kinds             []simulate.KindScore `json:"kinds"`
						CleanSerials      int                  `json:"cleanSerials"`
						CleanWithFindings map[string][]string  `json:"cleanWithFindings"`
						Findings          int                  `json:"findings"`
					}{rep.OK(), rep.Kinds, len(truth.Clean), rep.CleanWithFindings, rep.Findings}, "", "  ")
					if err != nil {
						return err
					}
					fmt.Fprintf(c.out, "%s\n", b)
					if !rep.OK() {
						return errSilent
					}
					return nil
				}
				w := c.table()
				fmt.Fprintln(w, "KIND\tPLANTED\tFOUND\tFALSE\tPRECISION\tRECALL")
				for _, k := range rep.Kinds {
					fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%.3f\t%.3f\n", k.Kind, k.Planted, k.Found, k.False, k.Precision, k.Recall)
				}
				w.Flush()
				fmt.Fprintf(c.out, "clean serials with findings: %d of %d\n", len(rep.CleanWithFindings), len(truth.Clean))
				if !rep.OK() {
					return errSilent
				}
				return nil
			}
			if keyDir == "" {
				return fmt.Errorf("--keys DIR is required: the development consortium's keys (a dev node's DIR/keys)")
			}
			ks, err := readKeyDir(keyDir)
			if err != nil {
				return err
			}
			extraDir := filepath.Join(out, "keys")
			if err := os.MkdirAll(extraDir, 0o700); err != nil {
				return err
			}
			extra, err := readKeyDir(extraDir)
			if err != nil {
				return err
			}
			var bar *progressbar.ProgressBar
			cfg := simulate.Config{Serials: serials, Rate: rate, Seed: seed, Keys: ks, Extra: extra,
				Now: time.Now().UTC().Truncate(time.Second)}
			cfg.Progress = func(done, total int) {
				if !interactive(c.errOut) {
					return
				}
				if bar == nil {
					bar = progressbar.NewOptions(total, progressbar.OptionSetWriter(c.errOut), progressbar.OptionSetDescription("submitting"),
						progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetItsString("records"),
						progressbar.OptionSetPredictTime(true), progressbar.OptionClearOnFinish())
				}
				bar.Set(done)
			}
			start := time.Now()
			truth, err := simulate.Run(cmd.Context(), conn, cfg)
			for id, k := range cfg.Extra {
				if path := filepath.Join(extraDir, id+".key"); !fileExists(path) {
					if werr := k.WriteFile(path); werr != nil && err == nil {
						err = werr
					}
				}
			}
			if err != nil {
				return err
			}
			if bar != nil {
				bar.Finish()
			}
			b, err := simulate.MarshalTruth(truth)
			if err != nil {
				return err
			}
			if err := os.WriteFile(truthFile, b, 0o644); err != nil {
				return err
			}
			return c.result(fmt.Sprintf("simulated %d serials (%d with planted diversions) in %v; ground truth: %s\nnext: gpuledger simulate --check --out %s\n",
				len(truth.Clean)+len(truth.Expected), len(truth.Expected), time.Since(start).Round(time.Millisecond), truthFile, out),
				map[string]any{"serials": len(truth.Clean) + len(truth.Expected), "planted": len(truth.Expected), "truthFile": truthFile,
					"seconds": time.Since(start).Seconds()})
		},
	}
	f := cmd.Flags()
	f.StringVar(&keyDir, "keys", "", "the development consortium's key directory (a dev node's DIR/keys)")
	f.StringVar(&out, "out", ".gpuledger-sim", "where to write truth.json and the extra participants' keys")
	f.IntVar(&serials, "serials", 10_000, "how many GPUs")
	f.Float64Var(&rate, "rate", 0.05, "share of serials with a planted diversion (at least one of each pattern)")
	f.Uint64Var(&seed, "seed", 1, "seed of the run; serials are named SIM-<seed>-<n>, so use a new seed for another run")
	f.BoolVar(&check, "check", false, "score the node's findings against OUT/truth.json")
	return cmd
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// readKeyDir reads every <id>.key in dir.
func readKeyDir(dir string) (map[string]*keys.KeySet, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := map[string]*keys.KeySet{}
	for _, e := range entries {
		if id, ok := strings.CutSuffix(e.Name(), ".key"); ok {
			ks, err := keys.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				return nil, err
			}
			out[id] = ks
		}
	}
	return out, nil
}
