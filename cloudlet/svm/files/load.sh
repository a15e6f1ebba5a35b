#!/bin/sh
# The demo SVM's dirtying workload (svm.workload=dirtying on the kernel
# command line): a busy service's memory for live migration to carry.
#
#   load.sh fill    writes MIB of random data and MIB of text into DIR
#   load.sh dirty   then rewrites about 1 MiB/s of the random data, forever
#
# /init mounts a tmpfs on DIR (/run/load), runs "fill" before announcing
# readiness and "dirty" in the background. The text repeats the kernel's
# symbol table, so it compresses the way text does; the random data does not
# compress at all. SVM_LOAD_DIR and SVM_LOAD_MIB override DIR and MIB (96)
# for the unit tests.

dir=${SVM_LOAD_DIR:-/run/load}
mib=${SVM_LOAD_MIB:-96}
bytes=$((mib * 1048576))
chunk=262144  # bytes per rewrite, four rewrites a second

fill() {
    head -c "$bytes" /dev/urandom > "$dir/random.bin" || return 1
    # The seed is never empty, even where the symbol table reads as nothing.
    { cat /proc/kallsyms 2>/dev/null; seq 1 100000; } > "$dir/seed.txt"
    # cat stops the loop when head, done, closes the pipe.
    while cat "$dir/seed.txt"; do :; done | head -c "$bytes" > "$dir/text.bin"
    rm -f "$dir/seed.txt"
    [ "$(wc -c < "$dir/random.bin")" -eq "$bytes" ] && [ "$(wc -c < "$dir/text.bin")" -eq "$bytes" ]
}

dirty() {
    chunks=$((bytes / chunk))
    while :; do
        at=$(($(od -An -N2 -tu2 /dev/urandom) % chunks))
        dd if=/dev/urandom of="$dir/random.bin" bs="$chunk" count=1 seek="$at" conv=notrunc \
            2>/dev/null
        sleep 0.25
    done
}

case "$1" in
    fill) fill ;;
    dirty) dirty ;;
    *) echo "usage: load.sh fill|dirty" >&2; exit 2 ;;
esac
