#!/bin/sh
# /init of the mamori test guest: PID 1, busybox sh. Packed into the initramfs
# by src/guest/build-test-guest.ts; its serial lines are parsed by
# src/guest/serial-log.ts.
#
# Kernel command line:
#   mamori.wl=/dev/vdb | mamori.wl=serial:ID   write-log device (absent: no write log)
#   mamori.wl_rate=N                           records per second (default 10, 0 = flat out)
#   mamori.wl_payload=random|text              record payloads: random (default, incompressible)
#                                              or text (compressible, about 2.8x with lz4)
#   mamori.acpi=0|1                            1 (default): the ACPI power button stops the
#                                              writer, syncs and powers off; 0: it is ignored
#   mamori.diskbench=serial:ID1,serial:ID2,... disk benchmark mode (mamori bench storage): no
#                                              write log; after the setup below, runs
#                                              /bin/diskbench (src/guest/diskbench.c) on each
#                                              disk in turn (a /dev/vdX name works too), which
#                                              OVERWRITES the first diskbench_mib MiB, then
#                                              prints "mamori-guest diskbench done" and powers off
#   mamori.diskbench_mib=N                     MiB per disk for the benchmark (default 256)
#   mamori.diskbench_secs=S                    seconds for each random test (default 5)
#
# diskbench prints one line per disk:
#   mamori-guest diskbench dev=vdX size_mib=N seq_write_mbps=X seq_read_mbps=Y rand_write_iops=Z rand_read_iops=W
# or "mamori-guest diskbench dev=vdX error=WHAT"; a disk that never appears gives
# "mamori-guest diskbench dev=serial:ID error=device_not_found".
#
# A cloud-init NoCloud seed (an ISO 9660 disk labelled cidata, made by mamori's IP
# customization) sets the hostname and each NIC's address, matched by MAC; the guest
# prints "mamori-guest ip <nic> <address>" for each static address it took, then for it,
# and for a NIC with dhcp4: true once busybox udhcpc holds a lease, what the NIC holds
# read back: "mamori-guest net <nic> [dhcp] addr=<a/p,...> router=<gw> dns=<a,b>".
#
# Every line goes out with one echo, i.e. one write(): the tty serialises whole
# writes, so these lines and the writer's never interleave mid-line.

/bin/busybox --install -s
export PATH=/sbin:/bin:/usr/sbin:/usr/bin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /run /tmp /var/log
# Kernel messages go straight to the UART and can split our lines: keep only
# errors and worse (an I/O error on the log disk is worth a split line).
echo 4 > /proc/sys/kernel/printk

while read -r mod; do
  insmod "/lib/modules/$mod" 2>/dev/null || echo "mamori-guest warning insmod $mod failed"
done < /lib/modules/load-order

WL=
RATE=10
PAYLOAD=random
ACPI=1
DISKBENCH=
DB_MIB=256
DB_SECS=5
set -f
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    mamori.wl=*) WL=${arg#mamori.wl=} ;;
    mamori.wl_rate=*) RATE=${arg#mamori.wl_rate=} ;;
    mamori.wl_payload=*) PAYLOAD=${arg#mamori.wl_payload=} ;;
    mamori.acpi=*) ACPI=${arg#mamori.acpi=} ;;
    mamori.diskbench=*) DISKBENCH=${arg#mamori.diskbench=} ;;
    mamori.diskbench_mib=*) DB_MIB=${arg#mamori.diskbench_mib=} ;;
    mamori.diskbench_secs=*) DB_SECS=${arg#mamori.diskbench_secs=} ;;
  esac
done
set +f
case "$RATE" in
  '' | *[!0-9]*) echo "mamori-guest warning mamori.wl_rate=$RATE is not a number, using 10"; RATE=10 ;;
esac
case "$PAYLOAD" in
  random | text) ;;
  *) echo "mamori-guest warning mamori.wl_payload=$PAYLOAD is not random or text, using random"; PAYLOAD=random ;;
esac
case "$DB_MIB" in
  '' | 0 | *[!0-9]*) echo "mamori-guest warning mamori.diskbench_mib=$DB_MIB is not a positive number, using 256"; DB_MIB=256 ;;
esac
case "$DB_SECS" in
  '' | 0 | *[!0-9]*) echo "mamori-guest warning mamori.diskbench_secs=$DB_SECS is not a positive number, using 5"; DB_SECS=5 ;;
esac
# The benchmark overwrites its disks and measures them alone: no write log.
if [ -n "$DISKBENCH" ] && [ -n "$WL" ]; then
  echo "mamori-guest warning mamori.diskbench given: no write log"
  WL=
fi

read -r BOOT_ID < /proc/sys/kernel/random/boot_id

