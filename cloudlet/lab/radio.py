"""Prove that hostapd and wpa_supplicant configurations associate over real 802.11.

One call boots one QEMU TCG guest (``radio_image`` builds and caches it) with
``mac80211_hwsim radios=N``: hostapd on wlan0 and one wpa_supplicant per
station on wlan1..wlanN. The guest waits until every station reaches
``wpa_state=COMPLETED`` or gives up, or the deadline passes, prints a
delimited JSON block on its serial console, and powers off; the host parses it.

The harness owns the interface names: it sets ``interface=wlan0`` in the AP
configuration (replacing any ``interface=`` line) and passes ``-i wlanK`` to
each wpa_supplicant, so configurations rendered for a real cloudlet go in
unchanged. It adds ``ctrl_interface=`` where a configuration has none (the CLIs
need it). Extra ``files`` (an eap_user file, CA certificates) are put at the
absolute guest paths given; /etc/radio/hostapd.conf and /etc/radio/station*.conf
are the harness's own.

A station that does not associate is a result, not an error: ``RadioError``
means the guest could not be built, booted or read.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from cloudlet.errors import RadioError
from cloudlet.lab.radio_image import CACHE_DIR, Entry, build_base, newc_archive, tree_entries

__all__ = [
    "RadioResult",
    "StationResult",
    "parse_console",
    "render_init",
    "run_radio_check",
]

BEGIN = "=====CLOUDLET-RADIO-RESULT-BEGIN====="
END = "=====CLOUDLET-RADIO-RESULT-END====="
AP_CONF = "/etc/radio/hostapd.conf"
LOG_LINES = 60

INIT_TEMPLATE = r"""#!/bin/busybox sh
# Rendered by cloudlet.lab.radio: one radio check, then power off.
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
dmesg -n 1
mkdir -p /run/hostapd /run/wpa_supplicant /tmp /var/run
up() { cut -d' ' -f1 /proc/uptime; }
b64() { tail -n @LOG_LINES@ "$1" 2>/dev/null | base64 -w 0; }
t_init=$(up)
for m in @MODULES@; do
  insmod /lib/modules/$m.ko || echo "radio: insmod $m failed"
