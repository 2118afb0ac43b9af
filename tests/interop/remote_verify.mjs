// Verifies tokens with panva/jose's createRemoteJWKSet fetching the JWKS over HTTP, its
// caching on.
//
//   node remote_verify.mjs URL CACHE_SECONDS   one token per line on stdin; one line out for
//                                              each: "ok <kid>" or "refused <kid>: <why>"
//
// The JWK Set is cached CACHE_SECONDS (cacheMaxAge) and never refetched early for an unknown
// kid (a cooldown longer than any test), as interop.py's remote verifier does.
import { createInterface } from 'node:readline';
import * as jose from 'jose';

const [uri, cacheSeconds] = process.argv.slice(2);
const jwks = jose.createRemoteJWKSet(new URL(uri), {
  cacheMaxAge: Number(cacheSeconds) * 1000,
  cooldownDuration: 86_400_000,
});
const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  const token = line.trim();
  let kid = '?';
  try {
    kid = jose.decodeProtectedHeader(token).kid ?? '?';
    await jose.jwtVerify(token, jwks);
    console.log(`ok ${kid}`);
  } catch (e) {
    console.log(`refused ${kid}: ${e?.code ?? e?.name}: ${e?.message}`);
  }
}
