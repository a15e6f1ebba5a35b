"""cloudlet.audit: the hash chain, every kind of tampering, concurrency, no secrets."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cloudlet import audit
from cloudlet.audit import records
from cloudlet.errors import AuditError

SECRET = "hunter2-TOP-SECRET"
T0 = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def _fill(log: audit.AuditLog, tasks: int = 4) -> None:
    run = audit.new_run_id()
    log.append(audit.playbook_start(run, "/pb/delivery.yml", user="alice"))
    for i in range(tasks):
        log.append(
            audit.task_result(
                run,
                playbook="/pb/delivery.yml",
                host="cl-alpha",
                task=f"Task number {i}",
                outcome=("ok", "changed", "failed", "skipped")[i % 4],
                remote_user="admin",
                ignored=i % 4 == 2,
                user="alice",
            )
        )
    log.append(audit.playbook_end(run, "/pb/delivery.yml", failed=False, user="alice"))


@pytest.fixture(params=[True, False], ids=["keyed", "plain"])
def filled(request, tmp_path):
    """A log of 6 records (lines 1..6) and the key to verify it with (or None)."""
    log = audit.AuditLog(tmp_path / "state" / "audit.log", keyed=request.param, clock=Clock())
    _fill(log)
    key = audit.load_key(log.key_path) if request.param else None
    return log.path, key


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _write(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(lines))


# --- round trip -------------------------------------------------------------------


def test_round_trip(filled):
    path, key = filled
    result = audit.verify(path, key)
    assert result.ok and result.records == 6 and result.line is None
    records = [json.loads(line) for line in _lines(path)]
    assert [r["seq"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert records[0]["prev"] == audit.GENESIS
    assert all(b["prev"] == a["hash"] for a, b in zip(records, records[1:], strict=False))
    assert [r["event"] for r in records] == ["playbook_start"] + ["task"] * 4 + ["playbook_end"]
    assert records[3]["outcome"] == "failed"
    assert records[3]["ignored"] is True and records[3]["remote_user"] == "admin"
    assert records[1]["time"] == "2026-11-15T12:00:02.000000Z"
    assert {r["local_user"] for r in records} == {"alice"}
    assert all(r["keyed"] is (key is not None) for r in records)


def test_key_and_files_are_private(tmp_path):
    log = audit.AuditLog(tmp_path / "new" / "dir" / "audit.log")
    _fill(log, 1)
    assert stat.S_IMODE(os.stat(log.path.parent).st_mode) == 0o700
    for p in (log.path, log.key_path, log.head_path):
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    assert len(audit.load_key(log.key_path)) == 32


def test_key_readable_by_others_is_refused(tmp_path):
    log = audit.AuditLog(tmp_path / "audit.log")
    _fill(log, 1)
    os.chmod(log.key_path, 0o644)
    with pytest.raises(AuditError, match="chmod 600"):
        audit.load_key(log.key_path)
    with pytest.raises(AuditError):
        _fill(log, 1)


def test_cli_ok_and_broken(filled, capsys):
    path, key = filled
    assert audit.main(["verify", str(path)]) == 0
    assert capsys.readouterr().out.startswith("OK: 6 records")
    lines = _lines(path)
    lines[2] = lines[2].replace(b"Task number 1", b"Task number 9")
    _write(path, lines)
    assert audit.main(["verify", str(path)]) == 1
    assert "BROKEN at line 3" in capsys.readouterr().out


def test_cli_missing_log_is_an_error(tmp_path, capsys):
    assert audit.main(["verify", str(tmp_path / "nope.log"), "--no-key"]) == 2
    assert "There is no audit log" in capsys.readouterr().err


# --- tampering: each detected at the right line -------------------------------------


def _broken(path: Path, key: bytes | None, line: int, words: str) -> None:
    result = audit.verify(path, key)
    assert not result.ok, "tampering went unnoticed"
    assert result.line == line, result.reason
    assert words in result.reason


def test_edited_line(filled):
    path, key = filled
    lines = _lines(path)
    lines[2] = lines[2].replace(b'"outcome":"changed"', b'"outcome":"ok"')
    _write(path, lines)
    _broken(path, key, 3, "edited")


def test_edited_line_with_recomputed_hash_breaks_the_next_line(tmp_path):
    """An unkeyed chain lets an editor fix the line's own hash, but not the chain."""
    log = audit.AuditLog(tmp_path / "audit.log", keyed=False)
    _fill(log)
    lines = _lines(log.path)
    rec = json.loads(lines[2])
    rec["outcome"] = "ok"
    body = {k: v for k, v in rec.items() if k != "hash"}
    rec["hash"] = records._digest(body, None)
    lines[2] = audit.Record(**rec).line()
    _write(log.path, lines)
    _broken(log.path, None, 4, "does not chain to line 3")


