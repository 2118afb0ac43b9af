// The Node side of tests/interop.rs: panva/jose on Node's crypto against the operator's keys.
//
//   node interop.mjs sign DIR     load every case's files, check them, sign one token per encoding,
//                                 and write the key as jose exports it
//   node interop.mjs verify DIR   verify every token in DIR (whoever signed it) with the published keys
//
// DIR is laid out as interop.py describes. Every failure is collected and printed; the exit
// code is 1 if there was any.

import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createPublicKey } from 'node:crypto';
import { join } from 'node:path';
import * as jose from 'jose';

const here = new URL('.', import.meta.url).pathname;

/** The installed jose is exactly the one package-lock.json pins. */
function checkPinnedVersion() {
  const lock = JSON.parse(readFileSync(join(here, 'package-lock.json'), 'utf8'));
  const want = lock.packages['node_modules/jose'].version;
  const have = JSON.parse(readFileSync(join(here, 'node_modules/jose/package.json'), 'utf8')).version;
  if (have !== want) {
    console.error(`jose ${have} is installed, package-lock.json pins ${want}: run tests/interop/setup.sh`);
    process.exit(1);
  }
  return have;
}

class Case {
  constructor(root, { name, signers }) {
    this.name = name;
    this.signers = signers;
    this.dir = join(root, name);
    this.alg = this.text('alg');
    this.kid = this.text('kid');
    this.verifyJwk = JSON.parse(this.text('verify.jwk.json'));
    this.symmetric = this.alg.startsWith('HS');
  }
  read(file) { return readFileSync(join(this.dir, file)); }
  text(file) { return readFileSync(join(this.dir, file), 'utf8'); }
}

class Checks {
  constructor() { this.passed = 0; this.failures = []; }
  async run(label, fn) {
    try {
      await fn();
      this.passed += 1;
    } catch (e) {
      this.failures.push(`${label}: ${e?.name}${typeof e?.code === 'string' ? ` ${e.code}` : ''}: ${e?.message}`);
    }
  }
  async equal(label, got, want) {
    await this.run(label, () => expectEqual(got, want));
  }
}

function expectEqual(got, want) {
  if (got !== want) throw new Error(`got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
}

const claims = (signer, c) => ({ sub: `${signer}:${c.name}`, exp: 4_000_000_000 });

/** Loads the case's private key in each encoding, checks it, and signs one token with each. */
async function sign(c, checks) {
  let keys;
  const privateJwk = JSON.parse(c.text('private.jwk.json'));
  if (c.symmetric) {
    keys = { 'node-secret': new Uint8Array(c.read('secret')), 'node-jwk': await jose.importJWK(privateJwk, c.alg) };
  } else {
    const opts = { extractable: true };
    const pem = await jose.importPKCS8(c.text('private.pem'), c.alg, opts);
    const spki = await jose.importSPKI(c.text('public.pem'), c.alg, opts);
    // Canonical DER on both sides: what Node writes back is byte for byte ours.
    await checks.equal(`${c.name}: private.pem re-encodes to itself`, await jose.exportPKCS8(pem), c.text('private.pem').trimEnd());
    await checks.equal(`${c.name}: public.pem re-encodes to itself`, await jose.exportSPKI(spki), c.text('public.pem').trimEnd());
    const derived = createPublicKey(c.text('private.pem'));
    await checks.equal(`${c.name}: public.pem is the private key's public half`,
      derived.export({ type: 'spki', format: 'pem' }), c.text('public.pem'));
    const fromJwk = await jose.importJWK(privateJwk, c.alg, opts);
    await checks.equal(`${c.name}: private.jwk.json holds the key of private.pem`,
      await jose.exportPKCS8(fromJwk), c.text('private.pem').trimEnd());
    await checks.equal(`${c.name}: thumbprint of Node's JWK of public.pem is the kid`,
      await jose.calculateJwkThumbprint(derived.export({ format: 'jwk' })), c.kid);
    keys = { 'node-pem': pem, 'node-jwk': fromJwk };
  }
  // The key as jose writes it, for the operator to read back.
  writeFileSync(join(c.dir, 'node.private.jwk.json'), JSON.stringify(await jose.exportJWK(keys['node-jwk'])));
  await checks.equal(`${c.name}: jose's thumbprint of the verifier's JWK is the kid`,
    await jose.calculateJwkThumbprint(c.verifyJwk), c.kid);
  await checks.equal(`${c.name}: the JWK's own kid`, c.verifyJwk.kid, c.kid);
  for (const [signer, key] of Object.entries(keys)) {
    await checks.run(`${c.name}: ${signer} signs`, async () => {
      const token = await new jose.SignJWT(claims(signer, c))
        .setProtectedHeader({ alg: c.alg, kid: c.kid })
        .sign(key);
      writeFileSync(join(c.dir, `token.${signer}.jwt`), token);
    });
  }
}

function tampered(token) {
  const [head, body, sig] = token.split('.');
  const raw = Buffer.from(sig, 'base64url');
  raw[raw.length >> 1] ^= 1;
  return `${head}.${body}.${raw.toString('base64url')}`;
}

/** Verifies every token of the case with the keys a verifier holds, and refuses a forgery. */
async function verify(c, checks, jwks) {
  const keys = c.symmetric
    ? { 'oct JWK': await jose.importJWK(c.verifyJwk, c.alg), secret: new Uint8Array(c.read('secret')) }
    // As a verifier does: the key is picked from the JWKS by kid and alg.
    : { JWKS: jwks, 'public.pem': await jose.importSPKI(c.text('public.pem'), c.alg) };
  for (const signer of c.signers) {
    const file = `token.${signer}.jwt`;
    if (!existsSync(join(c.dir, file))) {
      checks.failures.push(`${c.name}: no token from ${signer}`);
      continue;
    }
    const token = c.text(file);
    await checks.equal(`${c.name}: ${signer} token's kid`, jose.decodeProtectedHeader(token).kid, c.kid);
    for (const [source, key] of Object.entries(keys)) {
      const label = `${c.name}: ${signer} token verified with ${source}`;
      await checks.run(label, async () => {
        const { payload } = await jose.jwtVerify(token, key, { algorithms: [c.alg] });
        expectEqual(payload.sub, `${signer}:${c.name}`);
      });
      await checks.run(`${label} refuses a tampered signature`, async () => {
        try {
          await jose.jwtVerify(tampered(token), key, { algorithms: [c.alg] });
        } catch (e) {
          if (e.code === 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED') return;
          throw e;
        }
        throw new Error('a tampered signature verified');
      });
    }
  }
}

async function main() {
  const [mode, root] = process.argv.slice(2);
  const version = checkPinnedVersion();
  const cases = JSON.parse(readFileSync(join(root, 'cases.json'), 'utf8')).map((n) => new Case(root, n));
  const checks = new Checks();
  if (mode === 'sign') {
    for (const c of cases) await checks.run(`${c.name}: load the keys and sign`, () => sign(c, checks));
  } else if (mode === 'verify') {
    const jwks = jose.createLocalJWKSet(JSON.parse(readFileSync(join(root, 'jwks.json'), 'utf8')));
    for (const c of cases) await checks.run(`${c.name}: verify`, () => verify(c, checks, jwks));
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
  for (const f of checks.failures) console.log(`FAIL ${f}`);
  console.log(`node ${mode} (jose ${version}, Node ${process.versions.node}, OpenSSL ${process.versions.openssl}): ` +
    `${checks.passed} passed, ${checks.failures.length} failed over ${cases.length} cases`);
  process.exit(checks.failures.length ? 1 : 0);
}

await main();
