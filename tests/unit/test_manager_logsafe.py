"""A client cannot write a line of its own into the Manager's log.

Quoted at the source (schema messages, logged paths) and escaped at the sink
(logsafe's formatter, installed by the entry point), checked with a real
Manager and hostile requests.
"""

from __future__ import annotations

import io
import logging
import re
import sys
from datetime import UTC, datetime

import pytest
from test_manager_support import Running, admin, call, client_ctx, make_config, make_pki

from cloudlet.crypto.identity import Period
from cloudlet.errors import RequestError
from cloudlet.manager import __main__ as entry
from cloudlet.manager import logsafe, schema

FORGED = "\n2026-11-28 12:00:00,000 ERROR cloudlet.manager: forged"
LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ [\w.]+: ")
PERIOD = str(Period.containing(datetime.now(UTC)))


def _escaping(root: logging.Logger) -> list[logging.Handler]:
    return [h for h in root.handlers if isinstance(h.formatter, logsafe.EscapingFormatter)]


@pytest.fixture
def root_logger():
    """The root logger's handlers and level, restored after the test."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield root
    root.handlers[:], _ = saved
    root.setLevel(saved[1])


def test_schema_messages_quote_what_the_client_sent():
    body = {"valid_from": PERIOD, "x" + FORGED: 1, "y" * 100: 2}
    with pytest.raises(RequestError) as refused:
        schema.validate({"type": "object", "properties": {}, "additionalProperties": False}, body)
    message = refused.value.message
    assert "\n" not in message
    assert '$["x\\n2026-11-28 12:00:00,000 ERROR cloudlet.manager: forged"]' in message
    assert '"' + "y" * 64 + '"...' in message  # long keys are cut, not echoed whole
    with pytest.raises(RequestError, match=r'repeats the key "a\\u001b\[31m"'):
        schema.parse_json(b'{"a\\u001b[31m": 1, "a\\u001b[31m": 2}')


def test_escaping_formatter_keeps_every_record_on_one_printable_line():
    formatter = logsafe.EscapingFormatter(logsafe.FORMAT)
    hostile = "a\nb\rc\td\x1b[2Je\x7ff\x85g\u2028h\u202ei"
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%s!", (hostile,), None)
    out = formatter.format(record)
    assert out.endswith(r"a\nb\rc\td\x1b[2Je\x7ff\x85g\u2028h\u202ei!")
    assert out.isprintable()
    try:
        raise ValueError("line one" + FORGED)
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), exc_info)
    out = formatter.format(record)
    assert out.isprintable() and "Traceback" in out and r"line one\n2026" in out


def test_install_sends_records_through_one_escaping_handler(root_logger):
    stream = io.StringIO()
    logsafe.install("INFO", stream)
    handler = logsafe.install("INFO", stream)  # again: replaced, not doubled
    assert _escaping(root_logger) == [handler]
    logging.getLogger("cloudlet.manager").info("path %s", "/a" + FORGED)
    assert stream.getvalue().count("\n") == 1 and "forged" in stream.getvalue()
    with pytest.raises(ValueError):
        logsafe.install("LOUD", stream)


def test_the_daemon_logs_through_the_escaping_formatter(tmp_path, monkeypatch, root_logger):
    cfg = tmp_path / "manager.toml"
    cfg.write_text('cloudlet_id = "cl-alpha"\nzone = "z"\nfqdn = "m.z"\ndb = "m.db"\n'
                   'admin_socket = "a.sock"\n[tls]\nca_cert = "ca.pem"\nserver_cert = "s.pem"\n'
                   'server_key = "s.key"\n[ibe]\nmaster_key = "m.key"\n')  # fmt: skip

    async def no_daemon(_manager) -> None:
        return None

    monkeypatch.setattr(entry, "_run", no_daemon)
    assert entry.main(["--config", str(cfg), "--log-level", "warning"]) == 0
    assert len(_escaping(root_logger)) == 1 and root_logger.level == logging.WARNING


def test_hostile_requests_cannot_forge_a_log_line(tmp_path, master_a, caplog, root_logger):
    stream = io.StringIO()
    logsafe.install("INFO", stream)
    pki = make_pki(tmp_path, "cl-alpha")
    run = Running(make_config(tmp_path, pki, master_a))
    try:
        caplog.set_level(logging.INFO)
        status, _ = admin(run, "PUT", "/admin/devices/tablet-07", {"valid_from": PERIOD, FORGED: 1})
        assert status == 400
        assert admin(run, "GET", "/admin/devices/a%0Aforged")[0] == 400
        assert admin(run, "GET", "/admin/devices/a%0A2026-11-28%20forged")[0] == 400
        ctx = client_ctx(pki)
        assert call(run, ctx, "GET", "/peer/info%0Aforged")[0] == 404  # the access log's line
        nel = {"User-Agent": "x\x85y"}  # NEL, a line break to many readers, allowed by HTTP
        assert call(run, ctx, "GET", "/openapi.json", headers=nel)[0] == 200
    finally:
        run.stop()
    # At the source: the records themselves (error_middleware, aiohttp's access log) are clean.
    for record in caplog.records:
        assert "\n" not in record.getMessage(), record.getMessage()
    # At the sink: one line per record, each starting with the format's own prefix.
    lines = stream.getvalue().splitlines()
    assert lines and all(LINE.match(line) for line in lines), lines
    assert not any("\x85" in line for line in lines)
    assert any("refused (400)" in line and "forged" in line for line in lines)