def test_keyed_line_cannot_be_recomputed_without_key(tmp_path):
    log = audit.AuditLog(tmp_path / "audit.log")
    _fill(log)
    path, key = log.path, audit.load_key(log.key_path)
    lines = _lines(path)
    rec = json.loads(lines[2])
    rec["outcome"] = "ok"
    rec["hash"] = records._digest({k: v for k, v in rec.items() if k != "hash"}, b"\x00" * 32)
    lines[2] = audit.Record(**rec).line()
    _write(path, lines)
    _broken(path, key, 3, "edited or forged")


def test_reformatted_line(filled):
    path, key = filled
    lines = _lines(path)
    lines[1] = json.dumps(json.loads(lines[1]), indent=1).replace("\n", " ").encode() + b"\n"
    _write(path, lines)
    _broken(path, key, 2, "canonical")


def test_removed_line(filled):
    path, key = filled
    lines = _lines(path)
    del lines[2]
    _write(path, lines)
    _broken(path, key, 3, "removed")


def test_removed_first_line(filled):
    path, key = filled
    _write(path, _lines(path)[1:])
    _broken(path, key, 1, "removed")


def test_reordered_lines(filled):
    path, key = filled
    lines = _lines(path)
    lines[2], lines[3] = lines[3], lines[2]
    _write(path, lines)
    _broken(path, key, 3, "removed or moved")


def test_inserted_copy_of_a_line(filled):
    path, key = filled
    lines = _lines(path)
    lines.insert(3, lines[1])
    _write(path, lines)
    _broken(path, key, 4, "inserted")


def test_inserted_forged_line(filled):
    """A well-formed line with the right seq and prev still needs the right hash."""
    path, key = filled
    lines = _lines(path)
    rec = json.loads(lines[2])
    forged = dict(rec, task="Fake task", prev=json.loads(lines[1])["hash"], seq=3)
    lines.insert(2, audit.Record(**forged).line())
    _write(path, lines)
    _broken(path, key, 3, "edited or forged")


def test_truncated_tail(filled):
    path, key = filled
    _write(path, _lines(path)[:4])
    _broken(path, key, 5, "lines 5-6 were removed from the end")


def test_truncated_to_empty(filled):
    path, key = filled
    path.write_bytes(b"")
    _broken(path, key, 1, "lines 1-6 were removed")


def test_torn_last_line(filled):
    path, key = filled
    data = path.read_bytes()
    path.write_bytes(data[:-40])
    _broken(path, key, 6, "incomplete")


def test_deleted_head_is_reported(filled):
    path, key = filled
    audit.head_path_for(path).unlink()
    _broken(path, key, 7, "head file")


def test_truncation_with_rewritten_head_needs_the_key(tmp_path):
    """Moving the head back to an earlier record is what the head MAC prevents."""
    log = audit.AuditLog(tmp_path / "audit.log")
    _fill(log)
    key = audit.load_key(log.key_path)
    lines = _lines(log.path)
    _write(log.path, lines[:4])
    rec = json.loads(lines[3])
    head = {"v": 1, "seq": 4, "hash": rec["hash"], "mac": None}
    log.head_path.write_text(json.dumps(head))
    _broken(log.path, key, 5, "head file")
    head["mac"] = records._head_mac(4, rec["hash"], b"\x01" * 32)
    log.head_path.write_text(json.dumps(head))
    _broken(log.path, key, 5, "was altered")


def test_keyed_log_rewritten_without_key(tmp_path):
    """Downgrade: a keyed log replaced by a freshly computed plain chain."""
    keyed = audit.AuditLog(tmp_path / "k" / "audit.log", clock=Clock())
    _fill(keyed)
    plain = audit.AuditLog(tmp_path / "p" / "audit.log", keyed=False, clock=Clock())
    _fill(plain)
    key = audit.load_key(keyed.key_path)
    keyed.path.write_bytes(plain.path.read_bytes())
    keyed.head_path.write_bytes(plain.head_path.read_bytes())
    _broken(keyed.path, key, 1, "not keyed")


def test_keyed_log_needs_the_right_key(filled):
    path, key = filled
    if key is None:
        _broken(path, b"\x07" * 32, 1, "not keyed")
    else:
        _broken(path, None, 1, "give the key file")
        _broken(path, b"\x07" * 32, 1, "edited or forged")


# --- appending to a damaged log ---------------------------------------------------------


def test_append_refuses_after_tail_truncation(filled):
    """Otherwise the next ceremony would move the head and hide the removal."""
    path, key = filled
    _write(path, _lines(path)[:4])
    log = audit.AuditLog(path, keyed=key is not None)
    with pytest.raises(AuditError, match="lines were removed"):
        _fill(log, 1)
    _broken(path, key, 5, "removed from the end")


def test_append_refuses_without_head(filled):
    path, key = filled
    audit.head_path_for(path).unlink()
    with pytest.raises(AuditError, match="head file .* is missing"):
        _fill(audit.AuditLog(path, keyed=key is not None), 1)


