#!/usr/bin/env bash
# Tribune's test fleet in network namespaces on this machine (root only).
#
#   core network   10.77.1.0/24, bridge tbr-core (this namespace: .1)
#   access network 10.77.2.0/24, bridge tbr-access (this namespace: .1,
#                  and .10-.13 for listeners spread over addresses)
#
#   namespace   core (relay, database)   access (listeners)
#   tn-origin   10.77.1.2                10.77.2.2
#   tn-edge1    10.77.1.3                10.77.2.3
#   tn-edge2    10.77.1.4                10.77.2.4
#   tn-edge3    10.77.1.5                10.77.2.5   (an edge of edge1)
#   tn-db       10.77.1.6                -           (PostgreSQL, Redis)
#
# Every node has a leg on each network, so cutting a node's core leg
# (`cut NODE SECONDS`) cuts its relay link and leaves its listeners
# connected. Links are impaired with what this kernel has: `rate NODE
# RATE` (tc tbf), `loss NODE PERCENT` (nftables numgen drops).
#
# Usage: scripts/topology.sh up | down | cut NODE SECONDS | rate NODE RATE
#        | loss NODE PERCENT | clear NODE
set -euo pipefail

NODES=(origin:2 edge1:3 edge2:4 edge3:5 db:6)

up() {
  down >/dev/null 2>&1 || true
  for net in core:1 access:2; do
    name=${net%%:*}; n=${net##*:}
    ip link add "tbr-$name" type bridge
    ip addr add "10.77.$n.1/24" dev "tbr-$name"
    ip link set "tbr-$name" up
  done
  for a in 10 11 12 13; do ip addr add "10.77.2.$a/24" dev tbr-access; done
  for node in "${NODES[@]}"; do
    name=${node%%:*}; host=${node##*:}; ns="tn-$name"
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip link add "tc-$name" type veth peer name core0 netns "$ns"
    ip link set "tc-$name" master tbr-core up
    ip -n "$ns" addr add "10.77.1.$host/24" dev core0
    ip -n "$ns" link set core0 up
    if [ "$name" != db ]; then
      ip link add "ta-$name" type veth peer name access0 netns "$ns"
      ip link set "ta-$name" master tbr-access up
      ip -n "$ns" addr add "10.77.2.$host/24" dev access0
      ip -n "$ns" link set access0 up
    fi
  done
  # bridges must not filter what they forward
  sysctl -qw net.bridge.bridge-nf-call-iptables=0 2>/dev/null || true
}

down() {
  for node in "${NODES[@]}"; do
    name=${node%%:*}
    ip netns del "tn-$name" 2>/dev/null || true
    ip link del "tc-$name" 2>/dev/null || true
    ip link del "ta-$name" 2>/dev/null || true
  done
  ip link del tbr-core 2>/dev/null || true
  ip link del tbr-access 2>/dev/null || true
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  cut)
    ip -n "tn-$2" link set core0 down
    sleep "$3"
    ip -n "tn-$2" link set core0 up ;;
  rate) tc -n "tn-$2" qdisc replace dev core0 root tbf rate "$3" burst 32kbit latency 400ms ;;
  loss)
    ip netns exec "tn-$2" nft -f - <<EOF
table inet tribune_loss
delete table inet tribune_loss
table inet tribune_loss {
  chain out {
    type filter hook output priority 0;
    numgen random mod 100 < $3 drop
  }
}
EOF
    ;;
  clear)
    tc -n "tn-$2" qdisc del dev core0 root 2>/dev/null || true
    ip netns exec "tn-$2" nft delete table inet tribune_loss 2>/dev/null || true ;;
  *) echo "usage: $0 up | down | cut NODE SECONDS | rate NODE RATE | loss NODE PERCENT | clear NODE" >&2; exit 2 ;;
esac
