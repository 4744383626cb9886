"""A real SMTP server for FluxGate's end-to-end tests, built on aiosmtpd.

Usage: smtp_sink.py OUTDIR [--reject-first N]

Listens on 127.0.0.1 (a free port), prints "READY <port>" once it accepts connections, and
writes each accepted message to OUTDIR as NNNNNN.json: {"from", "to", "subject", "body"}, the
body decoded from its MIME transfer encoding. The first N messages get a temporary failure
(451), and any recipient whose local part starts with "bounce" a permanent one (550), so the
tests can watch FluxGate retry and give up.
"""

import argparse
import asyncio
import email
import email.policy
import json
import os
import socket
import sys

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, outdir, reject_first):
        self.outdir = outdir
        self.reject_first = reject_first
        self.count = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.split("@", 1)[0].startswith("bounce"):
            return "550 5.1.1 No such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.reject_first > 0:
            self.reject_first -= 1
            return "451 4.3.0 Try again later"
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        body = msg.get_body(preferencelist=("plain",))
        self.count += 1
        record = {
            "from": envelope.mail_from,
            "to": envelope.rcpt_tos,
            "subject": str(msg["subject"]),
            "body": body.get_content() if body is not None else "",
        }
        path = os.path.join(self.outdir, f"{self.count:06d}.json")
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(record, f)
        os.rename(path + ".tmp", path)
        return "250 OK"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("--reject-first", type=int, default=0)
    args = ap.parse_args()
    os.makedirs(args.outdir, exist_ok=True)
    port = free_port()
    controller = Controller(Sink(args.outdir, args.reject_first), hostname="127.0.0.1", port=port)
    controller.start()
    print(f"READY {port}", flush=True)
    try:
        # The test closes our stdin (or kills us) when it is done.
        sys.stdin.read()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
