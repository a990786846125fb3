#!/usr/bin/env bash
# set-irq-affinity.sh: show, and on request set, where a NIC's interrupts and packet
# steering run, so that they stay off (or line up with) the cores running corerelay.
#
# DRY RUN BY DEFAULT: without --apply it only reads /proc and /sys and prints what it
# would write. With --apply it writes /proc/irq/N/smp_affinity_list and, if asked, the
# RPS/XPS masks under /sys/class/net/IFACE/queues/. Nothing it writes survives a reboot
# or a NIC reset. irqbalance may undo IRQ affinity (see the warning it prints).
#
# Usage:
#   set-irq-affinity.sh --iface IFACE                         # show only
#   set-irq-affinity.sh --iface IFACE --cpus LIST [--mode spread|pin]
#                       [--irqs LIST] [--rps LIST|off] [--xps LIST|off] [--apply]
#
#   --iface IFACE   network interface, e.g. enp65s0f0
#   --cpus LIST     CPUs for the NIC's IRQs, e.g. 0-1 or 0,1,32,33 (the housekeeping CPUs)
#   --mode spread   IRQ k goes to the k-th CPU of LIST, round robin (default)
#   --mode pin      every IRQ gets the whole LIST (the kernel picks one CPU within it)
#   --irqs LIST     use these IRQ numbers instead of discovering them
#   --rps LIST|off  set every rx queue's rps_cpus to LIST (off = 0 = no RPS)
#   --xps LIST|off  spread LIST over the tx queues: tx queue q gets the CPUs of LIST whose
#                   position modulo the number of tx queues is q (off = clear)
#   --apply         write the settings (needs root). Without it, nothing is written.
#
# IRQ discovery: /sys/class/net/IFACE/device/msi_irqs (PCI NICs with MSI/MSI-X), or
# for virtio NICs the "virtioN-input/output" lines of /proc/interrupts, or else the
# /proc/interrupts lines that name IFACE.
# For tests, IRQ_TOOL_ROOT=/some/dir makes the script read and write
# $IRQ_TOOL_ROOT/proc/... and $IRQ_TOOL_ROOT/sys/... instead of the real ones.
set -euo pipefail

ROOT="${IRQ_TOOL_ROOT:-}"
PROC="$ROOT/proc"
SYS="$ROOT/sys"

iface="" cpus="" mode="spread" irqs_arg="" rps="" xps="" apply=0

die() { echo "error: $*" >&2; exit 2; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --iface) iface="${2:?--iface needs a value}"; shift 2 ;;
    --cpus)  cpus="${2:?--cpus needs a value}"; shift 2 ;;
    --mode)  mode="${2:?--mode needs a value}"; shift 2 ;;
    --irqs)  irqs_arg="${2:?--irqs needs a value}"; shift 2 ;;
    --rps)   rps="${2:?--rps needs a value}"; shift 2 ;;
    --xps)   xps="${2:?--xps needs a value}"; shift 2 ;;
    --apply) apply=1; shift ;;
    -h|--help) usage 0 ;;
    *) echo "unknown argument: $1" >&2; usage 2 ;;
  esac
done

[[ -n "$iface" ]] || { echo "--iface is required" >&2; usage 2; }
[[ "$iface" =~ ^[A-Za-z0-9._@:-]+$ ]] || die "suspicious interface name: $iface"
[[ -d "$SYS/class/net/$iface" ]] || die "no such interface: $iface ($SYS/class/net/$iface)"
[[ "$mode" == spread || "$mode" == pin ]] || die "--mode must be spread or pin"

