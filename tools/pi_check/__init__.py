"""make pi-check: the edgekit wheel installed and checked in arm64 Debian roots under qemu user-mode emulation.

Not part of the edgekit package and not run by the default test suite (see tools/pi_check/__main__.py).
"""
