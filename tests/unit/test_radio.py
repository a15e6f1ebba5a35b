"""The radio harness's pure parts: nothing here boots a guest or calls apt."""

from __future__ import annotations

import base64
import json
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from cloudlet.errors import RadioError
from cloudlet.lab import radio, radio_image
from cloudlet.lab.radio_image import Entry, newc_archive


def read_newc(data: bytes) -> list[tuple[str, int, bytes, tuple[int, int]]]:
    """(name, mode, data, rdev) per member, trailer included: the reader the kernel is."""
    members, pos = [], 0
    while True:
        assert data[pos:pos + 6] == b"070701"
        fields = [int(data[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
        size, namesize = fields[6], fields[11]
        pos += 110
        name = data[pos:pos + namesize - 1].decode()
        assert data[pos + namesize - 1] == 0
        pos += namesize
        pos += -pos % 4
        body = data[pos:pos + size]
        pos += size
        pos += -pos % 4
        members.append((name, fields[1], body, (fields[9], fields[10])))
        if name == "TRAILER!!!":
            assert pos == len(data)
            return members


def test_newc_archive_round_trips_files_directories_and_devices():
    data = newc_archive([
        Entry("/etc", stat.S_IFDIR | 0o755),
        Entry("/etc/radio.conf", stat.S_IFREG | 0o600, b"ssid=x\n"),
        Entry("/dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
    ])
    assert len(data) % 4 == 0
    assert read_newc(data) == [
        ("etc", stat.S_IFDIR | 0o755, b"", (0, 0)),
        ("etc/radio.conf", stat.S_IFREG | 0o600, b"ssid=x\n", (0, 0)),
        ("dev/console", stat.S_IFCHR | 0o600, b"", (5, 1)),
        ("TRAILER!!!", 0, b"", (0, 0)),
    ]


@pytest.mark.parametrize("path", ["/", "/etc/../init", ""])
def test_newc_archive_refuses_unclean_paths(path):
    with pytest.raises(RadioError, match="not a clean absolute path"):
        newc_archive([Entry(path, stat.S_IFREG | 0o644, b"x")])


def test_tree_entries_put_every_parent_directory_first():
    entries = radio_image.tree_entries({"/usr/sbin/hostapd": (0o755, b"elf"),
                                        "/etc/radio/eap_user": (0o600, b"u")})
    paths = [e.path for e in entries]
    for entry in entries:
        parent = str(Path(entry.path).parent)
        if parent != "/":
            assert paths.index(parent) < paths.index(entry.path)
    assert entries[-1].mode == stat.S_IFREG | 0o755
    assert {e.path for e in entries if stat.S_ISDIR(e.mode)} == {"/etc", "/etc/radio", "/usr",
                                                                 "/usr/sbin"}


def test_render_init_loads_modules_in_order_then_hwsim_with_one_radio_per_device():
    init = radio.render_init(radio_image.MODULES, stations=3, deadline=25)
    assert init.startswith("#!/bin/busybox sh\n")
    assert "for m in virtio_ring virtio rfkill cfg80211 libarc4 mac80211 ctr ccm cmac " \
           "gf128mul ghash-generic gcm ecb; do" in init
    assert "mac80211_hwsim.ko radios=4" in init
    assert "/sys/class/net/wlan3 " in init
    assert "for k in 1 2 3; do" in init
    assert "-lt 25 ]" in init
    assert radio.BEGIN in init and radio.END in init
    assert init.rstrip().endswith("poweroff -f")
    assert "@" not in init.replace("@.", "")  # every placeholder is filled


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX shell")
def test_render_init_is_valid_shell():
    init = radio.render_init(["rfkill", "cfg80211"], stations=2, deadline=20)
    proc = subprocess.run(["sh", "-n"], input=init, text=True, capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_render_init_needs_a_station():
    with pytest.raises(RadioError, match="at least one station"):
        radio.render_init(radio_image.MODULES, stations=0, deadline=20)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _console(stations: dict[str, dict[str, str]]) -> str:
    block = json.dumps({
        "version": 1,
        "uptime": {"init": "8.5", "ap": "11.0", "start": "11.5", "end": "31.6"},
        "ap": {"log": _b64("wlan0: AP-ENABLED\n"), "all_sta": _b64("02:00:00:00:01:00\n")},
        "stations": stations,
    })
    # The serial console ends lines with CRLF; a long line may come back broken.
    wrapped = "\r\n".join(block[i:i + 70] for i in range(0, len(block), 70))
    return f"SeaBIOS\r\n[ 1.0] boot\r\nradio: noise\r\n\r\n{radio.BEGIN}\r\n{wrapped}\r\n" \
           f"{radio.END}\r\n[ 32.0] reboot: Power down\r\n"


def test_parse_console_reads_each_station_by_name_in_order():
    console = _console({
        "1": {"status": _b64("bssid=02:00:00:00:00:00\nkey_mgmt=WPA2-EAP-SHA256\n"
                             "wpa_state=COMPLETED\nEAP state=SUCCESS\n"),
              "log": _b64("wlan1: CTRL-EVENT-EAP-SUCCESS EAP authentication completed\n"),
              "done": "19.9", "refused": ""},
        "2": {"status": _b64("wpa_state=DISCONNECTED\n"),
              "log": _b64("wlan2: CTRL-EVENT-EAP-STARTED\nwlan2: CTRL-EVENT-EAP-FAILURE x\n"),
              "done": "", "refused": "12.0"},
    })
    result = radio.parse_console(console, ["paired", "unknown"])
    paired, unknown = result.stations["paired"], result.stations["unknown"]
    assert (paired.interface, paired.wpa_state, paired.key_mgmt, paired.eap) == (
        "wlan1", "COMPLETED", "WPA2-EAP-SHA256", "success")
    assert paired.completed and (paired.settled, paired.seconds_to_settle) == ("completed", 8.4)
    assert paired.status["EAP state"] == "SUCCESS"
    assert (unknown.interface, unknown.wpa_state, unknown.key_mgmt, unknown.eap) == (
        "wlan2", "DISCONNECTED", None, "failure")
    assert not unknown.completed and (unknown.settled, unknown.seconds_to_settle) == ("refused",
                                                                                      0.5)
    assert result.ap_log_tail == "wlan0: AP-ENABLED\n"
    assert result.guest_uptime["end"] == 31.6


def test_parse_console_without_a_block_names_the_console_tail():
    console = "SeaBIOS\r\n[ 6.6] Kernel panic - not syncing: VFS: Unable to mount root fs\r\n"
    with pytest.raises(RadioError, match="printed no result block") as err:
        radio.parse_console(console, ["a"])
    assert "Kernel panic" in str(err.value)


def test_parse_console_refuses_a_damaged_block():
    console = f"{radio.BEGIN}\n{{\"version\":1,\"stations\":\n{radio.END}\n"
    with pytest.raises(RadioError, match="malformed"):
        radio.parse_console(console, ["a"])


def test_parse_console_refuses_a_block_missing_a_station():
    console = _console({"1": {"status": "", "log": "", "done": "", "refused": ""}})
    with pytest.raises(RadioError, match="malformed"):
        radio.parse_console(console, ["a", "b"])


def test_ap_config_gets_the_harness_interface_and_a_control_socket():
    text = radio.ap_config("interface=wlp3s0\nssid=x\n")
    assert "interface=wlan0\n" in text and "wlp3s0" not in text
    assert text.startswith("ctrl_interface=/run/hostapd\n")
    assert radio.ap_config("ssid=x\n").count("interface=wlan0") == 1
    kept = radio.ap_config("ctrl_interface=/var/run/hostapd\nssid=x\n")
    assert kept.count("ctrl_interface=") == 1


def test_station_config_keeps_its_own_control_socket():
    assert radio.station_config("network={\n}\n").startswith("ctrl_interface=/run/wpa_supplicant")
    own = "ctrl_interface=/var/run/wpa\nnetwork={\n}\n"
    assert radio.station_config(own) == own


@pytest.mark.parametrize("path", ["etc/x", "/etc/radio/../x", "/init", "/etc/radio/hostapd.conf",
                                  "/etc/radio/station2.conf"])
def test_overlay_refuses_files_that_are_not_the_callers_to_place(path):
    with pytest.raises(RadioError):
        radio._overlay("ssid=x\n", ["network={\n}\n"], {path: b"x"}, "#!/bin/sh\n")


def test_overlay_holds_configs_extra_files_and_init():
    data = radio._overlay("ssid=x\n", ["network={\n}\n", "network={\n}\n"],
                          {"/etc/radio/eap_user": b'"d" PWD "p"\n'}, "#!/bin/busybox sh\n")
    members = {name: (mode, body) for name, mode, body, _ in read_newc(data)}
    assert members["init"] == (stat.S_IFREG | 0o755, b"#!/bin/busybox sh\n")
    assert members["etc/radio/eap_user"][1] == b'"d" PWD "p"\n'
    assert b"interface=wlan0" in members["etc/radio/hostapd.conf"][1]
    assert "etc/radio/station1.conf" in members and "etc/radio/station2.conf" in members


def test_qemu_runs_tcg_without_a_network_and_ends_on_panic():
    argv = radio.qemu_argv(Path("/k"), Path("/i"))
    assert argv[argv.index("-accel") + 1] == "tcg"
    assert argv[argv.index("-nic") + 1] == "none"
    assert "-no-reboot" in argv
    assert "panic=-1" in argv[argv.index("-append") + 1]


# --- prerequisites -------------------------------------------------------------


class FakeApt:
    """Records commands; ``apt-get download`` writes the .deb it was asked for."""

    def __init__(self, depends: str = "", fail: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.depends = depends
        self.fail = fail

    def __call__(self, argv, **kwargs):
        self.calls.append(list(argv))
        if argv[0] == "apt-cache":
            return subprocess.CompletedProcess(argv, 0 if self.depends else 100,
                                               self.depends, "")
        if argv[:2] == ["apt-get", "download"]:
            if self.fail:
                return subprocess.CompletedProcess(argv, 100, "", f"E: Unable to locate "
                                                   f"package {argv[-1]}\n")
            Path(kwargs["cwd"], f"{argv[-1]}_1.0_amd64.deb").write_bytes(b"deb")
            return subprocess.CompletedProcess(argv, 0, "", "")
        raise AssertionError(argv)


def test_ensure_package_downloads_once_then_uses_the_cache(tmp_path):
    apt = FakeApt()
    first = radio_image.ensure_package("busybox-static", tmp_path / "cache", apt)
    second = radio_image.ensure_package("busybox-static", tmp_path / "cache", apt)
    assert first == second == tmp_path / "cache" / "busybox-static_1.0_amd64.deb"
    assert [c[:2] for c in apt.calls] == [["apt-get", "download"]]


def test_ensure_package_names_the_package_apt_could_not_download(tmp_path):
    with pytest.raises(RadioError, match="apt-get download linux-image-9-amd64 failed") as err:
        radio_image.ensure_package("linux-image-9-amd64", tmp_path, FakeApt(fail=True))
    assert "Unable to locate package" in str(err.value)
    assert "apt-get update" in err.value.hint
    assert list(tmp_path.iterdir()) == []


def test_kernel_package_is_the_one_the_generic_meta_package_depends_on(tmp_path):
    apt = FakeApt(depends="linux-image-amd64\n  Depends: linux-image-6.1.0-57-amd64\n")
    assert radio_image.kernel_package(tmp_path, apt) == "linux-image-6.1.0-57-amd64"


def test_kernel_package_falls_back_to_the_cached_kernel_without_apt_lists(tmp_path):
    (tmp_path / "linux-image-6.1.0-56-amd64_6.1.170-1_amd64.deb").write_bytes(b"deb")
    assert radio_image.kernel_package(tmp_path, FakeApt()) == "linux-image-6.1.0-56-amd64"
    with pytest.raises(RadioError, match="none is cached"):
        radio_image.kernel_package(tmp_path / "empty", FakeApt())


def test_parse_ldd_takes_libraries_and_the_loader_but_not_the_vdso():
    text = ("\tlinux-vdso.so.1 (0x00007ffd)\n"
            "\tlibnl-3.so.200 => /lib/x86_64-linux-gnu/libnl-3.so.200 (0x00007f1)\n"
            "\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2)\n"
            "\t/lib64/ld-linux-x86-64.so.2 (0x00007f3)\n")
    assert radio_image.parse_ldd(text) == ["/lib/x86_64-linux-gnu/libnl-3.so.200",
                                           "/lib/x86_64-linux-gnu/libc.so.6",
                                           "/lib64/ld-linux-x86-64.so.2"]


def test_find_modules_keeps_load_order_and_skips_built_in_ones(tmp_path):
    root = tmp_path / "6.1.0-57-amd64"
    for rel in ("net/wireless/cfg80211.ko", "crypto/ghash-generic.ko.xz",
                "net/rfkill/rfkill.ko"):
        (root / "kernel" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "kernel" / rel).write_bytes(b"")
    (root / "modules.builtin").write_text("kernel/crypto/ecb.ko\n")
    found = radio_image.find_modules(root, ["rfkill", "cfg80211", "ghash-generic", "ecb"])
    assert [name for name, _ in found] == ["rfkill", "cfg80211", "ghash-generic"]
    with pytest.raises(RadioError, match="no module mac80211_hwsim"):
        radio_image.find_modules(root, ["mac80211_hwsim"])


def test_xz_modules_are_unpacked(tmp_path):
    import lzma

    path = tmp_path / "ctr.ko.xz"
    path.write_bytes(lzma.compress(b"\x7fELF module"))
    assert radio_image._module_bytes(path) == b"\x7fELF module"


def test_base_key_changes_with_each_input(tmp_path):
    lib = tmp_path / "libc.so.6"
    lib.write_bytes(b"one")
    kernel, busybox = Path("linux-image-6.1.0-57-amd64_1_amd64.deb"), Path("busybox-static_1.deb")
    key = radio_image.base_key(kernel, busybox, {"/lib/libc.so.6": str(lib)})
    assert key == radio_image.base_key(kernel, busybox, {"/lib/libc.so.6": str(lib)})
    assert key != radio_image.base_key(Path("linux-image-6.1.0-58-amd64_1_amd64.deb"), busybox,
                                       {"/lib/libc.so.6": str(lib)})
    lib.write_bytes(b"two")
    assert key != radio_image.base_key(kernel, busybox, {"/lib/libc.so.6": str(lib)})
