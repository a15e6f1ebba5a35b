#!/bin/sh
# CGI behind busybox httpd for GET /: one request, one increment.
#
# httpd runs one process per request, so requests can overlap; an atomic
# mkdir is the lock (busybox-static has no flock), which keeps concurrent
# increments from being lost. The count is a file in /run, the initramfs
# root, which is RAM: it moves with a live migration and is gone on reboot.
# SVM_STATE_DIR overrides /run for the unit tests.

run=${SVM_STATE_DIR:-/run}
tries=0
until mkdir "$run/counter.lock" 2>/dev/null; do
    tries=$((tries + 1))
    if [ "$tries" -gt 500 ]; then
        printf 'Status: 503 Service Unavailable\r\nContent-Type: text/plain\r\n\r\n'
        echo "counter lock held for 5 s; remove $run/counter.lock"
        exit 0
    fi
    sleep 0.01
done
count=$(($(cat "$run/counter" 2>/dev/null || echo 0) + 1))
echo "$count" > "$run/counter.new" && mv "$run/counter.new" "$run/counter"
rmdir "$run/counter.lock"

boots=$(wc -l < /data/boots.log 2>/dev/null || echo 0)
printf 'Content-Type: application/json\r\nCache-Control: no-store\r\n\r\n'
printf '{"service": "%s", "count": %d, "boot_id": "%s", "hostname": "%s", "boots": %d}\n' \
    "$(cat "$run/service" 2>/dev/null || echo unknown)" "$count" \
    "$(cat /proc/sys/kernel/random/boot_id)" "$(hostname)" "$boots"
