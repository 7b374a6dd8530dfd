"""Checks every policy-sidecar.toml found in rendered Kubernetes YAML (or given as .toml files):
it must parse as TOML and use only the sections and keys of SPEC section 9."""

import sys
import tomllib

import yaml

KEYS = {
    "listen": {"address"},
    "upstream": {"url"},
    "admin": {"address"},
    "gateway": {"id", "target"},
    "policy": {"engine", "mode", "paths", "schema", "validation", "deny_style", "exception_level"},
    "auth": {"mode", "issuer", "discovery_url", "jwks_url", "jwks_file", "audiences",
             "allowed_clients", "allowed_scopes"},
}


def check(name, text):
    config = tomllib.loads(text)
    errors = []
    for section, table in config.items():
        if section not in KEYS:
            errors.append(f"unknown section [{section}]")
            continue
        errors += [f"unknown key {section}.{key}" for key in table if key not in KEYS[section]]
    missing = {"listen", "upstream", "gateway", "policy", "auth"} - config.keys()
    errors += [f"missing section [{section}]" for section in sorted(missing)]
    if config.get("auth", {}).get("mode") == "jwt":
        sources = [k for k in ("discovery_url", "jwks_url", "jwks_file") if k in config["auth"]]
        if len(sources) != 1:
            errors.append(f"auth needs exactly one key source, found {sources}")
    for error in errors:
        print(f"{name}: {error}", file=sys.stderr)
    return not errors


def main():
    ok, found = True, 0
    for path in sys.argv[1:]:
        with open(path, encoding="utf-8") as f:
            if path.endswith(".toml"):
                found += 1
                ok &= check(path, f.read())
                continue
            for doc in yaml.safe_load_all(f):
                if doc and doc.get("kind") == "ConfigMap":
                    text = doc.get("data", {}).get("policy-sidecar.toml")
                    if text is not None:
                        found += 1
                        ok &= check(f"{path}: ConfigMap {doc['metadata']['name']}", text)
    if not found:
        print("no policy-sidecar.toml found", file=sys.stderr)
        ok = False
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
