# Verifies the X-Aybiza-Signature header of a request from AYBIZA (tool calls, webhooks).
# The header is `t=<unix seconds>,v1=<hex>[,v1=<hex>...]`; each v1 is the HMAC-SHA256, keyed
# with your signing secret (the whole `whsec_...` string), of b"<t>." + raw_body. Pass the raw
# body bytes exactly as received, and every secret you accept (during a rotation: the new one and
# the previous one). Refuses a timestamp more than `tolerance_secs` away from your clock
# (replays). Python 3.8 or later, standard library only.
import hashlib
import hmac
import time


def verify_aybiza_signature(header, raw_body, secrets, tolerance_secs=300, now=None):
    if not isinstance(header, str):
        return False
    timestamp, signatures = None, []
    for part in header.split(","):
        key, sep, value = part.partition("=")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "t":
            if timestamp is not None or not value.isdigit():
                return False
            timestamp = int(value)
        elif key == "v1":
            signatures.append(value)
    if timestamp is None or not signatures:
        return False
    now = int(time.time()) if now is None else now
    if abs(now - timestamp) > tolerance_secs:
        return False
    if isinstance(raw_body, str):
        raw_body = raw_body.encode("utf-8")
    if isinstance(secrets, str):
        secrets = [secrets]
    for secret in secrets:
        expected = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + raw_body, hashlib.sha256).hexdigest()
        if any(hmac.compare_digest(expected, signature) for signature in signatures):
            return True
    return False
