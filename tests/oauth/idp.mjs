// A real OpenID provider for the end-to-end tests of /oauth/authorize: oidc-provider with its
// development sign-in pages (any login and password are accepted; the login becomes `sub`),
// one confidential client for the authority, PKCE required.
//
//   node idp.mjs <authority callback URI> <client secret>
//
// Listens on a free loopback port, prints `issuer=http://127.0.0.1:<port>` once it serves,
// and exits when its standard input closes (so it never outlives the test that started it).
import http from 'node:http';
import Provider from 'oidc-provider';

const [callback, secret] = process.argv.slice(2);
if (!callback || !secret) {
  console.error('usage: node idp.mjs <callback URI> <client secret>');
  process.exit(2);
}

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: 'aip-authority',
        client_secret: secret,
        redirect_uris: [callback],
        response_types: ['code'],
        grant_types: ['authorization_code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    async findAccount(ctx, sub) {
      return {
        accountId: sub,
        async claims() {
          return { sub, email: `${sub}@example.test`, email_verified: true };
        },
      };
    },
    claims: { openid: ['sub'], email: ['email', 'email_verified'] },
    features: { devInteractions: { enabled: true } },
    pkce: { required: () => true },
    cookies: { keys: ['aip-tests-only-cookie-key'] },
  });
  server.on('request', provider.callback());
  console.log(`issuer=${issuer}`);
});

process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
