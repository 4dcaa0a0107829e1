#!/usr/bin/env bash
# Runs a development cluster: three gpuledgerd nodes of one development
# consortium on loopback (127.0.0.1:7601-7603), each operated by another
# organisation. Ctrl-C stops all three; their data stays in DIR for the next
# run. Usage: scripts/cluster.sh [DIR]   (make cluster)
set -euo pipefail
dir=${1:-.gpuledger-cluster}
bin=${BIN:-bin}
# Create the consortium (once) and read the three nodes' serve commands.
mapfile -t cmds < <("$bin/gpuledgerd" dev --data "$dir" --nodes 3 | tee /dev/stderr | grep '^gpuledgerd serve')
stop() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; }
trap stop EXIT
trap 'echo; echo "stopping the cluster"; exit 0' INT TERM
for i in "${!cmds[@]}"; do
  # shellcheck disable=SC2086 # the printed command is split into its words
  "$bin/"${cmds[$i]} --log-level warn 2>>"$dir/node-$((i + 1)).log" &
done
sleep 2
cat <<MSG

Three nodes serve on 127.0.0.1:7601, :7602 and :7603 (logs in $dir/node-<i>.log),
over TLS with the development CA $dir/tls/ca.pem; they talk to each other over
TLS bound to their node keys.
Try:
  export GPULEDGER_CACERT=$dir/tls/ca.pem GPULEDGER_GENESIS=$dir/genesis.json
  $bin/gpuledger --node 127.0.0.1:7602 submit manufacture --key $dir/keys/acme-gpu.key --serial GPU-0001 --model H100-SXM5-80GB
  $bin/gpuledger --node 127.0.0.1:7603 --min-index 1 serial GPU-0001
  $bin/gpuledger --node 127.0.0.1:7601 cluster status
  $bin/gpuledger --node 127.0.0.1:7601 checkpoint --min-cosigners 3
  $bin/gpuledger --node 127.0.0.1:7603 verify --min-signers 3 GPU-0001
  $bin/grpcurl -cacert $dir/tls/ca.pem 127.0.0.1:7602 gpuledger.v1.ClusterService/GetClusterStatus
Ctrl-C stops the cluster.
MSG
wait
