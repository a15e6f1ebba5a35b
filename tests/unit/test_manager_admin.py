"""Admin API, bad input, restart, OpenAPI, DNS-SD and the entry point."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import sqlite3
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from test_manager_support import (
    Running,
    admin,
    call,
    client_ctx,
    device_call,
    make_config,
    pair,
    snapshot,
)

from cloudlet import formats, pki
from cloudlet.crypto import ibe
from cloudlet.crypto.identity import Period, device_identity
from cloudlet.errors import ConfigError, StorageError
from cloudlet.manager import __main__ as entry
from cloudlet.manager import app as manager_app
from cloudlet.manager import schema
from cloudlet.manager.config import load_config
from cloudlet.manager.store import Store

PERIOD = str(Period.containing(datetime.now(UTC)))
SVM = {
    "service_id": "face-rec",
    "fqdn": "face-rec.svc.alpha.cloudlet",
    "memory_mib": 512,
    "ports": [8080],
    "images": [{"name": "base", "sha256": "ab" * 32}],
}


def test_admin_socket_is_0600(alpha):
    assert stat.S_IMODE(alpha.cfg.admin_socket.stat().st_mode) == 0o600
    assert stat.S_IMODE(alpha.cfg.db.stat().st_mode) == 0o600


def test_device_put_is_idempotent(alpha):
    body = {"valid_from": PERIOD, "services": ["face-rec"]}
    assert admin(alpha, "PUT", "/admin/devices/tablet-07", body)[1]["changed"] is True
    status, out = admin(alpha, "PUT", "/admin/devices/tablet-07", body)
    assert (status, out["changed"]) == (200, False)
    assert "eap_password" not in out["device"] and "password" not in json.dumps(out)
    assert admin(alpha, "DELETE", "/admin/devices/tablet-07") == (200, {"changed": True})
    assert admin(alpha, "DELETE", "/admin/devices/tablet-07") == (200, {"changed": False})
    assert admin(alpha, "GET", "/admin/devices/tablet-07")[0] == 404


def test_cloudlet_pairing_validation(alpha, pkis, master_a, master_b):
    status, out = pair(alpha, pkis["cl-alpha"], master_a)  # our own CA
    assert status == 400
    status, out = pair(alpha, pkis["cl-bravo"], master_a)  # params of another cloudlet
    assert status == 400 and "belong to 'cl-alpha'" in out["error"]["message"]
    assert pair(alpha, pkis["cl-bravo"], master_b)[1]["changed"] is True
    assert pair(alpha, pkis["cl-bravo"], master_b)[1]["changed"] is False


BAD_BODIES = [
    (b"{not json", "application/json", 400, "not valid JSON"),
    (b'{"valid_from": "2026-11", "valid_from": "2026-12"}', "application/json", 400, "repeats"),
    (b'{"valid_from": "2026-11", "colour": "red"}', "application/json", 400, "not a known field"),
    (b'{"valid_from": 202611}', "application/json", 400, "must be of type string"),
    (b'{"valid_from": "2026-11", "revoked": 1}', "application/json", 400, "boolean"),
    (b'{"valid_from": "2026-11\\n"}', "application/json", 400, "does not match"),
    (b'{"valid_from": "2026-13"}', "application/json", 400, "not valid"),
    (b'{"valid_from": NaN}', "application/json", 400, "NaN"),
    (b"[]", "application/json", 400, "type object"),
    (b'{"valid_from": "2026-11"}', "text/plain", 415, "application/json"),
    (b"\xff\xfe", "application/json", 400, "UTF-8"),
]


@pytest.mark.parametrize(("raw", "ctype", "status", "text"), BAD_BODIES)
def test_bad_admin_input_is_4xx_json_and_changes_nothing(alpha, raw, ctype, status, text):
    admin(alpha, "PUT", "/admin/devices/tablet-07", {"valid_from": PERIOD})
    before = snapshot(alpha.cfg.db)
    got, out = admin(alpha, "PUT", "/admin/devices/tablet-07", raw, {"Content-Type": ctype})
    assert got == status
    assert text in out["error"]["message"] and out["error"]["hint"]
    assert snapshot(alpha.cfg.db) == before


def test_oversized_and_malformed_peer_requests(alpha, pkis, master_b):
    pair(alpha, pkis["cl-bravo"], master_b)
    ctx = client_ctx(pkis["cl-alpha"], pkis["cl-bravo"])
    before = snapshot(alpha.cfg.db)
    huge = dict(SVM, fqdn="a" * (alpha.cfg.max_body_bytes + 10))
    status, out = call(alpha, ctx, "POST", "/peer/svms", huge)
    assert status == 413 and out["error"]["status"] == 413
    for bad in (dict(SVM, memory_mib="512"), dict(SVM, extra=1), {"service_id": "x"}):
        status, out = call(alpha, ctx, "POST", "/peer/svms", bad)
        assert status == 400, out
    dup = dict(SVM, images=[SVM["images"][0], {"name": "base", "sha256": "cd" * 32}])
    assert call(alpha, ctx, "POST", "/peer/svms", dup)[0] == 400
    assert snapshot(alpha.cfg.db) == before


def test_unknown_route_and_method_are_json(alpha, pkis):
    ctx = client_ctx(pkis["cl-alpha"])
    status, out = call(alpha, ctx, "GET", "/nothing")
    assert status == 404 and out["error"]["status"] == 404
    assert call(alpha, ctx, "DELETE", "/device/messages")[0] == 405


def test_restart_keeps_state_and_replay_protection(tmp_path, pkis, master_a, master_b):
    cfg = make_config(tmp_path, pkis["cl-alpha"], master_a)
    run = Running(cfg)
    try:
        admin(run, "PUT", "/admin/devices/tablet-07", {"valid_from": PERIOD})
        admin(run, "PUT", "/admin/svms/face-rec", SVM)
        pair(run, pkis["cl-bravo"], master_b)
        msg = admin(
            run,
            "POST",
            "/admin/messages",
            {"device_id": "tablet-07", "kind": "note", "issuer": "cl-alpha", "body": "aGk="},
        )[1]
        key = ibe.extract(master_a, device_identity("cl-alpha", "tablet-07"))
        (status, _), used_auth = device_call(
            run, client_ctx(pkis["cl-alpha"]), key, "GET", "/device/messages"
        )
        assert status == 200
        before = snapshot(cfg.db)
    finally:
        run.stop()
    run = Running(cfg)  # same files, new process state
    try:
        assert snapshot(cfg.db) == before
        ctx = client_ctx(pkis["cl-alpha"])
        status, out = call(
            run, ctx, "GET", "/device/messages", headers={"Authorization": used_auth}
        )
        assert status == 401 and "Replayed" in out["error"]["message"]
        (status, out), _ = device_call(run, ctx, key, "GET", "/device/messages")
        assert [m["message_id"] for m in out["messages"]] == [msg["message_id"]]
        peer_ctx = client_ctx(pkis["cl-alpha"], pkis["cl-bravo"])
        assert call(run, peer_ctx, "GET", "/peer/info")[1]["caller"] == "cl-bravo"
    finally:
        run.stop()


def _router_routes(app):
    out = set()
    for route in app.router.routes():
        if route.method in ("HEAD", "OPTIONS"):
            continue
        out.add((route.method.lower(), route.resource.canonical))
    return out


def _spec_routes(spec):
    return {(m, p) for p, ops in spec["paths"].items() for m in ops}


def test_openapi_matches_the_routes_both_ways(alpha, pkis):
    status, spec = call(alpha, client_ctx(pkis["cl-alpha"]), "GET", "/openapi.json")
    assert status == 200 and spec["openapi"] == "3.1.0"
    public = manager_app.build_public_app(alpha.state)
    assert _router_routes(public) == _spec_routes(spec)
    status, admin_spec = admin(alpha, "GET", "/openapi.json")
    assert _router_routes(manager_app.build_admin_app(alpha.state)) == _spec_routes(admin_spec)
    assert not any(p.startswith("/admin") for p in spec["paths"])  # admin stays local
    body = spec["paths"]["/peer/svms"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["additionalProperties"] is False


def test_every_body_schema_is_supported_and_valid_json_schema():
    jsonschema = pytest.importorskip("jsonschema")
    for route in manager_app.PUBLIC_ROUTES + manager_app.ADMIN_ROUTES:
        if route.body is not None:
            schema.check(route.body)
            jsonschema.Draft202012Validator.check_schema(route.body)


def test_dns_sd_advertises_on_loopback_only(tmp_path, pkis, master_a):
    from zeroconf import IPVersion
    from zeroconf.asyncio import AsyncZeroconf

    cfg = make_config(
        tmp_path, pkis["cl-alpha"], master_a, discovery=True, discovery_interfaces=("127.0.0.1",)
    )
    run = Running(cfg)
    try:

        async def browse():
            zc = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
            try:
                return await zc.async_get_service_info(
                    "_cloudlet._tcp.local.", "cl-alpha._cloudlet._tcp.local.", timeout=3000
                )
            finally:
                await zc.async_close()

        info = asyncio.run(browse())
    finally:
        run.stop()
    assert info is not None and info.port == run.port
    assert info.properties[b"id"] == b"cl-alpha" and info.properties[b"api"] == b"1"
    assert info.properties[b"ca"] == pki.fingerprint(pkis["cl-alpha"].ca_pem).encode()
    assert info.parsed_addresses() == ["127.0.0.1"]


def test_entry_point_checks_config(tmp_path, capsys):
    cfg = tmp_path / "manager.toml"
    cfg.write_text('cloudlet_id = "cl-alpha"\nzone = "z"\nfqdn = "m.z"\ndb = "m.db"\n'
                   'admin_socket = "a.sock"\n[tls]\nca_cert = "ca.pem"\nserver_cert = "s.pem"\n'
                   'server_key = "s.key"\n[ibe]\nmaster_key = "m.key"\n')  # fmt: skip
    assert entry.main(["--config", str(cfg), "--check"]) == 0
    assert "cl-alpha" in capsys.readouterr().out
    cfg.write_text('cloudlet_id = "cl-alpha"\ncolour = "red"\n')
    assert entry.main(["--config", str(cfg), "--check"]) == 2
    assert "Unknown configuration key(s): colour" in capsys.readouterr().err
    assert entry.main(["--config", str(tmp_path / "missing.toml")]) == 2


def test_version_names_the_code_without_a_config(capsys):
    with pytest.raises(SystemExit) as exited:
        entry.main(["--version"])
    assert exited.value.code == 0
    out = capsys.readouterr().out.strip()
    assert out == entry.code_identity()
    assert re.fullmatch(r"cloudlet \S+ code sha256:[0-9a-f]{64}", out)


def test_start_fails_cleanly_without_keys(tmp_path, pkis, master_a):
    cfg = make_config(tmp_path, pkis["cl-alpha"], master_a)
    cfg.master_key.unlink()
    with pytest.raises(Exception, match="IBE master key"):
        Running(cfg)


def test_store_is_wal_with_foreign_keys_and_a_schema_version(tmp_path):
    store = Store(tmp_path / "m.db")
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.put_device("tablet-07", 0, 10)
    store.put_message("tablet-07", "note", "cl-alpha", b"x")
    store.remove_device("tablet-07")
    assert store.all_messages() == []  # cascaded
    store.close()
    con = sqlite3.connect(tmp_path / "m.db")
    con.execute("UPDATE schema_version SET version = 99")
    con.commit()
    con.close()
    with pytest.raises(StorageError, match="schema version 99"):
        Store(tmp_path / "m.db")


def test_a_schema_1_database_is_upgraded_in_place(tmp_path, pkis, master_b):
    """Release 0.1.0's devices, SVMs and peers: local devices, active SVMs, confirmed peers."""
    v1 = (Path(__file__).parent / "data" / "manager_schema_v1.sql").read_text()
    con = sqlite3.connect(tmp_path / "m.db")
    con.executescript(v1)
    con.execute("INSERT INTO schema_version VALUES (1)")
    con.execute("INSERT INTO devices VALUES ('tablet-07', 0, 10, 0, 'pw', 0)")
    con.execute("INSERT INTO svms VALUES ('chat', 'chat.svc', 64, '[80]', 'local', 0)")
    con.execute("INSERT INTO cloudlets VALUES ('cl-bravo', ?, 'ab', ?, 'b.example', 9443, 0)",
                (pkis["cl-bravo"].ca_pem.decode(), formats.encode_params(master_b.params)))
    con.commit()
    con.close()
    store = Store(tmp_path / "m.db")
    assert store.schema_version() == 3
    dev = store.get_device("tablet-07")
    assert (dev.via, dev.home, dev.eap_password) == ("", None, "pw")
    assert store.get_svm("chat").state == "active"
    assert store.get_cloudlet("cl-bravo").pending is False
    with pytest.raises(sqlite3.IntegrityError):  # the new columns' checks hold
        store._db.execute("UPDATE svms SET state = 'lost'")
    with pytest.raises(sqlite3.IntegrityError):
        store._db.execute("UPDATE cloudlets SET pending = 2")
    store.close()


