#!/usr/bin/env bash
# make demo: one site in a temporary folder, a test-guest VM with a data disk, its heartbeat
# and write log growing, a clean stop, and the write log verified record by record.
set -euo pipefail
cd "$(dirname "$0")/.."
MAMORI=(node bin/mamori)
DATA=$(mktemp -d /tmp/mamori-demo.XXXXXX)
SERVER_PID=
cleanup() {
  # Stop what this demo started, by its own pids only.
  if [ -n "$SERVER_PID" ]; then
    for pid in $("${MAMORI[@]}" --data "$DATA" vm list --json 2>/dev/null | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{try{for(const v of JSON.parse(s))if(v.pid)console.log(v.pid)}catch{}})'); do kill -9 "$pid" 2>/dev/null || true; done
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$DATA"
}
trap cleanup EXIT
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "starting a site in $DATA"
"${MAMORI[@]}" serve --data "$DATA" --listen 127.0.0.1:0 --name demo-site >"$DATA/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do [ -s "$DATA/url" ] && break; sleep 0.1; done
[ -s "$DATA/url" ] || { cat "$DATA/server.log"; exit 1; }
echo "site URL $(cat "$DATA/url"), admin token in $DATA/admin-token"

step "mamori host info"
"${MAMORI[@]}" --data "$DATA" host info

step "mamori vm create demo --test-guest --data-disk 64M --writelog-rate 10"
"${MAMORI[@]}" --data "$DATA" vm create demo --test-guest --data-disk 64M --writelog-rate 10

step "mamori vm start demo"
start=$(date +%s%N)
"${MAMORI[@]}" --data "$DATA" vm start demo
printf 'waiting for the first heartbeat'
for _ in $(seq 1 240); do
  hb=$("${MAMORI[@]}" --data "$DATA" vm show demo --json | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).lastHeartbeatAt??""))')
  [ -n "$hb" ] && break; printf '.'; sleep 0.5
done
echo; [ -n "$hb" ] || { echo "no heartbeat"; exit 1; }
echo "first heartbeat after $(( ($(date +%s%N) - start) / 1000000 )) ms"

for i in 1 2 3; do
  sleep 2
  step "heartbeat and write log, look $i of 3 (mamori vm console demo)"
  "${MAMORI[@]}" --data "$DATA" vm console demo --lines 40 | grep -E '^mamori-hb' | tail -n 1
  "${MAMORI[@]}" --data "$DATA" vm console demo --lines 40 | grep -E '^mamori-wl ack' | tail -n 1
done

step "mamori vm show demo"
"${MAMORI[@]}" --data "$DATA" vm show demo

step "mamori vm stop demo (ACPI power button)"
"${MAMORI[@]}" --data "$DATA" vm stop demo --timeout 60
last_ack=$(grep -E '^mamori-wl ack' "$DATA"/vms/*/serial.log | tail -n 1 | awk '{print $3}')

step "mamori verify-writelog on the stopped VM's data disk"
"${MAMORI[@]}" verify-writelog "$DATA/pools/default/demo-data.qcow2"
echo "last sequence the guest acknowledged on its serial line: $last_ack"

step "what happened"
cat <<TXT
- started a site server (REST API + SQLite in $DATA), probed the accelerator
- created VM 'demo' with a pinned machine type and a 64 MiB qcow2 data disk
- booted the test guest (Debian kernel + busybox, built by make setup) under QEMU
- watched its heartbeat and write log through the CLI
- stopped it with the ACPI power button and verified every acknowledged record is on disk
TXT
"${MAMORI[@]}" --data "$DATA" vm delete demo >/dev/null
echo "demo finished"
