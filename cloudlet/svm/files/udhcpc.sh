#!/bin/sh
# udhcpc's event hook: apply the lease to the interface. udhcpc exports
# $interface, $ip, $mask (prefix length) and $router.
case "$1" in
    deconfig)
        ip addr flush dev "$interface"
        ip link set "$interface" up
        ;;
    bound | renew)
        ip addr flush dev "$interface"
        ip addr add "$ip/${mask:-24}" dev "$interface"
        for gw in $router; do
            ip route replace default via "$gw" dev "$interface"
            break
        done
        ;;
esac
exit 0
