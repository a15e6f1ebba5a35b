"""Each lab machine's cgroups: where they go, and their removal, without root."""

from __future__ import annotations

import pytest

from cloudlet.errors import LabError
from cloudlet.lab import cgroup

HYBRID = """\
25 20 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
27 25 0:24 / /sys/fs/cgroup/systemd rw,nosuid - cgroup cgroup rw,xattr,name=systemd
28 25 0:25 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
"""
HYBRID_SELF = "9:name=systemd:/\n4:memory:/sandbox/1\n0::/\n"
UNIFIED = "30 1 0:26 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate\n"
UNIFIED_SELF = "0::/user.slice/session-3.scope\n"


def fake_proc(monkeypatch, tmp_path, mountinfo: str, own: str) -> None:
    (tmp_path / "mountinfo").write_text(mountinfo)
    (tmp_path / "cgroup").write_text(own)
    monkeypatch.setattr(cgroup, "MOUNTINFO", str(tmp_path / "mountinfo"))
    monkeypatch.setattr(cgroup, "OWN_CGROUPS", str(tmp_path / "cgroup"))


def test_hybrid_host_gets_one_cgroup_per_systemd_hierarchy(monkeypatch, tmp_path):
    fake_proc(monkeypatch, tmp_path, HYBRID, HYBRID_SELF)
    assert [str(p) for p in cgroup.machine_cgroups("clab.cloudlet-a")] == [
        "/sys/fs/cgroup/unified/cloudlet-lab.clab.cloudlet-a",
        "/sys/fs/cgroup/systemd/cloudlet-lab.clab.cloudlet-a",
    ]  # the memory hierarchy, where a sandbox may limit us, is left alone


def test_unified_host_nests_under_the_callers_cgroup(monkeypatch, tmp_path):
    fake_proc(monkeypatch, tmp_path, UNIFIED, UNIFIED_SELF)
    assert [str(p) for p in cgroup.machine_cgroups("clab.device-1")] == [
        "/sys/fs/cgroup/user.slice/session-3.scope/cloudlet-lab.clab.device-1"
    ]


def test_machines_never_share_a_cgroup(monkeypatch, tmp_path):
    fake_proc(monkeypatch, tmp_path, HYBRID, HYBRID_SELF)
    names = ["clab.cloudlet-a", "clab.cloudlet-b", "itest.cloudlet-a"]
    groups = [p for n in names for p in cgroup.machine_cgroups(n)]
    assert len(set(groups)) == len(groups)


def test_remove_deletes_the_tree_innermost_first(monkeypatch, tmp_path):
    mounts = tmp_path / "mnt"
    fake_proc(monkeypatch, tmp_path, UNIFIED.replace("/sys/fs/cgroup", str(mounts)), "0::/\n")
    top = cgroup.machine_cgroups("clab.cloudlet-a")[0]
    (top / "payload" / "system.slice" / "ssh.service").mkdir(parents=True)
    (top / "supervisor").mkdir()
    cgroup.remove("clab.cloudlet-a")
    assert not top.exists() and mounts.is_dir()
    cgroup.remove("clab.cloudlet-a")  # nothing left: nothing to do


def test_remove_names_a_cgroup_it_cannot_delete(monkeypatch, tmp_path):
    mounts = tmp_path / "mnt"
    fake_proc(monkeypatch, tmp_path, UNIFIED.replace("/sys/fs/cgroup", str(mounts)), "0::/\n")
    top = cgroup.machine_cgroups("clab.cloudlet-a")[0]
    top.mkdir(parents=True)
    (top / "cgroup.procs").write_text("4242\n")  # a plain directory with a file stands in
    with pytest.raises(LabError, match="Cannot remove the cgroup .*cloudlet-lab.clab.cloudlet-a"):
        cgroup.remove("clab.cloudlet-a")