# Prints the device node for a mamori.wl value, or fails while it is not there yet.
wl_device() {
  case "$1" in
    serial:*)
      for s in /sys/block/*/serial; do
        [ -r "$s" ] || continue
        if [ "$(cat "$s")" = "${1#serial:}" ]; then
          d=${s%/serial}
          [ -b "/dev/${d##*/}" ] && echo "/dev/${d##*/}" && return 0
        fi
      done
      return 1 ;;
    *) [ -b "$1" ] && echo "$1" ;;
  esac
}

last_seq() {
  s=0
  [ -r /run/mamori-wl.seq ] && read -r s < /run/mamori-wl.seq
  echo "${s:-0}"
}

WL_PID=
DEV=
if [ -n "$WL" ]; then
  # Disks are probed asynchronously after insmod: give them 20 s.
  i=0
  until DEV=$(wl_device "$WL") || [ $i -ge 200 ]; do sleep 0.1; i=$((i + 1)); done
  if [ -n "$DEV" ]; then
    /bin/mamori-wl --seq-file /run/mamori-wl.seq --payload "$PAYLOAD" "$DEV" "$RATE" &
    WL_PID=$!
    echo "$WL_PID" > /run/mamori-wl.pid
  else
    echo "mamori-guest error write-log device $WL not found"
  fi
fi

# busybox udhcpc's lease script: udhcpc runs it with $1 = deconfig | bound | renew | ...
# and the lease in $ip, $mask (prefix length), $router and $dns.
cat > /run/udhcpc.sh <<'EOF'
#!/bin/sh
case "$1" in
  deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    for r in $router; do ip route add default via "$r" dev "$interface"; break; done
    [ -n "$dns" ] && for d in $dns; do echo "nameserver $d"; done > /etc/resolv.conf ;;
esac
exit 0
EOF
chmod 755 /run/udhcpc.sh

# cloud-init NoCloud: only the keys mamori writes, one per line (src/guest/nocloud-drive.ts).
apply_nocloud() {
  mkdir -p /run/cidata
  found=
  for dev in /dev/vd* /dev/sd* /dev/sr*; do
    [ -b "$dev" ] || continue
    # Never the write log's disk: mounting it reads blocks 16-115 (32-232 KiB) through the page
    # cache while the writer writes there with O_DIRECT|O_DSYNC, and a page the mount holds at
    # that instant fails the kernel's invalidation after the direct write, which it reports as
    # EIO from the write's sync (dio_warn_stale_pagecache: "Page cache invalidation failure on
    # direct I/O"). The data was written; the writer stopped. Seen at a failover's first boot.
    [ "$dev" = "$DEV" ] && continue
    mount -t iso9660 -o ro "$dev" /run/cidata 2>/dev/null || continue
    if [ -r /run/cidata/meta-data ]; then found=$dev; break; fi
    umount /run/cidata
  done
  [ -n "$found" ] || return 0
  name=$(sed -n 's/^local-hostname: *//p' /run/cidata/meta-data)
  if [ -n "$name" ]; then hostname "$name"; echo "mamori-guest hostname $name"; fi
  [ -r /run/cidata/network-config ] || return 0
  awk '
    function out() { if (mac != "") print mac, (dhcp ? "dhcp" : addr), (gw == "" ? "-" : gw), (dns == "" ? "-" : dns) }
    /^  [A-Za-z0-9_-]+:$/ { out(); mac = ""; addr = ""; gw = ""; dns = ""; dhcp = 0 }
    /^      macaddress:/ { v = $2; gsub(/"/, "", v); mac = tolower(v) }
    /^    addresses:/ { v = $0; sub(/.*\[/, "", v); sub(/[],].*/, "", v); gsub(/ /, "", v); addr = v }
    /^    dhcp4: *true/ { dhcp = 1 }
    /^    gateway4:/ { gw = $2 }
    /^      addresses:/ { v = $0; sub(/.*\[/, "", v); sub(/\].*/, "", v); gsub(/ /, "", v); dns = v }
    END { out() }
  ' /run/cidata/network-config > /run/cidata.nics
  while read -r mac addr gw dns; do
    nic=
    for n in /sys/class/net/*; do
      [ "$(cat "$n/address" 2>/dev/null)" = "$mac" ] && nic=${n##*/}
    done
    if [ -z "$nic" ]; then echo "mamori-guest warning no NIC with MAC $mac"; continue; fi
    ip link set "$nic" up
    if [ "$addr" = dhcp ]; then
      # busybox udhcpc: -n gives up without a lease, -q quits once bound; /run/udhcpc.sh applies it.
      if udhcpc -i "$nic" -n -q -t 10 -T 2 -s /run/udhcpc.sh > "/run/udhcpc.$nic.log" 2>&1; then
        echo "mamori-guest net $nic dhcp addr=$(ip -4 -o addr show dev "$nic" | awk '{ printf "%s%s", s, $4; s = "," }') router=$(ip route | awk -v n="$nic" '$1 == "default" && $5 == n { print $3; exit }') dns=$(awk '/^nameserver/ { printf "%s%s", s, $2; s = "," }' /etc/resolv.conf 2>/dev/null)"
      else
        echo "mamori-guest warning no DHCP lease on $nic"
      fi
      continue
    fi
    if ip addr add "$addr" dev "$nic"; then
      [ "$gw" != - ] && ip route add default via "$gw" dev "$nic"
      [ "$dns" != - ] && echo "$dns" | tr , '\n' | sed 's/^/nameserver /' > /etc/resolv.conf
      echo "mamori-guest ip $nic $addr"
      # What the NIC holds now, read back: its addresses, the default route and the DNS servers.
      echo "mamori-guest net $nic addr=$(ip -4 -o addr show dev "$nic" | awk '{ printf "%s%s", s, $4; s = "," }') router=$(ip route | awk -v n="$nic" '$1 == "default" && $5 == n { print $3; exit }') dns=$(awk '/^nameserver/ { printf "%s%s", s, $2; s = "," }' /etc/resolv.conf 2>/dev/null)"
    else
      echo "mamori-guest warning could not set $addr on $nic"
    fi
  done < /run/cidata.nics
}
apply_nocloud

# A desktop pool's customization (src/pools/desktop-customization.ts): the script on the
# seed reports each step as "mamori-guest customize ..." lines, which the site reads back.
if [ -r /run/cidata/mamori-customize.sh ]; then
  sh /run/cidata/mamori-customize.sh
fi

# qemu-guest-agent, when the VM has its channel (mamori vm create --guest-agent): a
# virtio console device (id 3) whose port is named org.qemu.guest_agent.0.
if grep -qs 0x0003 /sys/bus/virtio/devices/*/device; then
  i=0
  PORT=
  while [ -z "$PORT" ] && [ $i -lt 50 ]; do
    for p in /sys/class/virtio-ports/*; do
      [ "$(cat "$p/name" 2>/dev/null)" = org.qemu.guest_agent.0 ] && [ -c "/dev/${p##*/}" ] && PORT=/dev/${p##*/}
    done
    [ -n "$PORT" ] || sleep 0.1
    i=$((i + 1))
  done
  if [ -n "$PORT" ]; then
    qemu-ga -m virtio-serial -p "$PORT" -F/etc/qemu/fsfreeze-hook -t /run -f /run/qemu-ga.pid -l /run/qemu-ga.log &
    echo "mamori-guest agent on $PORT"
  else
    echo "mamori-guest warning no guest agent port"
  fi
