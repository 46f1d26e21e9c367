#!/usr/bin/env python3
"""Regenerates contract.json: the operations Countersign calls, from Mattermost's published
OpenAPI file (mattermost-developer-documentation, site/static/mattermost-openapi-v4.yaml), with
$refs resolved and descriptions dropped. The tests read only contract.json.

    python3 extract_contract.py PATH/TO/mattermost-openapi-v4.yaml SOURCE-DESCRIPTION > contract.json
"""
import json
import sys

import yaml

OPERATIONS = [
    ("/api/v4/posts", "post"), ("/api/v4/posts/{post_id}/patch", "put"),
    ("/api/v4/actions/dialogs/open", "post"), ("/api/v4/reactions", "post"),
    ("/api/v4/channels/{channel_id}/members", "get"), ("/api/v4/config/client", "get"),
    ("/api/v4/license/client", "get"), ("/api/v4/users/{user_id}", "get"),
    ("/api/v4/system/ping", "get"), ("/api/v4/channels/{channel_id}", "get"),
    ("/api/v4/teams/name/{team_name}/channels/name/{channel_name}", "get"),
    ("/api/v4/posts/{post_id}", "get"), ("/api/v4/users/usernames", "post"),
    ("/api/v4/users/username/{username}", "get"),
]


def main():
    spec = yaml.safe_load(open(sys.argv[1]))
    schemas = spec["components"]["schemas"]

    def resolve(x, depth=0):
        if isinstance(x, dict):
            if "$ref" in x:
                name = x["$ref"].split("/")[-1]
                return resolve(schemas[name], depth + 1) if depth < 4 else {"type": "object"}
            return {k: resolve(v, depth) for k, v in x.items()
                    if k not in ("description", "example", "x-codegen-request-body-name")}
        if isinstance(x, list):
            return [resolve(v, depth) for v in x]
        return x

    out = {"source": sys.argv[2], "operations": []}
    for path, method in OPERATIONS:
        op = spec["paths"][path][method]
        body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
        out["operations"].append({
            "operationId": op.get("operationId"), "method": method.upper(), "path": path,
            "parameters": [{"name": p["name"], "in": p["in"], "required": bool(p.get("required")),
                            "schema": resolve(p.get("schema", {}))} for p in op.get("parameters", [])],
            "requestBody": resolve(body) if body else None,
            "requestBodyRequired": bool(op.get("requestBody", {}).get("required")),
            "responses": sorted(op["responses"].keys()),
        })
    json.dump(out, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
