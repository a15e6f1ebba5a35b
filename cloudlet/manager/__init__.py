"""The Cloudlet Manager daemon: peer, device and admin APIs over one SQLite state.

Modules, from the bottom up: ``store`` (SQLite repositories), ``schema``
(strict JSON bodies), ``protocol`` (device proof on the wire), ``tlsctx``
(server SSL context, peer identification), ``web`` (shared handler
plumbing), ``peer`` / ``device`` / ``admin`` (routes), ``openapi``,
``discovery`` (DNS-SD), ``config``, ``app`` (assembly and life cycle) and
``__main__``. Importing this package starts nothing.
"""
