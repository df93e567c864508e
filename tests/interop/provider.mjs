// A standards-compliant OpenID Provider that is not sfsim, for scopegate's interoperability
// test (tests/interop/test_interop_oidc_provider.c): panva's certified oidc-provider, version
// pinned in package.json, set up the way a real deployment of it would be for a sign-in-only
// client. Run `npm ci` in this folder first.
//
//   node provider.mjs PORT REDIRECT_URI[,REDIRECT_URI...] [CLIENT_SECRET]
//
// PORT 0 picks a free port. The first line on stdout is
// "oidc-provider listening on http://127.0.0.1:PORT"; the issuer is that URL. REDIRECT_URI
// and CLIENT_SECRET may come from $INTEROP_REDIRECT_URIS and $INTEROP_CLIENT_SECRET instead;
// $INTEROP_CLIENT_AUTH=client_secret_post registers the client with that method instead;
// $INTEROP_ISSUER_PATH (like "/realms/acme", or "/") puts a path after the issuer's origin.
//
// One client: client_id "interop-signin", client_secret_basic, authorization_code only, PKCE
// S256 required. Accounts (the dev login form takes any password): "admin" (groups
// ["gateway-admins", "staff"]) and "user" (groups []). Each request to the provider is logged
// on stderr as one line "interop-log {JSON}" (method, path, status, and for the token,
// revocation and userinfo endpoints how the client authenticated), so the test can check
// what the gateway really did. SIGTERM/SIGINT close the server and exit 0.
import { createServer } from 'node:http';
import { generateKeyPairSync, createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import Provider from 'oidc-provider';

const port = Number(process.argv[2] ?? 0);
const redirectUris = (process.argv[3] ?? process.env.INTEROP_REDIRECT_URIS ?? '')
  .split(',').filter(Boolean);
const clientSecret = process.argv[4] ?? process.env.INTEROP_CLIENT_SECRET
  ?? 'interop-signin-secret';
// client_secret_basic (the default), or client_secret_post: then the client is registered
// with it and discovery offers nothing else, to check that the relying party follows discovery.
const clientAuth = process.env.INTEROP_CLIENT_AUTH || 'client_secret_basic';
// The issuer's path: none by default; "/realms/acme" as Keycloak's issuers have one, or "/"
// for an issuer with a trailing slash as Auth0's have.
const issuerPath = process.env.INTEROP_ISSUER_PATH || '';
if (!Number.isInteger(port) || port < 0 || port > 65535 || redirectUris.length === 0
  || !['client_secret_basic', 'client_secret_post'].includes(clientAuth)
  || !/^(\/[A-Za-z0-9._~-]*)*$/.test(issuerPath)) {
  console.error('usage: node provider.mjs PORT REDIRECT_URI[,REDIRECT_URI...] [CLIENT_SECRET]');
  process.exit(2);
}

const accounts = {
  admin: {
    sub: 'admin',
    email: 'admin@interop.example',
    email_verified: true,
    preferred_username: 'admin@interop.example',
    name: 'Interop Admin',
    groups: ['gateway-admins', 'staff'],
  },
  user: {
    sub: 'user',
    email: 'user@interop.example',
    email_verified: true,
    preferred_username: 'user@interop.example',
    name: 'Interop User',
    groups: [],
  },
};

// Signing keys of its own, as a deployment has: an RSA key (RS256, the ID token default) and
// an EC key beside it, so the relying party must pick the right key out of a mixed JWKS.
function jwk(type, options, alg) {
  const { privateKey } = generateKeyPairSync(type, options);
  const key = privateKey.export({ format: 'jwk' });
  const thumb = createHash('sha256').update(JSON.stringify(key.n ?? key.x)).digest('base64url');
  return { ...key, alg, use: 'sig', kid: `${alg.toLowerCase()}-${thumb.slice(0, 12)}` };
}
const jwks = {
  keys: [
    jwk('ec', { namedCurve: 'P-256' }, 'ES256'),
    jwk('rsa', { modulusLength: 2048 }, 'RS256'),
  ],
};

const server = createServer();
server.listen(port, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}${issuerPath}`;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: 'interop-signin',
      client_secret: clientSecret,
      redirect_uris: redirectUris,
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: clientAuth,
    }],
    ...(clientAuth === 'client_secret_post' ? { clientAuthMethods: ['client_secret_post'] } : {}),
    async findAccount(ctx, id) {
      const account = accounts[id];
      if (!account) return undefined;
      return { accountId: id, async claims() { return { ...account }; } };
    },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
      groups: ['groups'],
    },
    scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
    pkce: { methods: ['S256'], required: () => true },
    features: {
      devInteractions: { enabled: true },
      revocation: { enabled: true },
      introspection: { enabled: true },
      userinfo: { enabled: true },
    },
    cookies: { keys: ['scopegate-interop-cookie-key-1', 'scopegate-interop-cookie-key-0'] },
    jwks,
  });
  provider.proxy = false;

  // One log line per request, written when the answer is known.
  provider.use(async (ctx, next) => {
    await next();
    const line = { method: ctx.method, path: ctx.path, status: ctx.status };
    const params = ctx.oidc?.params ?? {};
    if (['/token', '/token/revocation', '/token/introspection', '/me'].includes(ctx.path)) {
      const authz = ctx.get('authorization');
      const body = ctx.oidc?.body ?? {};
      if (authz.startsWith('Basic ')) line.client_auth = 'client_secret_basic';
      else if (authz.startsWith('Bearer ')) line.client_auth = 'bearer';
      else if (body.client_secret) line.client_auth = 'client_secret_post';
      else line.client_auth = 'none';
      if (body.grant_type) line.grant_type = body.grant_type;
      if (ctx.path === '/token') line.code_verifier = Boolean(body.code_verifier);
      if (body.token_type_hint) line.token_type_hint = body.token_type_hint;
    }
    if (ctx.path === '/auth') {
      for (const k of ['client_id', 'response_type', 'scope', 'code_challenge_method', 'prompt']) {
        if (params[k]) line[k] = params[k];
      }
      line.code_challenge = Boolean(params.code_challenge);
      line.nonce = Boolean(params.nonce);
      line.state = Boolean(params.state);
    }
    process.stderr.write(`interop-log ${JSON.stringify(line)}\n`);
  });
  for (const ev of ['grant.error', 'server_error', 'authorization.error', 'userinfo.error',
    'revocation.error', 'introspection.error', 'jwks.error', 'discovery.error']) {
    provider.on(ev, (ctx, err) => {
      process.stderr.write(`interop-log ${JSON.stringify({ event: ev, error: err?.message,
        description: err?.error_description })}\n`);
    });
  }
  provider.on('grant.success', (ctx) => {
    process.stderr.write(`interop-log ${JSON.stringify({ event: 'grant.success',
      client_auth: ctx.oidc.client?.clientAuthMethod, grant_type: ctx.oidc.params?.grant_type,
      pkce: Boolean(ctx.oidc.params?.code_verifier) })}\n`);
  });

  // Mounted under the issuer's path, as behind a reverse proxy (oidc-provider derives its
  // mount path from originalUrl, as under express).
  const mount = issuerPath.replace(/\/$/, '');
  const handle = provider.callback();
  server.on('request', (req, res) => {
    if (mount) {
      if (req.url !== mount && !req.url.startsWith(`${mount}/`) && !req.url.startsWith(`${mount}?`)) {
        res.writeHead(404).end();
        return;
      }
      req.originalUrl = req.url;
      req.url = req.url.slice(mount.length) || '/';
    }
    handle(req, res);
  });
  const { version } = createRequire(import.meta.url)('oidc-provider/package.json');
  process.stderr.write(`interop-log ${JSON.stringify({ event: 'start', issuer,
    oidc_provider: version, node: process.version })}\n`);
  process.stdout.write(`oidc-provider listening on ${issuer}\n`);
});

function stop() {
  server.close(() => process.exit(0));
  server.closeAllConnections?.();
  setTimeout(() => process.exit(0), 3000).unref();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
