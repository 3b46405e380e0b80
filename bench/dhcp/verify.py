#!/usr/bin/env python3
"""Checks that a DHCP server hands each perfdhcp client its reserved address.

Runs the perfdhcp command given after "--" while capturing every packet on
the client's interface (AF_PACKET, so it needs root and runs in the client's
network namespace), then decodes the server's replies:

- IPv4: BOOTREPLY OFFER/ACK; the client is chaddr, the address yiaddr.
- IPv6: Relay-Reply (perfdhcp acts as a relay) wrapping an Advertise/Reply;
  the client is the MAC at the end of its DUID-LL/LLT (option 1), the
  address the IA Address (option 5) of its IA_NA (option 3).

Every reply must carry exactly the address the leases file lists for that
client's MAC; there must be at least --min replies of the final kind (ACK or
Reply). Prints one summary line; exits 1 on any mismatch.

Usage: verify.py --family 4|6 --iface IF --leases FILE [--min N] -- perfdhcp ...
"""
import argparse
import ipaddress
import select
import socket
import struct
import subprocess
import sys
import time

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


def dhcp4_reply(udp):
    """(kind, mac, address) of a BOOTREPLY, or None."""
    if len(udp) < 240 or udp[0] != 2 or udp[236:240] != b"\x63\x82\x53\x63":
        return None
    mac = udp[28:34].hex(":")
    addr = str(ipaddress.IPv4Address(udp[16:20]))
    kind = None
    i = 240
    while i < len(udp) and udp[i] != 255:
        if udp[i] == 0:
            i += 1
            continue
        code, ln = udp[i], udp[i + 1]
        if code == 53 and ln == 1:
            kind = {2: "OFFER", 5: "ACK", 6: "NAK"}.get(udp[i + 2], str(udp[i + 2]))
        i += 2 + ln
    return kind, mac, addr


def options6(buf):
    """Yields (code, data) of a DHCPv6 option list."""
    i = 0
    while i + 4 <= len(buf):
        code, ln = struct.unpack("!HH", buf[i:i + 4])
        yield code, buf[i + 4:i + 4 + ln]
        i += 4 + ln


def dhcp6_reply(udp):
    """(kind, mac, address) of a Relay-Reply's inner Advertise/Reply, or None."""
    msg = udp
    while msg and msg[0] == 13:  # RELAY-REPL: type, hop count, link, peer
        inner = [d for c, d in options6(msg[34:]) if c == 9]
        if not inner:
            return None
        msg = inner[0]
    if not msg or msg[0] not in (2, 7):
        return None
    kind = "ADVERTISE" if msg[0] == 2 else "REPLY"
    mac = addr = None
    for code, data in options6(msg[4:]):
        if code == 1 and len(data) >= 10 and data[:2] in (b"\x00\x01", b"\x00\x03") and data[2:4] == b"\x00\x01":
            mac = data[-6:].hex(":")  # DUID-LLT/LL of an Ethernet address: the MAC ends it
        elif code == 3 and len(data) >= 12:  # IA_NA: IAID, T1, T2, options
            for c, d in options6(data[12:]):
                if c == 5 and len(d) >= 24:
                    addr = str(ipaddress.IPv6Address(d[:16]))
    return kind, mac, addr


def udp_payload(frame, family):
    """The UDP payload of an Ethernet frame from a DHCP server port, or None."""
    ethertype = struct.unpack("!H", frame[12:14])[0]
    if family == 4 and ethertype == 0x0800:
        ihl = (frame[14] & 0x0F) * 4
        if frame[23] != 17:
            return None
        udp = frame[14 + ihl:]
        sport = struct.unpack("!H", udp[0:2])[0]
        return udp[8:] if sport == 67 else None
    if family == 6 and ethertype == 0x86DD:
        if frame[20] != 17:  # next header UDP, no extension headers
            return None
        udp = frame[54:]
        sport = struct.unpack("!H", udp[0:2])[0]
        return udp[8:] if sport == 547 else None
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--family", type=int, choices=(4, 6), required=True)
    ap.add_argument("--iface", required=True)
    ap.add_argument("--leases", required=True, help="file of 'MAC address' lines")
    ap.add_argument("--min", type=int, default=1, help="fewest final replies (ACK/Reply) to accept")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    want = {}
    for line in open(a.leases):
        f = line.split()
        if len(f) == 2:
            want[f[0].lower()] = str(ipaddress.ip_address(f[1]))

    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((a.iface, 0))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    frames = []
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = None
    while True:
        if deadline is None and proc.poll() is not None:
            deadline = time.monotonic() + 0.5  # late replies
        if deadline is not None and time.monotonic() > deadline:
            break
        r, _, _ = select.select([s], [], [], 0.05)
        if r:
            frame, addr = s.recvfrom(65535)
            if addr[2] != PACKET_OUTGOING:
                frames.append(frame)
    out = proc.stdout.read().decode(errors="replace")

    final = "ACK" if a.family == 4 else "REPLY"
    decode = dhcp4_reply if a.family == 4 else dhcp6_reply
    counts, bad, clients = {}, [], set()
    for frame in frames:
        udp = udp_payload(frame, a.family)
        r = decode(udp) if udp else None
        if not r:
            continue
        kind, mac, addr = r
        counts[kind] = counts.get(kind, 0) + 1
        clients.add(mac)
        if mac not in want or addr != want[mac]:
            bad.append(f"{kind} for {mac}: {addr}, reserved {want.get(mac)}")
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    if bad or counts.get(final, 0) < a.min:
        print(f"FAILED: {summary or 'no replies'}; {len(bad)} with a wrong or no address", file=sys.stderr)
        for b in bad[:10]:
            print("  " + b, file=sys.stderr)
        print(out, file=sys.stderr)
        sys.exit(1)
    print(f"verified {summary} from {len(clients)} clients: every one the client's reserved address")


if __name__ == "__main__":
    main()
