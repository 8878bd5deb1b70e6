"""Summarize a mutmut run (``make mutation``): per-module counts and every surviving mutant as a diff.

Reads ``mutants/**/*.py.meta`` (the verdicts mutmut stores) and the mutated copies next to them, so it
needs nothing but the standard library. A survivor is named by its function and its changed lines, not by
mutmut's running number, so the list in ``scripts/mutation_accepted.txt`` (survivors triaged as equivalent
or not worth a test, one reason each) stays valid while unrelated code moves. Exit status 1 when a
survivor is not in that list: kill it with a test or add it there with its reason.

Usage: python scripts/mutation_report.py [--mutants mutants] [--accepted scripts/mutation_accepted.txt]
"""

from __future__ import annotations

import argparse
import ast
import difflib
import json
import sys
from collections import Counter
from pathlib import Path

#: mutmut's exit codes (mutmut.stats.status_by_exit_code), folded into the columns reported.
STATUS = {1: "killed", 3: "killed", 37: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped"}
STATUS.update({c: "timeout" for c in (36, 24, -24, 152, 255)})
COLUMNS = ("generated", "killed", "survived", "timeout", "no tests", "other")

#: Separates the fields of a line of the accepted list.
SEP = " | "


def _status(code: int | None) -> str:
    if code is None:
        return "not checked"
    return STATUS.get(code, "other")


def _function_sources(mutated: Path) -> dict[str, str]:
    """Source of every function of a mutated module copy, by name (mutants and their originals)."""
    text = mutated.read_text("utf-8")
    tree = ast.parse(text)
    return {
        node.name: ast.get_source_segment(text, node) or ""
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and "__mutmut_" in node.name
    }


def _change(orig: str, mutant: str) -> tuple[int, str, str]:
    """(line of the first change counted from the ``def`` line, removed lines, added lines) of a mutant
    against its original; the lines stripped and joined by " / "."""
    a, b = orig.splitlines(), mutant.splitlines()
    if a and b:  # the def lines differ by the function's name only (but may hold a mutated default)
        b[0] = b[0].replace(_name(b[0]), _name(a[0]), 1)
    first, minus, plus = 0, [], []
    for line in difflib.unified_diff(a, b, lineterm="", n=0):
        if line.startswith(("---", "+++")):
            continue
        if line.startswith("@@"):
            first = first or int(line.split()[1].lstrip("-").split(",")[0])
            continue
        (minus if line.startswith("-") else plus).append(line[1:].strip())
    return first, " / ".join(minus), " / ".join(plus)


def _name(def_line: str) -> str:
    return def_line.split("def ", 1)[1].split("(", 1)[0]


def survivor_key(mutant_name: str, sources: dict[str, str]) -> str:
    """``module.function:line | -removed | +added``: a survivor's name that does not depend on mutmut's
    running number (``line`` counts from the function's ``def``, so it tells apart equal changes)."""
    module, _, local = mutant_name.rpartition(".")
    base = local.rsplit("__mutmut_", 1)[0]
    function = base[1:].replace("ǁ", ".").strip(".") if base.startswith("xǁ") else base[2:]
    line, minus, plus = _change(sources.get(base + "__mutmut_orig", ""), sources.get(local, ""))
    short = function.rpartition(".")[2]
    minus, plus = minus.replace(base + "__mutmut_orig", short), plus.replace(base + "__mutmut_orig", short)
    return f"{module}.{function}:{line}{SEP}-{minus}{SEP}+{plus}"


def read_accepted(path: Path) -> dict[str, str]:
    """Accepted survivors: key -> reason. Lines are ``key | reason`` (the reason after the last " | ",
    so the code in the key may hold one); blank lines and # comments are skipped."""
    accepted: dict[str, str] = {}
    if not path.exists():
        return accepted
    for raw in path.read_text("utf-8").splitlines():
        if not raw.strip() or raw.startswith("#"):
            continue
        key, _, reason = raw.rpartition(SEP)
        if key.count(SEP) < 2 or not reason.strip():
            raise SystemExit(
                f"{path}: a line needs 'module.function:line | -old | +new | reason', got: {raw}"
            )
        accepted[key] = reason.strip()
    return accepted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutants", type=Path, default=Path("mutants"))
    parser.add_argument("--accepted", type=Path, default=Path("scripts/mutation_accepted.txt"))
    parser.add_argument("--json", type=Path, help="also write the counts and survivors here")
    args = parser.parse_args(argv)

    metas = sorted(args.mutants.rglob("*.py.meta"))
    if not metas:
        print(f"no mutmut results under {args.mutants}/ (run `make mutation`)", file=sys.stderr)
        return 2
    accepted = read_accepted(args.accepted)
    rows: dict[str, Counter] = {}
    survivors: list[tuple[str, str]] = []  # (mutmut name, key)
    for meta in metas:
        codes = json.loads(meta.read_text("utf-8"))["exit_code_by_key"]
        if not codes:
            continue
        mutated = meta.with_suffix("")  # x.py.meta -> x.py
        module = mutated.relative_to(args.mutants / "src").with_suffix("").as_posix().replace("/", ".")
        counts = rows.setdefault(module, Counter())
        sources = _function_sources(mutated)
        for name, code in sorted(codes.items()):
            status = _status(code)
            counts["generated"] += 1
            counts[status if status in COLUMNS else "other"] += 1
            if status == "survived":
                survivors.append((name, survivor_key(name, sources)))

    width = max(len(m) for m in rows)
    print(f"\n{'module':<{width}}  " + "  ".join(f"{c:>9}" for c in COLUMNS) + "      score")
    total = Counter()
    for module, counts in sorted(rows.items()):
        total.update(counts)
        print(_row(module, counts, width))
    print(_row("total", total, width))

    untriaged = [(n, k) for n, k in survivors if k not in accepted]
    print(f"\n{len(survivors)} survivors, {len(survivors) - len(untriaged)} triaged in {args.accepted}")
    for name, key in untriaged:
        print(f"  UNTRIAGED {name}\n      {key}")
    stale = set(accepted) - {k for _, k in survivors}
    for key in sorted(stale):
        print(f"  no longer survives (remove from {args.accepted}): {key}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "modules": {m: dict(c) for m, c in sorted(rows.items())},
                    "survivors": [{"mutant": n, "key": k, "reason": accepted.get(k)} for n, k in survivors],
                },
                indent=1,
            )
        )
    if untriaged:
        print(
            "\nEach survivor is a change of the code that no test notices: kill it with a test, or add its "
            f"line to {args.accepted} with the reason it is equivalent (`mutmut show NAME` shows the diff)."
        )
        return 1
    return 0


def _row(name: str, counts: Counter, width: int) -> str:
    decided = counts["killed"] + counts["survived"] + counts["timeout"]
    score = 100.0 * (counts["killed"] + counts["timeout"]) / decided if decided else float("nan")
    return f"{name:<{width}}  " + "  ".join(f"{counts[c]:>9}" for c in COLUMNS) + f"  {score:8.1f} %"


if __name__ == "__main__":
    sys.exit(main())
