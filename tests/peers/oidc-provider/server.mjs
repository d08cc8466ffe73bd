// Independent OpenID Provider for storegate's integration tests. TEST ONLY: it signs in anyone who
// names an account, with any password, through oidc-provider's development interactions.
//
// Start: `node server.mjs [CONFIG]` where CONFIG is inline JSON (starts with `{`) or a path to a JSON
// file; otherwise the JSON in $OIDC_PEER_CONFIG; otherwise the defaults below. $PORT overrides
// `port`. Port 0 (the default) lets the OS choose; the issuer is then `http://127.0.0.1:<chosen>`.
// When listening it prints exactly one line on stdout: `READY http://127.0.0.1:PORT`.
//
// Config (all optional):
// {
//   "port": 0,
//   "clients": [{ "client_id", "client_secret", "redirect_uris": [], "post_logout_redirect_uris": [],
//                 ...any other oidc-provider client metadata }],
//   "accounts": { "<login>": { "sub"?: "...", "email": "...", "groups": [...], "<any claim>": ... } },
//   "claims": { "<scope>": ["claim", ...] },   // replaces the scope -> claims map below
//   "userinfo_only": ["groups", ...],           // never put these in the ID token
//   "conform_id_token_claims": false,           // true = oidc-provider's spec-conform default
//   "pkce_required": true,                      // refuse authorization requests without PKCE
//   "ttl": { "IdToken": 3600, "AuthorizationCode": 60, ... }
// }
// Back-channel logout is on: give a client `backchannel_logout_uri` (and
// `backchannel_logout_session_required: true` to put `sid` in its ID and logout tokens).
//
// Where claims end up (authorization code flow):
// - `conform_id_token_claims: false` (our default, like an Access Manager attribute set marked "add to
//   ID token"): every claim released by a granted scope is in BOTH the ID token and userinfo, except
//   the names in `userinfo_only`, which are in userinfo only.
// - `conform_id_token_claims: true` (oidc-provider's default, OIDC Core 5.4): claims released by
//   the email/profile/groups... scopes are in userinfo only; the ID token carries protocol claims
//   (iss, aud, exp, iat, nonce, auth_time, at_hash, sid...), the claims listed under `openid`
//   (checked by hand: extra claims such as `mail` stay in the ID token), and claims requested through
//   the `claims` request parameter. `userinfo_only` applies in both modes.
// - A claim is released only when some granted scope lists it. Default map: openid: sub; email:
//   email, email_verified; profile: name, given_name, family_name; groups: groups. Any other claim
//   found on an account (e.g. `mail`, `/UserAttribute[@ldap:targetAttribute="groupMembership"]`) is
//   added to `openid`, so it is released whenever the client asks for `openid`.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import Provider from 'oidc-provider';

function loadConfig() {
  const arg = process.argv[2];
  let text = null;
  if (arg !== undefined) {
    text = arg.trimStart().startsWith('{') ? arg : readFileSync(arg, 'utf8');
  } else if (process.env.OIDC_PEER_CONFIG) {
    text = process.env.OIDC_PEER_CONFIG;
  }
  const config = text === null ? {} : JSON.parse(text);
  if (process.env.PORT) config.port = Number(process.env.PORT);
  return config;
}

const DEFAULT_CLIENTS = [{
  client_id: 'storegate',
  client_secret: 'storegate-test-secret',
  redirect_uris: ['http://127.0.0.1:8080/oidc/test/callback'],
  post_logout_redirect_uris: ['http://127.0.0.1:8080/'],
}];

const DEFAULT_ACCOUNTS = {
  alice: {
    email: 'alice@corp.example',
    email_verified: true,
    given_name: 'Alice',
    family_name: 'Anders',
    name: 'Alice Anders',
    groups: ['bc-merchandisers'],
  },
};

const DEFAULT_CLAIMS = {
  openid: ['sub'],
  email: ['email', 'email_verified'],
  profile: ['name', 'given_name', 'family_name'],
  groups: ['groups'],
};

// Every claim an account has must be listed under some scope, or oidc-provider never releases it.
function claimsMap(config, accounts) {
  const map = structuredClone(config.claims ?? DEFAULT_CLAIMS);
  map.openid ??= ['sub'];
  const listed = new Set(Object.values(map).flat());
  for (const claims of Object.values(accounts)) {
    for (const name of Object.keys(claims)) {
      if (!listed.has(name)) {
        map.openid.push(name);
        listed.add(name);
      }
    }
  }
  return map;
}

function signingKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return { ...jwk, kid: `peer-${randomBytes(6).toString('hex')}`, use: 'sig', alg: 'RS256' };
}

const config = loadConfig();
const accounts = config.accounts ?? DEFAULT_ACCOUNTS;
const userinfoOnly = new Set(config.userinfo_only ?? []);
const clients = (config.clients ?? DEFAULT_CLIENTS).map((client) => ({
  grant_types: ['authorization_code'],
  response_types: ['code'],
  token_endpoint_auth_method: 'client_secret_basic',
  id_token_signed_response_alg: 'RS256',
  ...client,
}));

// Listen first so that port 0 works: the issuer must name the real port.
const server = createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(config.port ?? 0, '127.0.0.1', resolve);
});
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients,
  jwks: { keys: config.jwks ?? [signingKey()] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  claims: claimsMap(config, accounts),
  conformIdTokenClaims: config.conform_id_token_claims ?? false,
  pkce: { required: () => config.pkce_required ?? true },
  responseTypes: ['code'],
  ttl: config.ttl ?? {},
  // oidc-provider's outgoing requests (back-channel logout tokens, client JWKS) refuse
  // special-use addresses, 127.0.0.0/8 among them (SSRF protection in helpers/fetch_request.js,
  // a socket destroyed on connect): every relying party in the tests listens on loopback, so
  // for loopback only the guard is dropped. Without this no logout token ever reaches a gateway.
  fetch(url, options) {
    const { hostname } = new URL(url);
    if (hostname === '127.0.0.1' || hostname === 'localhost' || hostname === '[::1]') {
      delete options.dispatcher;
    }
    return globalThis.fetch(url, options);
  },
  features: {
    devInteractions: { enabled: true },
    claimsParameter: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    // OIDC Back-Channel Logout 1.0: a client registered with `backchannel_logout_uri` (and
    // `backchannel_logout_session_required: true` for `sid`) gets a logout token when the
    // person signs out here (`/session/end`, then the confirm form).
    backchannelLogout: { enabled: true },
  },
  async findAccount(_ctx, id) {
    const claims = accounts[id];
    if (claims === undefined) return undefined;
    return {
      accountId: id,
      async claims(use) {
        const out = { sub: id, ...claims };
        if (use === 'id_token') {
          for (const name of userinfoOnly) delete out[name];
        }
        return out;
      },
    };
  },
});

// Back-channel deliveries are otherwise silent (oidc-provider only emits events): one line each
// on stderr, which the tests show when an expected logout did not happen.
provider.on('backchannel.success', (_ctx, client, accountId, sid) => {
  process.stderr.write(`backchannel.success client=${client.clientId} sub=${accountId} sid=${sid}\n`);
});
provider.on('backchannel.error', (_ctx, err, client, accountId, sid) => {
  const cause = err.cause ? ` (${err.cause.message ?? err.cause})` : '';
  process.stderr.write(`backchannel.error client=${client.clientId} sub=${accountId} sid=${sid}: ${err.message}${cause}\n`);
});

server.on('request', provider.callback());
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

process.stdout.write(`READY ${issuer}\n`);
