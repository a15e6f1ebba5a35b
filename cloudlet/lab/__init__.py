"""The lab: real Debian machines on one box, standing in for cloudlets and devices.

Each machine is a systemd-nspawn container booted with systemd, on a writable
overlay over one cached base image, in a network namespace that the lab wires
to bridges of its own. The control node reaches them over SSH, as in the field.
"""
