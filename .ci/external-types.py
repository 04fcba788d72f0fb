#!/usr/bin/env python3
"""Lists the foreign crates whose types appear in oidc-dtr's public API
(from rustdoc's JSON output) and fails on any that is not allowed: 0.x
crates may change under us, so they must not be part of our signatures.

Usage: RUSTC_BOOTSTRAP=1 cargo rustdoc -p oidc-dtr --lib -- -Z unstable-options \
         --output-format json && python3 .ci/external-types.py target/doc/oidc_dtr.json
"""
import json
import sys

# Stable (1.x or std) crates a public signature may name, and the one 0.x
# exception on purpose: tower-service's `Service`, which the ping receiver
# implements so that axum and hyper-util can mount it.
ALLOWED = {
    "std", "core", "alloc",
    "http", "bytes", "url", "serde", "serde_core", "serde_json", "http_body", "tokio",
    "tower_service",
}

doc = json.load(open(sys.argv[1]))
index, paths = doc["index"], doc["paths"]
crates = {int(k): v["name"] for k, v in doc["external_crates"].items()}
found = {}


def walk(node, where):
    if isinstance(node, dict):
        candidates = [node.get("resolved_path"), node.get("path")]
        if isinstance(node.get("path"), str) and "id" in node:
            candidates.append(node)  # a trait path (format 57: {path, id, args})
        for p in candidates:
            if isinstance(p, dict) and "id" in p:
                info = paths.get(str(p["id"]))
                if info and info["crate_id"] != 0:
                    name = crates.get(info["crate_id"], "?")
                    found.setdefault(name, set()).add(where + " -> " + "::".join(info["path"]))
        for v in node.values():
            walk(v, where)
    elif isinstance(node, list):
        for v in node:
            walk(v, where)


for item_id, item in index.items():
    if item.get("crate_id") != 0:
        continue
    inner = item.get("inner", {})
    impl = inner.get("impl") if isinstance(inner, dict) else None
    if impl is not None:
        # Our own trait impls (not synthetic auto traits, not blanket impls
        # from other crates) are public API.
        if impl.get("is_synthetic") or impl.get("blanket_impl") is not None:
            continue
    elif item.get("visibility") != "public":
        continue
    # Trait impls: the implemented trait is part of the API too.
    walk(inner, item.get("name") or "impl")

bad = {c: s for c, s in found.items() if c not in ALLOWED}
for c in sorted(found):
    print(f"{'NOT ALLOWED' if c in bad else 'ok'}: {c} ({len(found[c])} uses)")
if bad:
    for c, uses in bad.items():
        for u in sorted(uses)[:10]:
            print(f"  {c}: {u}")
    sys.exit(1)