done
insmod /lib/modules/mac80211_hwsim.ko radios=@RADIOS@ || echo "radio: insmod mac80211_hwsim failed"
i=0
while [ ! -e /sys/class/net/wlan@LAST@ ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
ip link set lo up
hostapd -t @AP_CONF@ > /tmp/hostapd.log 2>&1 &
i=0
while ! hostapd_cli -p /run/hostapd -i wlan0 status 2>/dev/null | grep -q '^state=ENABLED' \
    && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
t_ap=$(up)
for k in @STATIONS@; do
  wpa_supplicant -t -D nl80211 -i wlan$k -c /etc/radio/station$k.conf > /tmp/station$k.log 2>&1 &
done
t_start=$(up)
start=$(date +%s)
pending="@STATIONS@"
while [ -n "$pending" ] && [ $(( $(date +%s) - start )) -lt @DEADLINE@ ]; do
  left=""
  for k in $pending; do
    if wpa_cli -p /run/wpa_supplicant -i wlan$k status 2>/dev/null \
        | grep -q '^wpa_state=COMPLETED'; then
      eval "t_done$k=$(up)"
    elif grep -q 'CTRL-EVENT-SSID-TEMP-DISABLED' /tmp/station$k.log; then
      eval "t_refused$k=$(up)"
    else
      left="$left $k"
    fi
  done
  pending="$left"
  [ -n "$pending" ] && sleep 0.5
done
for k in @STATIONS@; do
  wpa_cli -p /run/wpa_supplicant -i wlan$k status > /tmp/status$k.txt 2>&1
done
hostapd_cli -p /run/hostapd -i wlan0 all_sta > /tmp/all_sta.txt 2>&1
echo
echo "@BEGIN@"
printf '{"version":1,"uptime":{"init":"%s","ap":"%s","start":"%s","end":"%s"},' \
  "$t_init" "$t_ap" "$t_start" "$(up)"
printf '"ap":{"log":"%s","all_sta":"%s"},"stations":{' \
  "$(b64 /tmp/hostapd.log)" "$(b64 /tmp/all_sta.txt)"
sep=""
for k in @STATIONS@; do
  eval "ok=\$t_done$k refused=\$t_refused$k"
  printf '%s"%s":{"status":"%s","log":"%s","done":"%s","refused":"%s"}' "$sep" "$k" \
    "$(b64 /tmp/status$k.txt)" "$(b64 /tmp/station$k.log)" "$ok" "$refused"
  sep=","
done
printf '}}\n'
echo "@END@"
poweroff -f
"""


@dataclass(frozen=True)
class StationResult:
    name: str
    interface: str
    wpa_state: str
    key_mgmt: str | None
    eap: str | None  # "success", "failure", or None when no EAP outcome was logged
    status: dict[str, str]
    log_tail: str
    # "completed", "refused" (the supplicant disabled the network after failed
    # attempts: it stops waiting for it), or "deadline".
    settled: str
    seconds_to_settle: float | None

    @property
    def completed(self) -> bool:
        return self.wpa_state == "COMPLETED"


@dataclass
class RadioResult:
    stations: dict[str, StationResult]
    ap_log_tail: str
    ap_stations: str
    guest_uptime: dict[str, float | None]
    seconds: float = 0.0  # the whole call, base build included
    guest_seconds: float = 0.0  # QEMU start to power-off
    base_built: bool = False
    base_seconds: float = 0.0
    console_tail: str = field(default="", repr=False)


def render_init(modules: tuple[str, ...] | list[str], stations: int, deadline: int) -> str:
    """The guest's /init for ``stations`` stations (wlan1..wlanN) and hostapd on wlan0."""
    if stations < 1:
        raise RadioError("A radio check needs at least one station.")
    loads = [m for m in modules if m != "mac80211_hwsim"]
    values = {
        "@MODULES@": " ".join(loads), "@RADIOS@": str(stations + 1), "@LAST@": str(stations),
        "@STATIONS@": " ".join(str(k) for k in range(1, stations + 1)),
        "@DEADLINE@": str(int(deadline)), "@AP_CONF@": AP_CONF, "@LOG_LINES@": str(LOG_LINES),
        "@BEGIN@": BEGIN, "@END@": END,
    }
    text = INIT_TEMPLATE
    for marker, value in values.items():
        text = text.replace(marker, value)
    return text


def _set_line(text: str, key: str, value: str) -> str:
    """``text`` with every ``key=`` line replaced by ``key=value`` (added when absent)."""
    pattern = re.compile(rf"^[ \t]*{re.escape(key)}=.*$", re.MULTILINE)
    if pattern.search(text):
        return pattern.sub(f"{key}={value}", text)
    return f"{key}={value}\n{text}"


def ap_config(text: str) -> str:
    text = _set_line(text, "interface", "wlan0")
    if not re.search(r"^[ \t]*ctrl_interface=", text, re.MULTILINE):
        text = f"ctrl_interface=/run/hostapd\n{text}"
    return text


def station_config(text: str) -> str:
    if not re.search(r"^[ \t]*ctrl_interface=", text, re.MULTILINE):
        text = f"ctrl_interface=/run/wpa_supplicant\n{text}"
    return text


def _text(value: str) -> str:
    return base64.b64decode(value or "").decode("utf-8", "replace")


def _key_values(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def parse_console(console: str, names: list[str]) -> RadioResult:
    """The result block from the guest's console output, stations named in order."""
    start = console.rfind(BEGIN)
    end = console.find(END, start) if start >= 0 else -1
    if start < 0 or end < 0:
        raise RadioError("The radio guest printed no result block.",
                         "Read the console tail in the error: the guest failed to boot "
                         f"or its init script stopped.\n{_tail(console)}")
    block = "".join(console[start + len(BEGIN):end].split())
    try:
        raw = json.loads(block)
        stations = {}
        for k, name in enumerate(names, start=1):
            item = raw["stations"][str(k)]
            status = _key_values(_text(item["status"]))
            log = _text(item["log"])
            eap = None
            for line in log.splitlines():
                if "CTRL-EVENT-EAP-SUCCESS" in line:
                    eap = "success"
                elif "CTRL-EVENT-EAP-FAILURE" in line:
                    eap = "failure"
            begun = float(raw["uptime"]["start"])
            settled, when = "deadline", None
            for outcome, key in (("completed", "done"), ("refused", "refused")):
                if item.get(key):
                    settled, when = outcome, round(float(item[key]) - begun, 1)
                    break
            stations[name] = StationResult(
                name=name, interface=f"wlan{k}", wpa_state=status.get("wpa_state", "UNKNOWN"),
                key_mgmt=status.get("key_mgmt"), eap=eap, status=status, log_tail=log,
                settled=settled, seconds_to_settle=when,
            )
        uptime = {k: (float(v) if v else None) for k, v in raw["uptime"].items()}
        return RadioResult(stations=stations, ap_log_tail=_text(raw["ap"]["log"]),
                           ap_stations=_text(raw["ap"]["all_sta"]), guest_uptime=uptime,
                           console_tail=_tail(console))
    except (ValueError, KeyError, TypeError) as err:
        raise RadioError(f"The radio guest's result block is malformed ({err}).",
                         "Kernel messages may have interleaved with it; run the check again.\n"
                         f"{_tail(console)}") from None


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.replace("\r", "").splitlines()[-lines:])


def _overlay(ap: str, stations: list[str], files: dict[str, bytes], init: str) -> bytes:
    tree: dict[str, tuple[int, bytes]] = {}
    for path, data in files.items():
        if not path.startswith("/") or os.path.normpath(path) != path:
            raise RadioError(f"The guest file {path!r} is not a clean absolute path.",
                             "Name extra files by absolute paths such as /etc/radio/eap_user.")
        if path == "/init" or re.fullmatch(r"/etc/radio/(hostapd|station\d+)\.conf", path):
            raise RadioError(f"The guest file {path} is the harness's own.",
                             "Put extra files elsewhere, e.g. /etc/radio/eap_user.")
        tree[path] = (0o600, bytes(data))
    tree[AP_CONF] = (0o600, ap_config(ap).encode())
    for k, text in enumerate(stations, start=1):
        tree[f"/etc/radio/station{k}.conf"] = (0o600, station_config(text).encode())
    entries = tree_entries(tree)
    entries.append(Entry("/init", stat.S_IFREG | 0o755, init.encode()))
    return newc_archive(entries)


def qemu_argv(kernel: Path, initrd: Path) -> list[str]:
    return [
        "qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-m", "512", "-smp", "1",
        "-nographic", "-no-reboot", "-nic", "none",
        "-kernel", str(kernel), "-initrd", str(initrd),
        "-append", "console=ttyS0 panic=-1 quiet",
    ]


def run_radio_check(
    ap_config: str,
    stations: dict[str, str],
    *,
    files: dict[str, bytes] | None = None,
    timeout: float = 120,
    deadline: int = 30,
    cache_dir: str = CACHE_DIR,
) -> RadioResult:
    """Boot one guest: hostapd with ``ap_config``, one wpa_supplicant per station.

    ``stations`` maps a name of the caller's choosing to a wpa_supplicant
    configuration; they get wlan1.. in the dict's order. The guest stops
    waiting for a station when it completes or its supplicant disables the
    network after failed attempts (CTRL-EVENT-SSID-TEMP-DISABLED), and for all
    of them ``deadline`` seconds after they started. ``timeout`` bounds the
    QEMU run (not the first build of the base), after which QEMU is killed.
    """
    if not stations:
        raise RadioError("A radio check needs at least one station.")
    if shutil.which("qemu-system-x86_64") is None:
        raise RadioError("The control node has no qemu-system-x86_64.",
                         "Install qemu-system-x86 (make setup does this).")
    start = time.monotonic()
    base = build_base(cache_dir)
    names = list(stations)
    init = render_init(base.modules, len(names), deadline)
    overlay = _overlay(ap_config, [stations[n] for n in names], files or {}, init)
    with tempfile.TemporaryDirectory(prefix="cloudlet-radio-") as tmp:
        initrd = Path(tmp) / "initrd"
        # The small uncompressed overlay goes first, as early microcode does: the
        # kernel does not find an uncompressed archive after a compressed one.
        with open(initrd, "wb") as out, open(base.initramfs, "rb") as fh:
            out.write(overlay)
            shutil.copyfileobj(fh, out)
        console_path = Path(tmp) / "console.log"
        booted = time.monotonic()
        with open(console_path, "wb") as console:
            proc = subprocess.Popen(qemu_argv(base.kernel, initrd), stdin=subprocess.DEVNULL,
                                    stdout=console, stderr=subprocess.STDOUT)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                text = console_path.read_text("utf-8", "replace")
                raise RadioError(
                    f"The radio guest did not power off within {timeout:.0f} s; QEMU "
                    f"(pid {proc.pid}) was killed.",
                    f"Raise the timeout on a slow host, or read the console tail:\n{_tail(text)}",
                ) from None
        text = console_path.read_text("utf-8", "replace")
    result = parse_console(text, names)
    result.seconds = round(time.monotonic() - start, 1)
    result.guest_seconds = round(time.monotonic() - booted, 1)
    result.base_built = base.built
    result.base_seconds = base.seconds
    return result
