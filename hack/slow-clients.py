#!/usr/bin/env python3
"""Opens idle and slow-header TLS connections against a running token service
and prints, once a second, how many are still open and the operator's file
descriptors and resident memory. A figure-printing check of the connection
limits (README: Limits); loopback only, bounded in count and time.

    hack/slow-clients.py --address 127.0.0.1:8443 --pid <operator pid> [--idle 1000] [--slow 1000] [--seconds 75]
"""

import argparse
import socket
import ssl
import time


def fds(pid):
    import os

    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def rss_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return -1.0


def connect(host, port, context, slow):
    raw = socket.create_connection((host, port), timeout=5)
    try:
        tls = context.wrap_socket(raw, server_hostname="localhost")
    except (OSError, ssl.SSLError):
        raw.close()
        return None
    if slow:
        # Half a request, and then nothing.
        tls.sendall(b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\n")
    tls.setblocking(False)
    return tls


def still_open(conn):
    try:
        data = conn.recv(1)
        return data != b""
    except ssl.SSLWantReadError:
        return True
    except BlockingIOError:
        return True
    except (OSError, ssl.SSLError):
        return False


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--slow", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=75)
    args = parser.parse_args()
    host, port = args.address.rsplit(":", 1)
    if not (host.startswith("127.") or host in ("localhost", "::1")):
        raise SystemExit("loopback addresses only")
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = args.idle + args.slow + 64
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE

    print(f"before: fds {fds(args.pid)}, RSS {rss_mib(args.pid):.1f} MiB")
    started = time.monotonic()
    conns = []
    refused = 0
    for i in range(args.idle + args.slow):
        conn = connect(host, int(port), context, slow=i >= args.idle)
        if conn is None:
            refused += 1
        else:
            conns.append(conn)
    print(
        f"opened {len(conns)} TLS connections in {time.monotonic() - started:.1f} s "
        f"({refused} refused or closed during the handshake)"
    )
    print(f"{'s':>4} {'open':>6} {'fds':>6} {'RSS MiB':>8}")
    while time.monotonic() - started < args.seconds:
        conns = [c for c in conns if still_open(c) or c.close()]
        print(f"{time.monotonic() - started:4.0f} {len(conns):6} {fds(args.pid):6} {rss_mib(args.pid):8.1f}")
        if not conns:
            break
        time.sleep(1)
    for conn in conns:
        conn.close()
    time.sleep(2)
    print(f"after: fds {fds(args.pid)}, RSS {rss_mib(args.pid):.1f} MiB")


if __name__ == "__main__":
    main()
