#!/usr/bin/env bash
# Demo identity provider for the deploy/ walk-throughs, with openssl and perl: a local RSA key
# (kept in the ignored .demo-keys/, or DEMO_KEYS_DIR), its JWKS, and RS256 tokens signed with it.
#   scripts/demo-token.sh jwks                 # the public JWKS, for the sidecar's jwks_file
#   scripts/demo-token.sh token [sub] [ttl_s] [--claim name=value]...
#                                              # a token for sub (default refund-agent), 1 h;
#                                              # each --claim sets a string claim (role=viewer)
# Claims match deploy/kubernetes/policy-sidecar.toml: iss https://issuer.mcp-policy.example,
# aud mcp-gateway, role refund-agent unless --claim says otherwise. Never use this key for
# anything but the demo.
set -euo pipefail

ISSUER="https://issuer.mcp-policy.example"
AUDIENCE="mcp-gateway"
KID="mcp-policy-demo-1"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${DEMO_KEYS_DIR:-$root/.demo-keys}"
key="$dir/demo-rsa.pem"

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

# A JSON string of $1 (quotes, backslashes and control characters escaped).
json_string() { perl -e 'my $s = $ARGV[0]; $s =~ s/(["\\])/\\$1/g; $s =~ s/([\x00-\x1f])/sprintf("\\u%04x", ord($1))/ge; print "\"$s\""' -- "$1"; }

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
        shift
        positional=()
        declare -A claims=([client_id]="demo-agent" [scope]="refunds orders:read" [role]="refund-agent")
        order=(client_id scope role)
        while [ $# -gt 0 ]; do
            case "$1" in
                --claim)
                    if [ $# -lt 2 ] || ! [[ "$2" =~ ^[A-Za-z_][A-Za-z0-9_.:-]*= ]]; then
                        echo "demo-token.sh: --claim needs name=value (for example --claim role=viewer)" >&2
                        exit 64
                    fi
                    name="${2%%=*}"
                    case "$name" in
                        iss|aud|sub|iat|nbf|exp)
                            echo "demo-token.sh: --claim cannot set $name (sub is the first argument, the others are fixed)" >&2
                            exit 64 ;;
                    esac
                    [ -n "${claims[$name]+set}" ] || order+=("$name")
                    claims[$name]="${2#*=}"
                    shift 2 ;;
                *) positional+=("$1"); shift ;;
            esac
        done
        sub="${positional[0]:-refund-agent}"
        ttl="${positional[1]:-3600}"
        if ! [[ "$ttl" =~ ^[1-9][0-9]*$ ]]; then
            echo "demo-token.sh: the lifetime must be a positive number of seconds" >&2
            exit 64
        fi
        now="$(date +%s)"
        extra=""
        for name in "${order[@]}"; do
            extra+="$(json_string "$name"):$(json_string "${claims[$name]}"),"
        done
        header="$(printf '{"alg":"RS256","typ":"JWT","kid":"%s"}' "$KID" | b64url)"
        payload="$(printf '{"iss":"%s","aud":"%s","sub":%s,%s"iat":%d,"nbf":%d,"exp":%d}' \
            "$ISSUER" "$AUDIENCE" "$(json_string "$sub")" "$extra" "$now" "$now" "$((now + ttl))" | b64url)"
        signature="$(printf '%s.%s' "$header" "$payload" | openssl dgst -sha256 -sign "$key" -binary | b64url)"
        printf '%s.%s.%s\n' "$header" "$payload" "$signature"
        ;;
    *)
        sed -n '2,10p' "$0" >&2
        exit 64
        ;;
esac