# expand "0-3,8,10-11" into "0 1 2 3 8 10 11" (sorted, unique)
expand_list() {
  local list="$1" part a b out=()
  [[ "$list" =~ ^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$ ]] || die "bad CPU/IRQ list: $list"
  IFS=',' read -ra parts <<< "$list"
  for part in "${parts[@]}"; do
    if [[ "$part" == *-* ]]; then
      a=$((10#${part%-*})); b=$((10#${part#*-}))
      if (( a > b )); then die "bad range: $part"; fi
      for ((i = a; i <= b; i++)); do out+=("$i"); done
    else
      out+=("$((10#$part))")
    fi
  done
  printf '%s\n' "${out[@]}" | sort -n -u | tr '\n' ' ' | sed 's/ $//'
}

# "2 3 40" -> sysfs cpumask "00000100,0000000c" (comma-separated 32-bit words, high first)
cpus_to_mask() {
  local cpu max=0 nwords w
  local -a words=()
  for cpu in $1; do if (( cpu > max )); then max=$cpu; fi; done
  nwords=$(( max / 32 + 1 ))
  for ((w = 0; w < nwords; w++)); do words[w]=0; done
  for cpu in $1; do words[cpu / 32]=$(( words[cpu / 32] | (1 << (cpu % 32)) )); done
  local out=""
  for ((w = nwords - 1; w >= 0; w--)); do
    out+=$(printf '%08x' "${words[w]}")
    if (( w > 0 )); then out+=","; fi
  done
  echo "$out"
}

online_cpus=$(expand_list "$(cat "$SYS/devices/system/cpu/online")")
check_online() {
  local cpu
  for cpu in $1; do
    [[ " $online_cpus " == *" $cpu "* ]] ||
      die "CPU $cpu is not online (online: $(cat "$SYS/devices/system/cpu/online"))"
  done
}

irq_name() { # the last column of the IRQ's /proc/interrupts line
  awk -v n="$1:" '$1 == n { print $NF }' "$PROC/interrupts"
}

discover_irqs() {
  local dev
  if [[ -d "$SYS/class/net/$iface/device/msi_irqs" ]]; then
    ls "$SYS/class/net/$iface/device/msi_irqs" | sort -n | tr '\n' ' '
    return
  fi
  dev=$(basename "$(readlink -f "$SYS/class/net/$iface/device" 2>/dev/null || true)")
  if [[ "$dev" =~ ^virtio[0-9]+$ ]]; then
    awk -v d="$dev" '$NF ~ ("^" d "-(input|output)\\.") { sub(":", "", $1); print $1 }' \
      "$PROC/interrupts" | tr '\n' ' '
    return
  fi
  awk -v i="$iface" 'index($NF, i) == 1 { sub(":", "", $1); print $1 }' \
    "$PROC/interrupts" | tr '\n' ' '
}

queues() { # QUEUE DIR PREFIX (rx or tx): paths in numeric order (tx-2 before tx-10)
  local n=0
  while [[ -d "$SYS/class/net/$iface/queues/$1-$n" ]]; do
    echo "$SYS/class/net/$iface/queues/$1-$n"; n=$((n + 1))
  done
}

# write VALUE FILE: print it always, write it only with --apply; report failures, go on
failures=0
write() {
  local value="$1" file="$2"
  echo "  echo $value > ${file#"$ROOT"}"
  if (( apply )); then
    if ! echo "$value" 2>/dev/null > "$file"; then
      echo "    FAILED (managed IRQ, missing file or not root?)" >&2
      failures=$((failures + 1))
    fi
  fi
}

# validate every list before printing anything
cpu_list="" rps_list="" xps_list=""
if [[ -n "$cpus" ]]; then cpu_list=$(expand_list "$cpus"); check_online "$cpu_list"; fi
if [[ -n "$rps" && "$rps" != off ]]; then rps_list=$(expand_list "$rps"); check_online "$rps_list"; fi
if [[ -n "$xps" && "$xps" != off ]]; then xps_list=$(expand_list "$xps"); check_online "$xps_list"; fi

if [[ -n "$irqs_arg" ]]; then
  irqs=$(expand_list "$irqs_arg")
else
  irqs=$(discover_irqs)
fi

echo "interface $iface, online CPUs: $(cat "$SYS/devices/system/cpu/online")"
if [[ -r "$SYS/class/net/$iface/device/numa_node" ]]; then
  echo "NIC NUMA node: $(cat "$SYS/class/net/$iface/device/numa_node") (-1 = none)"
fi
echo
echo "IRQs (current affinity / effective CPU):"
if [[ -z "${irqs// /}" ]]; then
  echo "  none found; pass --irqs LIST (see: grep $iface /proc/interrupts)"
fi
for irq in $irqs; do
  [[ -d "$PROC/irq/$irq" ]] || { echo "  $irq: no $PROC/irq/$irq"; continue; }
  printf '  %-5s %-28s affinity %-12s effective %s\n' "$irq" "$(irq_name "$irq")" \
    "$(cat "$PROC/irq/$irq/smp_affinity_list" 2>/dev/null || echo '?')" \
    "$(cat "$PROC/irq/$irq/effective_affinity_list" 2>/dev/null || echo '?')"
done
echo
echo "queues:"
for q in $(queues rx) $(queues tx); do
  name=$(basename "$q")
  if [[ "$name" == rx-* ]]; then
    echo "  $name rps_cpus $(cat "$q/rps_cpus" 2>/dev/null || echo 'n/a')"
  else
    echo "  $name xps_cpus $(cat "$q/xps_cpus" 2>/dev/null || echo 'n/a')"
  fi
done

if pgrep -x irqbalance >/dev/null 2>&1; then
  echo
  echo "WARNING: irqbalance is running and will move these IRQs again. Either stop it"
  echo "  (systemctl disable --now irqbalance) or keep it off the executor CPUs with"
  echo "  IRQBALANCE_BANNED_CPULIST=<executor CPUs> in /etc/default/irqbalance"
  echo "  (/etc/sysconfig/irqbalance on RHEL-like systems), then restart it."
fi

[[ -n "$cpus$rps$xps" ]] || { echo; echo "(show only: pass --cpus/--rps/--xps to plan changes)"; exit 0; }

echo
if (( apply )); then
  [[ -n "$ROOT" || $EUID -eq 0 ]] || die "--apply needs root"
  echo "applying:"
else
  echo "dry run, nothing written. These writes would be made (add --apply):"
fi

if [[ -n "$cpus" ]]; then
  read -ra cpu_arr <<< "$cpu_list"
  k=0
  for irq in $irqs; do
    [[ -d "$PROC/irq/$irq" ]] || continue
    if [[ "$mode" == pin ]]; then
      target=$(echo "$cpu_list" | tr ' ' ',')
    else
      target="${cpu_arr[k % ${#cpu_arr[@]}]}"
    fi
    write "$target" "$PROC/irq/$irq/smp_affinity_list"
    k=$((k + 1))
  done
fi

if [[ -n "$rps" ]]; then
  if [[ "$rps" == off ]]; then mask=0; else
    mask=$(cpus_to_mask "$rps_list")
  fi
  for q in $(queues rx); do
    if [[ -e "$q/rps_cpus" ]]; then write "$mask" "$q/rps_cpus"; fi
  done
fi

if [[ -n "$xps" ]]; then
  txqs=()
  for q in $(queues tx); do
    # single-queue devices have the file but refuse to read it (ENOENT): skip those
    if cat "$q/xps_cpus" >/dev/null 2>&1; then txqs+=("$q"); fi
  done
  if (( ${#txqs[@]} == 0 )); then
    echo "  (no usable xps_cpus: single tx queue or kernel without XPS; nothing to do)"
  elif [[ "$xps" == off ]]; then
    for q in "${txqs[@]}"; do write 0 "$q/xps_cpus"; done
  else
    read -ra xps_arr <<< "$xps_list"
    nq=${#txqs[@]}
    for ((qi = 0; qi < nq; qi++)); do
      sel=""
      for ((c = qi; c < ${#xps_arr[@]}; c += nq)); do sel+="${xps_arr[c]} "; done
      if [[ -z "$sel" ]]; then mask=0; else mask=$(cpus_to_mask "$sel"); fi
      write "$mask" "${txqs[qi]}/xps_cpus"
    done
  fi
fi

if (( apply )); then
  (( failures == 0 )) || { echo "$failures write(s) failed" >&2; exit 1; }
  echo "done. Verify: grep -E '$iface|virtio' /proc/interrupts; cat /proc/irq/N/effective_affinity_list"
fi
