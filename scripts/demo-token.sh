#!/usr/bin/env bash
# Demo identity provider for the deploy/ walk-throughs, with openssl and perl: a local RSA key
# (kept in the ignored .demo-keys/), its JWKS, and RS256 tokens signed with it.
#   scripts/demo-token.sh jwks                 # the public JWKS, for the sidecar's jwks_file
#   scripts/demo-token.sh token [sub] [ttl_s]  # a token for sub (default refund-agent), 1 h
# Claims match deploy/kubernetes/policy-sidecar.toml: iss https://issuer.mcp-policy.example,
# aud mcp-gateway. Never use this key for anything but the demo.
set -euo pipefail

ISSUER="https://issuer.mcp-policy.example"
AUDIENCE="mcp-gateway"
KID="mcp-policy-demo-1"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="$root/.demo-keys"
key="$dir/demo-rsa.pem"

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

if [ ! -f "$key" ]; then
    mkdir -p "$dir"
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$key" 2>/dev/null
    chmod 600 "$key"
fi

case "${1:-}" in
    jwks)
        n="$(openssl rsa -in "$key" -noout -modulus | cut -d= -f2 | perl -ne 'chomp; print pack("H*", $_)' | b64url)"
        printf '{"keys":[{"kty":"RSA","use":"sig","alg":"RS256","kid":"%s","n":"%s","e":"AQAB"}]}\n' \
            "$KID" "$n"
        ;;
    token)
        sub="${2:-refund-agent}"
        ttl="${3:-3600}"
        now="$(date +%s)"
        header="$(printf '{"alg":"RS256","typ":"JWT","kid":"%s"}' "$KID" | b64url)"
        payload="$(printf '{"iss":"%s","aud":"%s","sub":"%s","client_id":"demo-agent","scope":"refunds orders:read","role":"refund-agent","iat":%d,"nbf":%d,"exp":%d}' \
            "$ISSUER" "$AUDIENCE" "$sub" "$now" "$now" "$((now + ttl))" | b64url)"
        signature="$(printf '%s.%s' "$header" "$payload" | openssl dgst -sha256 -sign "$key" -binary | b64url)"
        printf '%s.%s.%s\n' "$header" "$payload" "$signature"
        ;;
    *)
        sed -n '2,7p' "$0" >&2
        exit 64
        ;;
esac
