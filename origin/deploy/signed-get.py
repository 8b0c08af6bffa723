#!/usr/bin/env python3
"""GET an origin route that needs the edge's signature (`/ready`, `/metrics`), signed as
voice-router signs (shared::signing: HMAC-SHA256 over the scheme, method, path+query, timestamp,
a fresh nonce, SHA-256 of the empty body and the empty principal header; the origin refuses a
nonce it has seen, so each run signs anew). For operators and the deploy
pipeline; the origin accepts nothing unsigned but `/health`.

Usage: EDGE_SIGNING_SECRET=... origin/deploy/signed-get.py URL [--expect STATUS] [--quiet]
  URL              e.g. https://origin-us-east-1.acme.io/ready
  --expect STATUS  exit 0 only on this status (default: any 2xx)
  --quiet          print only the status line, not the body

The secret is read from the environment, never from an argument (which other users of the
machine could see). Exit: 0 as expected, 1 otherwise, 2 usage.
"""

import hashlib
import hmac
import http.client
import os
import sys
import time
import urllib.parse
import uuid

SCHEME = "AYBIZA-EDGE-HMAC-SHA256"


def signature(secret: str, method: str, path_and_query: str, timestamp: int, nonce: str, body: bytes = b"") -> str:
    """The X-Edge-Signature value for a request without a principal."""
    canonical = "\n".join(
        [SCHEME, method.upper(), path_and_query, str(timestamp), nonce, hashlib.sha256(body).hexdigest(), ""]
    )
    return "v2=" + hmac.new(secret.encode(), canonical.encode(), hashlib.sha256).hexdigest()


def main(argv: list[str]) -> int:
    args = list(argv)
    expect = None
    quiet = False
    if "--quiet" in args:
        args.remove("--quiet")
        quiet = True
    if "--expect" in args:
        i = args.index("--expect")
        try:
            expect = int(args[i + 1])
        except (IndexError, ValueError):
            print("--expect needs an HTTP status", file=sys.stderr)
            return 2
        del args[i : i + 2]
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    # The one rule for secrets (docs/configuration.md): surrounding ASCII whitespace is not part
    # of the key, exactly as the edge and the origin read it.
    secret = os.environ.get("EDGE_SIGNING_SECRET", "").strip(" \t\n\r\f")
    if not secret:
        print("EDGE_SIGNING_SECRET is not set", file=sys.stderr)
        return 2
    url = urllib.parse.urlsplit(args[0])
    if url.scheme not in ("http", "https") or not url.hostname:
        print(f"not an http(s) URL: {args[0]}", file=sys.stderr)
        return 2
    path_and_query = (url.path or "/") + (f"?{url.query}" if url.query else "")
    timestamp = int(time.time())
    nonce = str(uuid.uuid4())
    connection_class = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    connection = connection_class(url.hostname, url.port, timeout=10)
    try:
        connection.request(
            "GET",
            path_and_query,
            headers={
                "x-edge-timestamp": str(timestamp),
                "x-edge-nonce": nonce,
                "x-edge-signature": signature(secret, "GET", path_and_query, timestamp, nonce),
            },
        )
        response = connection.getresponse()
        body = response.read().decode("utf-8", "replace")
    except OSError as error:
        print(f"GET {args[0]}: {error}", file=sys.stderr)
        return 1
    finally:
        connection.close()
    print(f"{response.status} {response.reason}")
    if not quiet:
        print(body)
    ok = response.status == expect if expect is not None else 200 <= response.status < 300
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
