#!/usr/bin/env bash
# make demo: two sites on this machine (each its own folder, database, API and CA), paired over
# HTTPS; three test-guest VMs on site-a writing their logs, replicated to site-b and protected;
# a recovery plan at site-b runs a test recovery into an isolated network, cleans it up, then a
# planned migration with zero data loss (checked record by record), and prints its report; a
# fourth VM replicated continuously is read back as of some seconds ago.
set -euo pipefail
cd "$(dirname "$0")/.."
MAMORI=(node bin/mamori)
A=$(mktemp -d /tmp/mamori-demo-a.XXXXXX)
B=$(mktemp -d /tmp/mamori-demo-b.XXXXXX)
PIDS=()
json() { node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const v=JSON.parse(s);const r=('"$1"');console.log(r??"")})'; }
cleanup() {
  # Stop what this demo started, by its own pids only.
  for d in "$A" "$B"; do
    for pid in $("${MAMORI[@]}" --data "$d" vm list --json 2>/dev/null | json 'v.filter(x=>x.pid).map(x=>x.pid).join(" ")' 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
  done
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  # Storage daemons of a replication cycle in flight outlive their server by design (its next
  # start cleans up): this demo's sites do not start again, so stop them by their pid files,
  # checking that each pid is still a process of this demo's folders.
  for f in $(find "$A" "$B" -name '*.pid' 2>/dev/null); do
    pid=$(cat "$f" 2>/dev/null || true)
    [ -n "$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -e "$A" -e "$B" && kill -9 "$pid" 2>/dev/null || true
  done
  # The isolated test network's bridge, by the name site-b gave it.
  [ -n "${TESTBR:-}" ] && ip link del dev "$TESTBR" 2>/dev/null || true
  rm -rf "$A" "$B"
}
trap cleanup EXIT
# Interrupted or terminated: exit, so the EXIT trap cleans up.
trap 'exit 130' INT TERM
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
a() { "${MAMORI[@]}" --data "$A" "$@"; }
b() { "${MAMORI[@]}" --data "$B" "$@"; }

start_site() { # DIR NAME
  "${MAMORI[@]}" serve --data "$1" --listen 127.0.0.1:0 --name "$2" >"$1/server.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 100); do [ -s "$1/url" ] && break; sleep 0.1; done
  [ -s "$1/url" ] || { cat "$1/server.log"; exit 1; }
  echo "$2: $(cat "$1/url") (data $1)"
}

step "starting two sites, each with its own CA, database and API"
start_site "$A" site-a
start_site "$B" site-b

step "mamori host info (site-a)"
a host info

step "pairing: mamori site pair URL --token PEER_ADMIN_TOKEN, on each side"
a site pair "$(cat "$B/url")" --token "$(cat "$B/admin-token")"
b site pair "$(cat "$A/url")" --token "$(cat "$A/admin-token")"
a site list

VMS=(db app web)
step "three test-guest VMs on site-a, each writing its log: mamori vm create NAME --test-guest --data-disk 32M"
for vm in "${VMS[@]}"; do a vm create "$vm" --test-guest --data-disk 32M --writelog-rate 10 >/dev/null; a vm start "$vm" >/dev/null; done
printf 'booting the test guests under QEMU'
for vm in "${VMS[@]}"; do
  for _ in $(seq 1 360); do
    hb=$(a vm show "$vm" --json | json 'v.lastHeartbeatAt')
    [ -n "$hb" ] && break; printf '.'; sleep 0.5
  done
  [ -n "$hb" ] || { echo "no heartbeat from $vm"; exit 1; }
done
echo
a vm list

step "replicate them to site-b (RPO 30s) and protect them: mamori group create apps --vm db --vm app --vm web"
for vm in "${VMS[@]}"; do a replicate enable "$vm" --to site-b --rpo 30s --points 6 >/dev/null; done
for vm in "${VMS[@]}"; do
  for _ in $(seq 1 240); do [ -n "$(a replicate status "$vm" --json | json 'v.lastPointAt')" ] && break; sleep 0.5; done
done
a replicate status
a group create apps --vm db --vm app --vm web

step "site-b: an isolated test network and inventory mappings (mamori network create / mamori mapping set)"
b network create testnet --isolated
TESTBR=$(b network list --json | json 'v.find(n=>n.name==="testnet").bridge')
b mapping set --peer site-a network user user --test testnet
b mapping set --peer site-a pool default default
b mapping list

step "site-b: mamori plan apply apps-plan.yaml"
cat >"$B/apps-plan.yaml" <<'YAML'
name: apps-plan
description: database first, then the application and the web tier (which needs the application)
protectionGroups: [apps]
shutdownTimeout: 60s
concurrency: 2
vms:
  db:
    priority: 1
    testIp: { address: 192.168.77.10/24 }
  app:
    priority: 2
    testIp: { address: 192.168.77.11/24 }
  web:
    priority: 2
    dependsOn: [app]
    testIp: { address: 192.168.77.12/24 }
steps:
  - after: priority 1
    command: ["/bin/echo", "database is up"]
    timeout: 30s
YAML
cat "$B/apps-plan.yaml"
b plan apply "$B/apps-plan.yaml"

step "mamori plan run apps-plan --mode test --dry-run"
b plan run apps-plan --mode test --dry-run

step "mamori plan run apps-plan --mode test: copies of the VMs in the isolated network; site-a keeps running"
b plan run apps-plan --mode test
b vm list
for vm in "${VMS[@]}"; do b vm console "$vm" --lines 5000 | grep -E 'mamori-guest ip' | tail -n 1 | sed "s/^/$vm (test copy) console: /" || true; done
echo "ports on the test network's bridge $TESTBR: $(ip -o link show master "$TESTBR" | awk -F': ' '{print $2}' | cut -d@ -f1 | tr '\n' ' ')"
a vm list

step "mamori plan run apps-plan --mode cleanup"
b plan run apps-plan --mode cleanup
b vm list

step "mamori plan run apps-plan --mode planned: shut down at site-a, last sync, recover at site-b"
b plan run apps-plan --mode planned
RUN=$(b plan history apps-plan --json | json 'v[0].run')
b vm list

step "zero data loss: each guest's last acknowledged record is in the point the recovery used"
for vm in "${VMS[@]}"; do
  serial=$(a vm show "$vm" --json | json 'v.serialLog')
  acked=$(grep -E '^mamori-wl ack' "$serial" | tail -n 1 | tr -d '\r' | awk '{print $3}')
  point=$(b plan report "$RUN" --json | json "v.vms['$vm'].point.id")
  held=$(a replicate verify "$vm" --point "$point" --json | json 'v.report.lastSequence')
  echo "$vm: acknowledged $acked, recovered point holds $held"
  [ "$held" -ge "$acked" ] || { echo "data lost for $vm"; exit 1; }
done

step "split-brain safety: site-a keeps its superseded copies off"
a vm start db 2>&1 | head -n 1 || true

step "mamori plan history; mamori plan report $RUN --html"
b plan history
b plan report "$RUN" --html "$B/report.html" | head -n 8
echo "(the HTML report was written to $B/report.html; it goes with the demo's folders)"

step "continuous replication: mamori replicate enable ledger --to site-b --continuous --checkpoint 1s"
a vm create ledger --test-guest --data-disk 64M --writelog-rate 50 >/dev/null
a vm start ledger >/dev/null
for _ in $(seq 1 360); do [ -n "$(a vm show ledger --json | json 'v.lastHeartbeatAt')" ] && break; sleep 0.5; done
a replicate enable ledger --to site-b --continuous --checkpoint 1s --journal 1h
for _ in $(seq 1 240); do [ "$(a replicate status ledger --json | json 'v.journal?.state')" = streaming ] && break; sleep 0.5; done
START=$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)
echo "journalling every write of ledger to site-b; waiting 15 s of checkpoints"
sleep 15
a replicate status ledger | grep -E '^(journal|continuous|lag)'
# Rewind 8 seconds: the replica at site-b, as it was then.
T=$(date -u -d '8 seconds ago' +%Y-%m-%dT%H:%M:%S.%3NZ)
echo "points in time at site-b between $START and now: $(a replicate points ledger --between "$START" "$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)" --json | json 'v.length')"
step "rewind ledger to $T: mamori replicate verify ledger --at $T"
a replicate verify ledger --at "$T" --json | json '`rounded down to the checkpoint of ${v.point.time}: a ${v.report.consistent ? "consistent" : "BROKEN"} log of ${v.report.gapFreePrefix} records, the last written at ${v.report.lastTime} (guest clock)`'
serial=$(a vm show ledger --json | json 'v.serialLog')
echo "meanwhile the guest has acknowledged $(grep -E '^mamori-wl ack' "$serial" | tail -n 1 | tr -d '\r' | awk '{print $3}') records: the rewound copy ends 8 seconds back"
a replicate disable ledger >/dev/null

step "what happened"
cat <<TXT
- started two site servers (REST API over HTTPS, SQLite, a CA each) and paired them
- booted three test guests on site-a, replicated them to site-b (dirty bitmaps + fleecing, NBD over
  TLS into qemu-storage-daemon) and protected them as one group
- a recovery plan at site-b (two priority groups, a dependency, test IPs, a command step):
  test recovery into an isolated bridge on overlays over the replicas, cleanup, then a planned
  migration: guests shut down, last sync, replicas promoted, VMs recovered and waited for
- every record the guests acknowledged before shutdown is in the recovered points (zero loss)
- a fourth guest replicated continuously: QEMU logs its every write, site-b journals them with a
  checkpoint a second, and its disk read back as of 8 seconds ago ends there, record by record
TXT
for vm in "${VMS[@]}"; do b vm delete "$vm" --force >/dev/null; done
b network delete testnet >/dev/null && TESTBR=
echo "demo finished"