def test_append_refuses_torn_line(filled):
    path, key = filled
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(AuditError, match="incomplete"):
        _fill(audit.AuditLog(path, keyed=key is not None), 1)


def test_append_refuses_keyed_setting_change(filled):
    path, key = filled
    with pytest.raises(AuditError, match="keyed setting"):
        _fill(audit.AuditLog(path, keyed=key is None), 1)


def test_interrupted_append_is_tolerated(filled):
    """A crash between the log fsync and the head update leaves the head one behind."""
    path, key = filled
    head = audit.head_path_for(path)
    log = audit.AuditLog(path, keyed=key is not None)
    lagging = head.read_bytes()
    log.append(audit.playbook_start("r", "p", user="bob"))
    head.write_bytes(lagging)
    result = audit.verify(path, key)
    assert result.ok and result.records == 7
    assert "interrupted" in result.warnings[0]
    log.append(audit.playbook_end("r", None, failed=True, user="bob"))
    assert audit.verify(path, key) == audit.Verification(True, 8, key is not None)


# --- concurrency ---------------------------------------------------------------------------


def _worker(path: str, n: int, who: str) -> None:
    log = audit.AuditLog(path)
    for i in range(n):
        log.append(
            audit.task_result("run-" + who, playbook="p", host=who, task=f"t{i}", outcome="ok")
        )


def test_concurrent_appends(tmp_path):
    path = tmp_path / "audit.log"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_worker, args=(str(path), 25, f"h{i}")) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    key = audit.load_key(audit.default_key_path(path))
    result = audit.verify(path, key)
    assert result.ok and result.records == 100, result
    records = [json.loads(line) for line in _lines(path)]
    assert sorted(r["seq"] for r in records) == list(range(1, 101))
    for i in range(4):
        mine = [r["task"] for r in records if r["host"] == f"h{i}"]
        assert mine == [f"t{j}" for j in range(25)]


# --- no secrets ------------------------------------------------------------------------------


class FakeTask:
    """Just enough of an Ansible Task: templated name, raw name, args, no_log."""

    def __init__(self, no_log, raw_name="Store the password {{ admin_password }}"):
        self.no_log = no_log
        self.action = "ansible.builtin.copy"
        self.args = {"content": SECRET, "dest": "/etc/secret"}
        self._ds = {"name": raw_name, "ansible.builtin.copy": self.args, "no_log": no_log}
        self.name = raw_name.replace("{{ admin_password }}", SECRET) if raw_name else ""

    def get_ds(self):
        return self._ds

    def get_name(self):
        return self.name or self.action


def test_no_log_task_record_has_name_and_outcome_only(tmp_path):
    log = audit.AuditLog(tmp_path / "audit.log")
    task = FakeTask(no_log=True)
    result = {"_ansible_no_log": True, "changed": True, "censored": "...", "content": SECRET}
    no_log = audit.task_is_no_log(task, result)
    label = audit.task_label(task, no_log)
    assert label == "Store the password {{ admin_password }}"
    rec = log.append(
        audit.task_result("r", playbook="p", host="h", task=label, outcome="changed", no_log=no_log)
    )
    data = log.path.read_bytes() + log.head_path.read_bytes()
    assert SECRET.encode() not in data
    assert rec.no_log is True and rec.task == label and rec.outcome == "changed"
    assert set(json.loads(data.splitlines()[0])) == set(records._TYPES)  # no args/result field


def test_no_log_task_without_raw_name_logs_the_action_only():
    task = FakeTask(no_log=True, raw_name="")
    task._ds = {}
    assert audit.task_label(task, True) == "(ansible.builtin.copy, name hidden by no_log)"


@pytest.mark.parametrize(
    ("flag", "result", "hidden"),
    [
        (False, {}, False),
        (True, {}, True),
        ("yes", {}, True),
        ("false", {}, False),
        ("{{ hide }}", {}, True),  # untemplated: when in doubt, hidden
        (False, {"_ansible_no_log": True}, True),
    ],
)
def test_task_is_no_log(flag, result, hidden):
    assert audit.task_is_no_log(FakeTask(no_log=flag), result) is hidden


def test_visible_task_uses_templated_name():
    task = FakeTask(no_log=False, raw_name="Install {{ pkg }}")
    task.name = "Install qemu"
    assert audit.task_label(task, False) == "Install qemu"


def test_event_rejects_unknown_outcome_and_truncates_long_names():
    with pytest.raises(ValueError, match="outcome"):
        audit.task_result("r", playbook="p", host="h", task="t", outcome="exploded")
    ev = audit.task_result("r", playbook="p", host="h", task="x" * 5000, outcome="ok")
    assert len(ev.task) == records.MAX_TEXT and ev.task.endswith("...")
