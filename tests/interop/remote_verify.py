"""Verifies tokens with PyJWT's PyJWKClient fetching the JWKS over HTTP, its caching on.

    remote_verify.py URL CACHE_SECONDS    one token per line on stdin; one line out for each:
                                          "ok <kid>" or "refused <kid>: <why>"

The JWK Set is cached CACHE_SECONDS (PyJWKClient's lifespan) and never refetched early for an
unknown kid (cooldown longer than any test): a verifier like Envoy's, which only refreshes on
its schedule, is what the operator's publishLead must hold for.
"""

import sys

import jwt

uri, lifespan = sys.argv[1], float(sys.argv[2])
client = jwt.PyJWKClient(uri, cache_jwk_set=True, lifespan=lifespan, cooldown_duration=86400)
for line in sys.stdin:
    token = line.strip()
    kid = "?"
    try:
        header = jwt.get_unverified_header(token)
        kid = header.get("kid", "?")
        key = client.get_signing_key_from_jwt(token)
        jwt.decode(token, key.key, algorithms=[header["alg"]])
        print(f"ok {kid}", flush=True)
    except Exception as e:  # every refusal is reported, whatever raised it
        print(f"refused {kid}: {type(e).__name__}: {e}", flush=True)
