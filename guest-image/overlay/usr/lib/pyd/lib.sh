# shellcheck shell=sh
# Shared by the pyd guest scripts, which run under busybox sh: its applets (mount, mkdir,
# ip, modprobe, cat...) run in-process or as one static binary, where each dynamically
# linked tool would cost a tenth of a second or so under software emulation.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH

# Appends "EVENT UPTIME" to /run/pyd/timeline (read by bench/ and pyd) and the kernel log.
# Diagnostics only: it never fails, so a script under `set -e` goes on.
mark() {
  read -r up _ < /proc/uptime || up=unknown
  echo "$1 $up" >> /run/pyd/timeline || :
  echo "pyd: mark $1 $up" > /dev/kmsg || :
}

# To the kernel log, which the console shows (stderr before /dev/kmsg exists).
log() { echo "pyd: $*" > /dev/kmsg 2>/dev/null || echo "pyd: $*" >&2; }
