"""The Cloudlet Manager daemon: peer, device and admin APIs over one SQLite state.

Modules, from the bottom up: ``perms`` (file modes), ``store`` (SQLite
repositories), ``schema`` (strict JSON bodies and parameters), ``protocol``
(device proof on the wire), ``tlsctx`` (server SSL context, peer
identification), ``web`` (shared handler plumbing), ``views`` (response
shapes), ``peer`` / ``device`` / ``admin`` (routes), ``openapi``,
``discovery`` (DNS-SD), ``config``, ``logsafe`` (one-line log records),
``limiter`` (failed device proofs per source), ``guard`` (connection count
and deadlines), ``app`` (assembly and life cycle) and ``__main__``.
Importing this package starts nothing.
"""