def test_listens_on_the_listed_addresses_only(tmp_path, pkis, master_a):
    with socket.socket() as probe:  # a port that is free now, for both addresses
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cfg = make_config(
        tmp_path, pkis["cl-alpha"], master_a, listen_hosts=("127.0.0.1", "127.0.0.2"),
        listen_port=port,
    )  # fmt: skip
    run = Running(cfg)
    try:
        assert run.port == port
        assert call(run, client_ctx(pkis["cl-alpha"]), "GET", "/openapi.json")[0] == 200
        socket.create_connection(("127.0.0.2", port), timeout=5).close()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.3", port), timeout=5)
    finally:
        run.stop()


def test_an_address_the_host_lacks_fails_start_with_a_clear_error(tmp_path, pkis, master_a):
    cfg = make_config(tmp_path, pkis["cl-alpha"], master_a, listen_hosts=("192.0.2.1",))
    with pytest.raises(ConfigError, match="Cannot listen on 192.0.2.1 port 0: .*listen_hosts"):
        Running(cfg)
    assert not cfg.admin_socket.exists()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[]", "non-empty list"),
        ('"10.0.0.1"', "must be a list"),
        ('["10.0.0.1", "10.0.0.2"]\nlisten_port = 0', "single listen host"),
    ],
)
def test_bad_listen_hosts_are_refused_by_name(tmp_path, value, message):
    cfg = tmp_path / "manager.toml"
    cfg.write_text(
        'cloudlet_id = "cl-alpha"\nzone = "z"\nfqdn = "m.z"\ndb = "m.db"\n'
        f'admin_socket = "a.sock"\nlisten_hosts = {value}\n[tls]\nca_cert = "ca.pem"\n'
        'server_cert = "s.pem"\nserver_key = "s.key"\n[ibe]\nmaster_key = "m.key"\n'
    )
    with pytest.raises(ConfigError, match=message):
        load_config(cfg)
