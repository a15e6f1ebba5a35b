#!/bin/sh
# /init of the demo service VM (busybox ash, PID 1).
#
# It brings up just enough of a system to run one stateful service: the
# counter's state lives in RAM (/run is in the initramfs root), so a live
# migration visibly carries it, while /data (the disk) only names the service.
#
# Kernel command line options (all optional):
#   svm.ip=A.B.C.D/N   static address, used when DHCP gets no lease
#   svm.gw=A.B.C.D     default gateway for the static address
#   svm.hostname=NAME  hostname reported by the service (default svm-counter)
#   svm.dhcp=0         skip DHCP (saves ~3 s where no DHCP server exists)
#   svm.workload=NAME  light (default: the counter service only) or dirtying
#                      (also 192 MiB of data in RAM, rewritten ~1 MiB/s: load.sh)
#
# SVM_PARSE_ONLY=FILE parses FILE as the command line, prints the result and
# exits; the unit tests use it on the host.

log() { echo "svm-init: $*"; }

# Sets SVM_IP, SVM_GW, SVM_HOSTNAME, SVM_DHCP and SVM_WORKLOAD from a command line string.
# Malformed values are dropped with a warning rather than half-applied.
parse_cmdline() {
    SVM_IP='' SVM_GW='' SVM_HOSTNAME=svm-counter SVM_DHCP=1 SVM_WORKLOAD=light
    set -f  # split words, never glob them
    for word in $1; do
        case "$word" in
            svm.ip=*) SVM_IP=${word#*=} ;;
            svm.gw=*) SVM_GW=${word#*=} ;;
            svm.hostname=*) SVM_HOSTNAME=${word#*=} ;;
            svm.dhcp=*) SVM_DHCP=${word#*=} ;;
            svm.workload=*) SVM_WORKLOAD=${word#*=} ;;
        esac
    done
    set +f
    case "$SVM_IP" in
        '') ;;
        *[!0-9./]* | */*/* | [!0-9]*) log "ignoring malformed svm.ip=$SVM_IP"; SVM_IP='' ;;
        */*) ;;
        *) SVM_IP="$SVM_IP/24" ;;
    esac
    case "$SVM_GW" in
        *[!0-9.]* | [!0-9]*) log "ignoring malformed svm.gw=$SVM_GW"; SVM_GW='' ;;
    esac
    case "$SVM_HOSTNAME" in
        '' | *[!A-Za-z0-9.-]*) log "ignoring malformed svm.hostname"; SVM_HOSTNAME=svm-counter ;;
    esac
    [ "$SVM_DHCP" = 0 ] || SVM_DHCP=1
    case "$SVM_WORKLOAD" in
        light | dirtying) ;;
        *) log "ignoring unknown svm.workload"; SVM_WORKLOAD=light ;;
    esac
}

if [ -n "$SVM_PARSE_ONLY" ]; then
    parse_cmdline "$(cat "$SVM_PARSE_ONLY")"
    echo "ip=$SVM_IP gw=$SVM_GW hostname=$SVM_HOSTNAME dhcp=$SVM_DHCP workload=$SVM_WORKLOAD"
    exit 0
fi

/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
parse_cmdline "$(cat /proc/cmdline)"
hostname "$SVM_HOSTNAME"

# virtio drivers are modules in Debian's kernels; load.order lists them
# dependencies first.
while read -r ko; do
    insmod "/lib/modules/$ko" || log "could not load $ko"
done < /lib/modules/load.order

ip link set lo up
ip link set eth0 up || log "no eth0: the service will not be reachable"
got_lease=0
if [ "$SVM_DHCP" = 1 ] && udhcpc -i eth0 -n -q -t 3 -T 1 -s /etc/udhcpc.script >/dev/null 2>&1
then
    got_lease=1
fi
if [ "$got_lease" = 0 ] && [ -n "$SVM_IP" ]; then
    ip addr add "$SVM_IP" dev eth0
    [ -z "$SVM_GW" ] || ip route add default via "$SVM_GW" dev eth0
fi
log "eth0 $(ip -o -4 addr show dev eth0 | awk '{print $4}')"

# The disk: ext4 on virtio-blk, read-write. It may take a moment to appear.
mkdir -p /data
i=0
while [ ! -b /dev/vda ] && [ "$i" -lt 20 ]; do sleep 0.1; i=$((i + 1)); done
service=unknown
if [ -b /dev/vda ] && mount -t ext4 -o rw /dev/vda /data; then
    [ ! -r /data/service.txt ] || service=$(tr -cd 'A-Za-z0-9._-' < /data/service.txt)
    cat /proc/sys/kernel/random/boot_id >> /data/boots.log
else
    log "no disk at /dev/vda; serving without /data"
fi

# Service state, all in RAM.
echo "$service" > /run/service
echo 0 > /run/counter

# Respawn the web server if it ever dies; the count survives in /run.
serve() {
    while :; do
        httpd -f -p 80 -h /www
        log "httpd exited ($?); restarting"
        sleep 1
    done
}
serve &

# The dirtying workload is in place before the service says it is ready, so
# a migration started on that line moves a busy guest.
if [ "$SVM_WORKLOAD" = dirtying ]; then
    mkdir -p /run/load
    if mount -t tmpfs -o size=200m tmpfs /run/load && sh /bin/load.sh fill; then
        sh /bin/load.sh dirty &
        log "dirtying workload: $(du -sm /run/load | cut -f1) MiB in RAM"
    else
        log "the dirtying workload could not fill /run/load"
    fi
fi

# Announce readiness only once port 80 listens, so a client that waits for
# this line never meets a refused connection.
i=0
until netstat -ltn | grep -q ':80 ' || [ "$i" -ge 50 ]; do sleep 0.1; i=$((i + 1)); done
echo "SVM-READY count=0 service=$service"

# PID 1 must never exit; waiting also reaps orphaned CGI processes.
while :; do wait; sleep 1; done
