// The host app of oidc-dtr's interop test: an unmodified `oidc-provider`
// (the version pinned in package.json) with its FAPI 2.0 profile on, served
// over HTTPS on 127.0.0.1.
//
//   node server.mjs CONFIG.json
//
// CONFIG.json (written by the Rust test):
//   {
//     "server_cert_pem": "...", "server_key_pem": "...",  // TLS, for 127.0.0.1
//     "ca_pem": "...",            // the CA client certificates are checked against
//     "redirect_uri": "https://rp.example/cb",
//     "clients": [ { client metadata (RFC 7591), e.g. client_id,
//                    token_endpoint_auth_method, jwks, ... }, ... ]
//   }
//
// Two listeners, each on an ephemeral port:
//   - the issuer's: TLS without client certificates (discovery, JWKS, the
//     authorization endpoint, and the back-channel endpoints for clients that
//     authenticate with `private_key_jwt`);
//   - the mutual-TLS one (`requestCert: true, rejectUnauthorized: false`):
//     published as the `mtls_endpoint_aliases` of the token, PAR and UserInfo
//     endpoints (RFC 8705 §5). Its certificates are handed to oidc-provider by
//     the mTLS helpers below; whether a chain is trusted is decided there
//     (`certificateAuthorized`), not by the TLS layer.
//
// When both listen, one line goes to stdout:
//   ISSUER https://127.0.0.1:PORT
//
// Interactions (login, consent) are completed at once for the fixed account
// `alice` by the host app's own route, as a deployment's login page would,
// through oidc-provider's public API (`interactionDetails`, `Grant`,
// `interactionFinished`): a test can follow the redirects with a plain HTTP
// client that keeps cookies.

import { readFileSync } from 'node:fs';
import https from 'node:https';
import { generateKeyPairSync, randomBytes } from 'node:crypto';

import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const ACCOUNT = 'alice';

function listen(options) {
  const server = https.createServer(options);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

const tls = { cert: config.server_cert_pem, key: config.server_key_pem };
const main = await listen({ ...tls });
const mtls = await listen({
  ...tls,
  ca: config.ca_pem,
  requestCert: true,
  rejectUnauthorized: false,
});
const origin = (s) => `https://127.0.0.1:${s.address().port}`;
const issuer = origin(main);
const mtlsOrigin = origin(mtls);

// The OP's signing key: ES256 (FAPI 2.0 allows PS256, ES256 and EdDSA).
const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const signingJwk = {
  ...privateKey.export({ format: 'jwk' }),
  kid: 'op-es256',
  alg: 'ES256',
  use: 'sig',
};

// The client certificate of the request, for oidc-provider's mTLS features.
function peerCertificate(ctx) {
  const socket = ctx.socket;
  if (typeof socket?.getPeerX509Certificate !== 'function') return undefined;
  return socket.getPeerX509Certificate() || undefined;
}

const FAPI_ALGS = ['PS256', 'ES256', 'EdDSA'];

const provider = new Provider(issuer, {
  clients: config.clients.map((c) => ({
    redirect_uris: [config.redirect_uri],
    response_types: ['code'],
    grant_types: ['authorization_code'],
    id_token_signed_response_alg: 'ES256',
    ...c,
  })),
  clientAuthMethods: ['private_key_jwt', 'tls_client_auth', 'self_signed_tls_client_auth'],
  jwks: { keys: [signingJwk] },
  enabledJWA: {
    clientAuthSigningAlgValues: FAPI_ALGS,
    idTokenSigningAlgValues: ['ES256'],
    requestObjectSigningAlgValues: FAPI_ALGS,
    dPoPSigningAlgValues: FAPI_ALGS,
  },
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
  scopes: ['openid', 'email', 'profile'],
  async findAccount(_ctx, sub) {
    if (sub !== ACCOUNT) return undefined;
    return {
      accountId: sub,
      async claims() {
        return { sub, email: 'alice@example.test', email_verified: true, name: 'Alice' };
      },
    };
  },
  interactions: {
    url(_ctx, interaction) {
      return `/interaction/${interaction.uid}`;
    },
  },
  discovery: {
    mtls_endpoint_aliases: {
      token_endpoint: `${mtlsOrigin}/token`,
      pushed_authorization_request_endpoint: `${mtlsOrigin}/request`,
      userinfo_endpoint: `${mtlsOrigin}/me`,
    },
  },
  features: {
    devInteractions: { enabled: false },
    fapi: { enabled: true, profile: '2.0' },
    pushedAuthorizationRequests: { enabled: true, requirePushedAuthorizationRequests: true },
    requestObjects: { enabled: true },
    // Nonces required: FAPI 2.0 clients must support the server-provided
    // nonce mechanism of RFC 9449 §8.
    dPoP: { enabled: true, nonceSecret: randomBytes(32), requireNonce: () => true },
    mTLS: {
      enabled: true,
      certificateBoundAccessTokens: true,
      tlsClientAuth: true,
      selfSignedTlsClientAuth: true,
      getCertificate: peerCertificate,
      // Verified against `ca` by the TLS layer of the mutual-TLS listener.
      certificateAuthorized(ctx) {
        return ctx.socket?.authorized === true;
      },
      certificateSubjectMatches(ctx, property, expected) {
        const cert = peerCertificate(ctx);
        if (!cert) return false;
        switch (property) {
          case 'tls_client_auth_subject_dn':
            return cert.subject.split('\n').join(',') === expected;
          default:
            return false;
        }
      },
    },
  },
});

// The interaction route: login, then consent, for the fixed account.
async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session } = details;
  let result;
  if (prompt.name === 'login') {
    result = { login: { accountId: ACCOUNT } };
  } else if (prompt.name === 'consent') {
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const missing = prompt.details;
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    if (missing.missingResourceScopes) {
      for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes)) {
        grant.addResourceScope(indicator, scopes.join(' '));
      }
    }
    result = { consent: { grantId: await grant.save() } };
  } else {
    result = { error: 'access_denied', error_description: `unexpected prompt ${prompt.name}` };
  }
  await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: true });
}

const callback = provider.callback();
function handle(req, res) {
  if (req.url.startsWith('/interaction/')) {
    interaction(req, res).catch((err) => {
      console.error('interaction failed:', err);
      res.statusCode = 500;
      res.end('interaction failed');
    });
    return;
  }
  callback(req, res);
}
main.on('request', handle);
mtls.on('request', handle);

// Errors go to stderr, where the test shows them when it fails.
provider.on('server_error', (_ctx, err) => console.error('server_error:', err));
for (const event of [
  'authorization.error',
  'pushed_authorization_request.error',
  'grant.error',
  'userinfo.error',
]) {
  provider.on(event, (_ctx, err) => {
    const detail = err.error_detail ? ` (${err.error_detail})` : '';
    console.error(`${event}: ${err.error} ${err.error_description ?? err.message}${detail}`);
  });
}

process.stdout.write(`ISSUER ${issuer}\n`);

// The test closes our stdin when it ends (or dies): stop then.
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