fi

if [ "$ACPI" = 1 ]; then
  # acpid opens /dev/input/event* once, at start: wait until the power button's
  # input device exists or presses would go unseen.
  i=0
  until grep -qs 'Power Button' /sys/class/input/input*/name || [ $i -ge 100 ]; do sleep 0.1; i=$((i + 1)); done
  i=0
  until [ -e /dev/input/event0 ] || [ $i -ge 50 ]; do sleep 0.1; i=$((i + 1)); done
  # Button press -> /etc/acpi/PWRF/00000080 (busybox acpid's built-in map).
  acpid -f -c /etc/acpi -l /run/acpid.log &
fi

power_off() {
  if [ -n "$WL_PID" ]; then
    kill -TERM "$WL_PID" 2>/dev/null
    wait "$WL_PID"
  fi
  sync
  echo "mamori-guest poweroff last_seq=$(last_seq)"
  poweroff -f
  sleep 30
}

echo "mamori-guest ready boot_id=$BOOT_ID"

# Disk benchmark mode: each listed disk in order, then power off.
if [ -n "$DISKBENCH" ]; then
  set -f
  IFS=,
  # shellcheck disable=SC2086 # split on commas only, no globbing
  set -- $DISKBENCH
  unset IFS
  set +f
  for disk in "$@"; do
    [ -n "$disk" ] || continue
    # Disks are probed asynchronously after insmod: give each 10 s.
    DEV=
    i=0
    until DEV=$(wl_device "$disk") || [ $i -ge 100 ]; do sleep 0.1; i=$((i + 1)); done
    if [ -n "$DEV" ]; then
      /bin/diskbench "$DEV" "$DB_MIB" "$DB_SECS"
    else
      echo "mamori-guest diskbench dev=$disk error=device_not_found"
    fi
  done
  echo "mamori-guest diskbench done"
  power_off
fi

n=0
while :; do
  [ -e /run/mamori-poweroff ] && power_off
  n=$((n + 1))
  echo "mamori-hb $n boot_id=$BOOT_ID wl_seq=$(last_seq)"
  sleep 1
done
