"""The Python side of tests/interop.rs: PyJWT and `cryptography` against the operator's keys.

    interop.py sign DIR     load every case's files, check them, sign one token per encoding,
                            and write the key as PyJWT and `cryptography` export it
    interop.py verify DIR   verify every token in DIR (whoever signed it) with the published keys

DIR holds `cases.json` (each case's name and the signers whose tokens it must hold), `jwks.json` (every published public JWK, as the
ConfigMap carries them) and one folder per case with the files the Secret carries
(`private.pem`, `public.pem`, `private.jwk.json`, `secret`), `kid`, `alg`, `verify.jwk.json`
(the JWK a verifier is handed: the public JWK, or the `oct` JWK for HMAC) and `token.*.jwt`.
Every failure is collected and printed; the exit code is 1 if there was any.
"""

import base64
import hashlib
import json
import sys
from importlib import metadata
from pathlib import Path

import cryptography
import jwt
from cryptography.hazmat.primitives import serialization
from jwt.algorithms import ECAlgorithm, HMACAlgorithm, OKPAlgorithm, RSAAlgorithm

HERE = Path(__file__).resolve().parent
# RFC 7638 §3.2: the members that make up the thumbprint, per key type.
THUMBPRINT_MEMBERS = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y"),
                      "OKP": ("crv", "kty", "x"), "oct": ("k", "kty")}
TO_JWK = {"RS": RSAAlgorithm, "PS": RSAAlgorithm, "ES": ECAlgorithm, "Ed": OKPAlgorithm}


