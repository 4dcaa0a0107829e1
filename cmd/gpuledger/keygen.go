package main

import (
	"fmt"
	"github.com/gpuledger/gpuledger/auth"
	"os"
	"strings"

	"github.com/gpuledger/gpuledger/crypto/keys"
	"github.com/spf13/cobra"
	"golang.org/x/mod/sumdb/note"
)

func keygenCmd(c *cli) *cobra.Command {
	var participant, scheme, out string
	cmd := &cobra.Command{
		Use:   "keygen --participant ID --out FILE [--scheme ed25519|ml-dsa-65|hybrid]",
		Short: "make a participant's key set",
		Long: `keygen makes a key set and writes the private key file FILE (mode 0600; it
refuses to overwrite one) and the public keys to FILE.pub, one line per key,
for the genesis or a registry change. A hybrid set holds an Ed25519 and an
ML-DSA-65 key and signs with both.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var schemes []keys.Scheme
			switch strings.ToLower(scheme) {
			case "ed25519":
				schemes = []keys.Scheme{keys.Ed25519}
			case "ml-dsa-65", "mldsa65":
				schemes = []keys.Scheme{keys.MLDSA65}
			case "hybrid":
				schemes = []keys.Scheme{keys.Ed25519, keys.MLDSA65}
			default:
				return fmt.Errorf("--scheme %q: want ed25519, ml-dsa-65 or hybrid", scheme)
			}
			if out == "" {
				return fmt.Errorf("--out is required: where to write the private key file")
			}
			ks, err := keys.Generate(participant, nil, schemes...)
			if err != nil {
				return err
			}
			if err := ks.WriteFile(out); err != nil {
				return err
			}
			var pubs []string
			for _, pk := range ks.PublicKeys() {
				pubs = append(pubs, pk.String())
			}
			if err := os.WriteFile(out+".pub", []byte(strings.Join(pubs, "\n")+"\n"), 0o644); err != nil {
				return err
			}
			var text strings.Builder
			var keyIDs []map[string]string
			for _, s := range ks.Signers() {
				fmt.Fprintf(&text, "%s key %s\n", s.Scheme(), s.KeyID())
				keyIDs = append(keyIDs, map[string]string{"scheme": s.Scheme().Name(), "keyId": s.KeyID()})
			}
			fmt.Fprintf(&text, "private key: %s (mode 0600)\npublic keys: %s.pub\n", out, out)
			return c.result(text.String(), map[string]any{"participant": ks.Participant, "keys": keyIDs, "privateKeyFile": out, "publicKeyFile": out + ".pub"})
		},
	}
	cmd.Flags().StringVar(&participant, "participant", "", "participant id the keys belong to (recorded in the key file)")
	cmd.Flags().StringVar(&scheme, "scheme", "ed25519", "ed25519, ml-dsa-65 or hybrid")
	cmd.Flags().StringVar(&out, "out", "", "private key file to write")
	return cmd
}

func nodekeyCmd(c *cli) *cobra.Command {
	var name, out string
	cmd := &cobra.Command{
		Use:   "nodekey --name NAME --out FILE",
		Short: "make a node's checkpoint-signing key",
		Long: `nodekey makes a node key: a C2SP signed-note Ed25519 key named NAME. It writes
the private key to FILE (mode 0600; gpuledgerd serve --node-key FILE) and the
verifier key to FILE.pub (gpuledger genesis add-node --verifier-key FILE.pub).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if name == "" || out == "" {
				return fmt.Errorf("%s required", missing(map[string]string{"--name": name, "--out": out}, "--name", "--out"))
			}
			skey, vkey, err := note.GenerateKey(nil, name)
			if err != nil {
				return fmt.Errorf("--name %q: %w", name, err)
			}
			f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return err
			}
			if _, err := f.WriteString(skey + "\n"); err != nil {
				f.Close()
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
			if err := os.WriteFile(out+".pub", []byte(vkey+"\n"), 0o644); err != nil {
				return err
			}
			return c.result(fmt.Sprintf("node key %s: %s (mode 0600)\nverifier key: %s.pub\n", name, out, out),
				map[string]any{"name": name, "privateKeyFile": out, "verifierKeyFile": out + ".pub", "verifierKey": vkey})
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "node name (letters, digits, - and .)")
	cmd.Flags().StringVar(&out, "out", "", "private key file to write")
	return cmd
}

func clientCertCmd(c *cli) *cobra.Command {
	var key, out string
	cmd := &cobra.Command{
		Use:   "client-cert --key FILE --out PREFIX",
		Short: "make a TLS client certificate over a participant's key, for grpcurl and other TLS clients",
		Long: `client-cert writes a self-signed TLS client certificate over the Ed25519 key of
a participant's key file (a hybrid set's Ed25519 half) to PREFIX.pem, and that
key in PKCS #8 PEM to PREFIX.key (mode 0600): give them to grpcurl as -cert
and -key. A node maps the certificate's public key to the registry's key id,
so no CA signs it, and it stops working the moment the key is revoked or the
participant suspended. The gpuledger CLI needs no such files: --identity (or
the --key it signs with) makes the certificate on the fly.`,
		Example: `  gpuledger client-cert --key .gpuledger-dev/keys/eu-dist.key --out eu-dist
  grpcurl -cacert .gpuledger-dev/tls/ca.pem -cert eu-dist.pem -key eu-dist.key 127.0.0.1:7600 list`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if key == "" || out == "" {
				return fmt.Errorf("%s required", missing(map[string]string{"--key": key, "--out": out}, "--key", "--out"))
			}
			ks, err := keys.ReadFile(key)
			if err != nil {
				return err
			}
			cert, err := auth.ParticipantCertificate(ks)
			if err != nil {
				return err
			}
			if err := auth.WritePEM(cert, out+".pem", out+".key"); err != nil {
				return err
			}
			id, _, _ := auth.KeyIDOfCertificate(cert.Leaf)
			fmt.Fprintf(c.out, "wrote %s.pem and %s.key (mode 0600): a client certificate over key %s of %s\n", out, out, id, ks.Participant)
			return nil
		},
	}
	cmd.Flags().StringVar(&key, "key", "", "the participant's private key file")
	cmd.Flags().StringVar(&out, "out", "", "write PREFIX.pem and PREFIX.key")
	return cmd
}
