#!/usr/bin/env bash
# The baseline of bench/recovery: what an operator's script does to bring up recovered VMs by
# hand. For each priority group in turn, for each VM (at most PARALLEL at once): a qcow2
# overlay on the replica point's image, a plain qemu-system-x86_64 (same guest, devices and
# memory as mamori's VMs), then wait for the guest's first heartbeat on its serial log.
# The next group starts when every VM of the one before has its heartbeat.
#
# usage: plain-start.sh WORKDIR KERNEL INITRD PARALLEL GROUP1 GROUP2 ...
#   each GROUP is a comma-separated list of NAME=POINT_FILE
set -euo pipefail
work=$1 kernel=$2 initrd=$3 parallel=$4
shift 4

start_one() { # NAME POINT_FILE
  local name=$1 point=$2
  local disk="$work/$name.qcow2" serial="$work/$name.log"
  qemu-img create -q -f qcow2 -o cluster_size=131072,extended_l2=on -b "$point" -F qcow2 "$disk"
  qemu-system-x86_64 -name "guest=$name" -machine q35 -accel tcg -smp 1 -m 256M -nodefaults -no-user-config -display none \
    -chardev "file,id=serial0,path=$serial" -device isa-serial,chardev=serial0 \
    -drive "file=$disk,format=qcow2,if=virtio" \
    -netdev user,id=net0,restrict=on -device virtio-net-pci,netdev=net0 \
    -pidfile "$work/$name.pid" -daemonize \
    -kernel "$kernel" -initrd "$initrd" \
    -append 'console=ttyS0 panic=-1 quiet mamori.acpi=1 mamori.wl=/dev/vda mamori.wl_rate=1'
  until grep -q '^mamori-hb ' "$serial" 2>/dev/null; do sleep 0.05; done
}
export -f start_one
export work kernel initrd

for group in "$@"; do
  tr ',' '\n' <<<"$group" | tr '=' ' ' | xargs -P "$parallel" -L 1 bash -c 'start_one "$0" "$1"'
done