def check_pinned_versions():
    """The installed packages are exactly the pinned ones, or the run proves nothing stable."""
    for line in (HERE / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, want = line.split("==")
            have = metadata.version(name)
            if have != want:
                sys.exit(f"{name} {have} is installed, requirements.txt pins {want}: "
                         "run tests/interop/setup.sh")


def thumbprint(jwk):
    """RFC 7638 by hand: `cryptography` and PyJWT have no thumbprint function."""
    members = {m: jwk[m] for m in THUMBPRINT_MEMBERS[jwk["kty"]]}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()


class Case:
    def __init__(self, root, case):
        self.name, self.signers, self.dir = case["name"], case["signers"], root / case["name"]
        self.alg = self.read("alg").decode()
        self.kid = self.read("kid").decode()
        self.verify_jwk = json.loads(self.read("verify.jwk.json"))
        self.symmetric = self.alg.startswith("HS")

    def read(self, file):
        return (self.dir / file).read_bytes()



class Checks:
    def __init__(self):
        self.passed, self.failures = 0, []

    def run(self, label, fn, *args):
        try:
            fn(*args)
            self.passed += 1
        except Exception as e:  # every failure is reported, then the run fails
            self.failures.append(f"{label}: {type(e).__name__}: {e}")

    def equal(self, label, got, want):
        self.run(label, expect_equal, got, want)


def expect_equal(got, want):
    if got != want:
        raise AssertionError(f"got {got!r}, want {want!r}")


def claims(signer, case):
    return {"sub": f"{signer}:{case.name}", "exp": 4_000_000_000}


def sign(root, case, checks):
    """Loads the case's private key in each encoding, checks it, and signs one token with each."""
    if case.symmetric:
        keys = {"python-secret": case.read("secret"),
                "python-jwk": jwt.PyJWK(json.loads(case.read("private.jwk.json")), case.alg).key}
        export(case, "python.private.jwk.json", HMACAlgorithm.to_jwk(case.read("secret")))
    else:
        private = serialization.load_pem_private_key(case.read("private.pem"), password=None)
        public = serialization.load_pem_public_key(case.read("public.pem"))
        spki = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        pkcs8 = (serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                 serialization.NoEncryption())
        # Canonical DER on both sides: what `cryptography` writes back is byte for byte ours.
        checks.equal(f"{case.name}: public.pem is the private key's public half",
                     private.public_key().public_bytes(*spki), case.read("public.pem"))
        checks.equal(f"{case.name}: public.pem re-encodes to itself",
                     public.public_bytes(*spki), case.read("public.pem"))
        checks.equal(f"{case.name}: private.pem re-encodes to itself",
                     private.private_bytes(*pkcs8), case.read("private.pem"))
        from_jwk = jwt.PyJWK(json.loads(case.read("private.jwk.json")), case.alg).key
        checks.equal(f"{case.name}: private.jwk.json holds the key of private.pem",
                     from_jwk.private_bytes(*pkcs8), case.read("private.pem"))
        derived = TO_JWK[case.alg[:2]].to_jwk(public, as_dict=True)
        checks.equal(f"{case.name}: thumbprint of PyJWT's JWK of public.pem is the kid",
                     thumbprint(derived), case.kid)
        keys = {"python-pem": private, "python-jwk": from_jwk}
        # The key as these libraries write it, for the operator to read back.
        export(case, "python.private.jwk.json", TO_JWK[case.alg[:2]].to_jwk(private))
        traditional = (serialization.PrivateFormat.PKCS8 if case.alg == "EdDSA"
                       else serialization.PrivateFormat.TraditionalOpenSSL)
        export(case, "python.traditional.pem", private.private_bytes(
            serialization.Encoding.PEM, traditional, serialization.NoEncryption()))
    checks.equal(f"{case.name}: RFC 7638 thumbprint of the verifier's JWK is the kid",
                 thumbprint(case.verify_jwk), case.kid)
    checks.equal(f"{case.name}: the JWK's own kid", case.verify_jwk.get("kid"), case.kid)
    for signer, key in keys.items():
        def write(signer=signer, key=key):
            token = jwt.encode(claims(signer, case), key, algorithm=case.alg,
                               headers={"kid": case.kid})
            (case.dir / f"token.{signer}.jwt").write_text(token)
        checks.run(f"{case.name}: {signer} signs", write)


def export(case, file, data):
    (case.dir / file).write_bytes(data if isinstance(data, bytes) else data.encode())


def tampered(token):
    head, body, sig = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[len(raw) // 2] ^= 1
    return f"{head}.{body}." + base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


def verify(root, case, checks, jwks):
    """Verifies every token of the case with the keys a verifier holds, and refuses a forgery."""
    if case.symmetric:
        keys = {"oct JWK": jwt.PyJWK(case.verify_jwk, case.alg).key, "secret": case.read("secret")}
    else:
        keys = {"JWKS": None,
                "public.pem": serialization.load_pem_public_key(case.read("public.pem"))}
    for signer in case.signers:
        path = case.dir / f"token.{signer}.jwt"
        if not path.exists():
            checks.failures.append(f"{case.name}: no token from {signer}")
            continue
        token = path.read_text()
        header = jwt.get_unverified_header(token)
        checks.equal(f"{case.name}: {signer} token's kid", header.get("kid"), case.kid)
        for source, key in keys.items():
            if key is None:  # as a verifier does: the key is picked from the JWKS by kid
                key = jwks[header["kid"]].key
            label = f"{case.name}: {signer} token verified with {source}"
            got = lambda key=key: jwt.decode(token, key, algorithms=[case.alg])["sub"]
            checks.run(label, lambda: expect_equal(got(), f"{signer}:{case.name}"))

            def refuse(key=key):
                try:
                    jwt.decode(tampered(token), key, algorithms=[case.alg])
                except jwt.InvalidSignatureError:
                    return
                raise AssertionError("a tampered signature verified")
            checks.run(f"{label} refuses a tampered signature", refuse)


def main():
    mode, root = sys.argv[1], Path(sys.argv[2])
    check_pinned_versions()
    cases = [Case(root, case) for case in json.loads((root / "cases.json").read_text())]
    checks = Checks()
    if mode == "sign":
        for case in cases:
            checks.run(f"{case.name}: load the keys and sign", sign, root, case, checks)
    elif mode == "verify":
        jwks = jwt.PyJWKSet.from_json((root / "jwks.json").read_text())
        for case in cases:
            checks.run(f"{case.name}: verify", verify, root, case, checks, jwks)
    else:
        sys.exit(f"unknown mode {mode}")
    versions = f"PyJWT {jwt.__version__}, cryptography {cryptography.__version__}"
    for failure in checks.failures:
        print(f"FAIL {failure}")
    print(f"python {mode} ({versions}): {checks.passed} passed, {len(checks.failures)} failed"
          f" over {len(cases)} cases")
    sys.exit(1 if checks.failures else 0)


if __name__ == "__main__":
    main()
