#!/usr/bin/env bash
# `make mutation`: mutation testing of the core with mutmut (pinned in pyproject's `mutation` extra).
#
# What is mutated and which tests run is [tool.mutmut] in pyproject.toml: metrics, metrics_boundary,
# runtime/tiling, runtime/sliding, gates and runtime/ledger/journal, against their fast in-process tests.
# mutmut first records which of those tests reach each function, then runs every mutant against only
# the tests that reach its function. Each run starts from scratch (mutants/ is removed), so the score
# is that of the code and tests as they are. Then scripts/mutation_report.py prints the per-module
# counts and fails on any survivor that is not triaged in scripts/mutation_accepted.txt.
#
# Environment: PY (the venv's python, default .venv/bin/python), MUTATION_JOBS (parallel mutants,
# default the number of CPUs).
set -euo pipefail

PY=${PY:-.venv/bin/python}
JOBS=${MUTATION_JOBS:-$(nproc)}
"$PY" -c "import mutmut" 2>/dev/null || { echo "no mutmut in $PY: install the mutation extra (make mutation does)" >&2; exit 2; }

rm -rf mutants
log=$(mktemp)
echo "mutmut $("$PY" -m mutmut --version | awk '{print $NF}') with $JOBS workers (a few minutes; progress: $log)"
start=$(date +%s)
if ! "$PY" -m mutmut run --max-children "$JOBS" >"$log" 2>&1; then
    tr '\r' '\n' <"$log" | tail -n 40
    echo "mutmut run failed (full output: $log)" >&2
    exit 1
fi
seconds=$(($(date +%s) - start))
mv "$log" mutants/mutmut-run.log
echo "mutmut run took ${seconds} s ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs); log: mutants/mutmut-run.log"
"$PY" scripts/mutation_report.py --json mutants/mutation-report.json
