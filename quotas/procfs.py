"""Small, allocation-light readers of ``/proc`` files (``ProcessScanner``'s hot path)."""

from __future__ import annotations

import ipaddress
import os

TCP_ESTABLISHED = "01"


def read_bytes(path: str) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return b""
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return b""
    finally:
        os.close(fd)


def read_text(path: str) -> str:
    return read_bytes(path).decode(errors="replace")


def readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def tcp_table(path: str) -> dict[str, tuple[str, int]]:
    """socket inode → remote (ip, port) of established connections in a /proc/net/tcp file."""
    table: dict[str, tuple[str, int]] = {}
    for line in read_text(path).splitlines()[1:]:
        parts = line.split()
        if len(parts) < 10 or parts[3] != TCP_ESTABLISHED:
            continue
        address, _, port = parts[2].partition(":")
        table[parts[9]] = (_ip(address), int(port, 16))
    return table


def _ip(hex_address: str) -> str:
    """The kernel writes addresses as host-order 32-bit words in hex."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    if len(words) == 4:
        return ".".join(str(b) for b in words)
    address = ipaddress.IPv6Address(words)
    return str(address.ipv4_mapped or address)
