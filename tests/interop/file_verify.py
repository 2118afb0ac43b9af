"""Verifies tokens with PyJWT against a JWKS file, as a pod mounting a ConfigMap reads it.

    file_verify.py PATH CACHE_SECONDS    one token per line on stdin; one line out for each:
                                         "ok <kid>" or "refused <kid>: <why>"

The file is read again only every CACHE_SECONDS, never early for an unknown kid: a verifier
that reloads its mounted keys on a schedule is what the operator's publishLead must hold for.
"""

import sys
import time

import jwt

path, lifespan = sys.argv[1], float(sys.argv[2])
keys, loaded = None, 0.0
for line in sys.stdin:
    token = line.strip()
    kid = "?"
    try:
        if keys is None or time.monotonic() - loaded >= lifespan:
            with open(path, encoding="utf-8") as f:
                keys, loaded = jwt.PyJWKSet.from_json(f.read()), time.monotonic()
        header = jwt.get_unverified_header(token)
        kid = header.get("kid", "?")
        key = keys[kid]
        jwt.decode(token, key.key, algorithms=[header["alg"]])
        print(f"ok {kid}", flush=True)
    except Exception as e:  # every refusal is reported, whatever raised it
        print(f"refused {kid}: {type(e).__name__}: {e}", flush=True)
