// The identity provider of the interop run: oauth2-mock-server on a port the OS picks.
//
// Prints `idp listening on <issuer URL>` once it serves. Tokens come from its ordinary token
// endpoint (`POST /token`, client_credentials grant, `aud=mcp-gateway`); the
// beforeTokenSigning hook adds what the policies look at: `sub` and `client_id` from the
// request's `client_id`, and a `role` claim when the request carries `role`.
import { OAuth2Server } from "oauth2-mock-server";

const server = new OAuth2Server();
await server.issuer.keys.generate("RS256");

server.service.on("beforeTokenSigning", (token, req) => {
  const body = req.body ?? {};
  if (typeof body.client_id === "string") {
    token.payload.sub = body.client_id;
    token.payload.client_id = body.client_id;
  }
  if (typeof body.role === "string") {
    token.payload.role = body.role;
  }
});

await server.start(0, "127.0.0.1");
// The library names the issuer `http://localhost:<port>`; use the address it is bound to so no
// resolver decides between ::1 and 127.0.0.1.
server.issuer.url = `http://127.0.0.1:${server.address().port}`;
console.log(`idp listening on ${server.issuer.url}`);

const stop = async () => {
  await server.stop();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
