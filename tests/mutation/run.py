"""Mutation testing of the numeric and protocol modules with mutmut, one module at a time.

    python tests/mutation/run.py                 # every module in modules.toml
    python tests/mutation/run.py lineup attack   # some of them
    python tests/mutation/run.py --list          # the modules and their tests
    python tests/mutation/run.py --rescore lineup  # the last run's verdicts, scored again
    python tests/mutation/run.py --resume attack   # an interrupted run, carried on

Each module is mutated in its own staging copy of the checkout under ``.mutation/<module>/``
(``plugins/`` staged as ``facerecon_plugins/``, the name it is imported by, so that its
mutants are the code the tests import), against only the test files that modules.toml names
for it. The survivors of a module are written to ``.mutation/<module>/survivors.txt``
(``mutmut show NAME`` in that folder prints one's diff); the scores of the modules run are
merged into ``scores.json`` and ``scores.md`` beside this file. Survivors judged equivalent
to the original (no test could tell them apart) are listed with the reason in
``equivalent/<module>.toml`` and left out of the score's denominator; ``--rescore`` scores
the verdicts of a module's last run again (after more survivors were judged equivalent,
with no test changed), keeping that run's commit and date; ``--resume`` carries on an
interrupted run in its staging copy (mutmut keeps each verdict as it comes), testing only
the mutants it has no verdict for.
"""

from __future__ import annotations

import argparse
import datetime
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
STAGE = ROOT / ".mutation"
#: what a staging copy holds: (path in the checkout, path in the copy)
COPIED = [
    ("facerecon", "facerecon"),
    ("plugins", "facerecon_plugins"),
    ("tests", "tests"),
    ("experiments", "experiments"),
    ("pyproject.toml", "pyproject.toml"),
]
#: mutmut's exit-code verdicts, by the names its results use
KILLED, SURVIVED = ("killed", "timeout"), ("survived",)


def staged(path: str) -> str:
    """The path of a checkout file inside a staging copy."""
    return "facerecon_plugins/" + path[len("plugins/") :] if path.startswith("plugins/") else path


def stage(name: str, module: dict) -> Path:
    """A fresh staging copy of the checkout, configured for one module."""
    folder = STAGE / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "mutation")
    for source, target in COPIED:
        if (ROOT / source).is_dir():
            shutil.copytree(ROOT / source, folder / target, ignore=ignore)
        else:
            shutil.copy2(ROOT / source, folder / target)
    config = "\n".join(
        [
            "",
            "[tool.mutmut]",
            'source_paths = ["facerecon", "facerecon_plugins"]',
            f"only_mutate = {json.dumps([staged(p) for p in module['source']])}",
            f"pytest_add_cli_args_test_selection = {json.dumps(module['tests'])}",
            # -x: a mutant is killed by its first failing test; no cache across mutants
            'pytest_add_cli_args = ["-x", "-q", "-p", "no:cacheprovider", "-W", "ignore"]',
            # the workers fork from a server that has not run TensorFlow yet
            'process_isolation = "forkserver"',
            "",
        ]
    )
    with open(folder / "pyproject.toml", "a") as f:
        f.write(config)
    return folder


def verdicts(folder: Path) -> dict[str, str]:
    """Each mutant's verdict, as ``mutmut results --all`` prints it."""
    out = subprocess.run(
        ["mutmut", "results", "--all", "true"],
        cwd=folder,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = {}
    for line in out.splitlines():
        key, sep, status = line.strip().rpartition(": ")
        if sep:
            found[key] = status
    return found


def score(found: dict[str, str], equivalent: dict[str, str]) -> dict:
    """Counts and the score: killed over mutants that are neither equivalent nor untested."""
    counts: dict[str, int] = {}
    for status in found.values():
        counts[status] = counts.get(status, 0) + 1
    killed = sum(counts.get(s, 0) for s in KILLED)
    survivors = [k for k, s in found.items() if s in SURVIVED]
    judged = [k for k in survivors if k in equivalent]
    live = [k for k in survivors if k not in equivalent]
    untested = counts.get("no tests", 0)
    denominator = len(found) - len(judged) - counts.get("skipped", 0)
    return {
        "mutants": len(found),
        "killed": killed,
        "survived": len(survivors),
        "equivalent": len(judged),
        "no_tests": untested,
        "counts": counts,
        "score": round(100 * killed / denominator, 1) if denominator else None,
        "score_all": round(100 * killed / len(found), 1) if found else None,
        "live_survivors": live,
    }


def run(
    name: str, module: dict, children: int, equivalent: dict[str, str], resume: bool = False
) -> dict:
    """Mutates one module, runs its tests against every mutant and scores the result; with
    ``resume``, carries on the interrupted run in the module's staging copy."""
    if resume:
        folder = STAGE / name
        if not (folder / "mutants").is_dir():
            sys.exit(f"{name}: no run in {folder} to resume")
    else:
        folder = stage(name, module)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    log = folder / "mutmut.log"
    with open(log, "a" if resume else "w") as out:
        code = subprocess.run(
            ["mutmut", "run", "--max-children", str(children)],
            cwd=folder,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        ).returncode
    if code != 0:
        sys.exit(f"mutmut failed on {name} (exit {code}); see {log}")
    found = verdicts(folder)
    unchecked = sum(status == "not checked" for status in found.values())
    if unchecked:  # an interrupted mutmut exits 0 too
        sys.exit(f"{name}: {unchecked} mutants not checked; carry on with --resume {name}")
    result = score(found, equivalent)
    (folder / "survivors.txt").write_text("".join(k + "\n" for k in result["live_survivors"]))
    return result


def rescore(name: str, equivalent: dict[str, str]) -> dict:
    """The verdicts of a module's last run scored again, with that run's commit and date."""
    folder = STAGE / name
    last = json.loads((HERE / "scores.json").read_text()).get(name)
    if not (folder / "mutants").is_dir() or last is None:
        sys.exit(f"{name}: no finished run in {folder} to score again")
    result = score(verdicts(folder), equivalent)
    (folder / "survivors.txt").write_text("".join(k + "\n" for k in result["live_survivors"]))
    return result | {"commit": last["commit"], "date": last["date"]}


def write(scores: dict, modules: dict) -> None:
    """Merges the scores into scores.json and renders scores.md (runs of other modules may
    finish at the same time: the merge holds a lock)."""
    with open(STAGE / "scores.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _write(scores, modules)


def _write(scores: dict, modules: dict) -> None:
    path = HERE / "scores.json"
    merged = json.loads(path.read_text()) if path.exists() else {}
    for name, result in scores.items():
        merged[name] = {k: v for k, v in result.items() if k != "live_survivors"} | {
            "live_survivors": len(result["live_survivors"])
        }
    merged = {k: merged[k] for k in sorted(merged)}
    path.write_text(json.dumps(merged, indent=2) + "\n")
    rows = [
        "| module | source | mutants | killed | survived | equivalent | no tests | score |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in merged.items():
        source = ", ".join(modules[name]["source"]) if name in modules else "?"
        rows.append(
            f"| {name} | {source} | {r['mutants']} | {r['killed']} | {r['survived']} "
            f"| {r['equivalent']} | {r['no_tests']} | {r['score']}% |"
        )
    note = (
        "# Mutation scores\n\n"
        "Written by `python tests/mutation/run.py` (mutmut). The score is killed mutants "
        "(failing a test or timing out) over all mutants less those judged equivalent in "
        "`equivalent/<module>.toml`; a mutant that no test reaches counts as not killed. "
        "Each module's row is from its last run, dated in `scores.json`.\n\n"
    )
    (HERE / "scores.md").write_text(note + "\n".join(rows) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help="module names from modules.toml (all if none)")
    parser.add_argument("--list", action="store_true", help="list the modules and stop")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--rescore", action="store_true", help="score the last run's verdicts again, no run"
    )
    parser.add_argument("--resume", action="store_true", help="carry on an interrupted run")
    args = parser.parse_args()
    modules = tomllib.loads((HERE / "modules.toml").read_text())
    if args.list:
        for name, m in modules.items():
            print(f"{name}: {', '.join(m['source'])} <- {', '.join(m['tests'])}")
        return
    unknown = sorted(set(args.modules) - set(modules))
    if unknown:
        sys.exit(f"unknown module {', '.join(unknown)}; known: {', '.join(modules)}")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    scores = {}
    for name in args.modules or list(modules):
        judged = HERE / "equivalent" / f"{name}.toml"
        equivalent = tomllib.loads(judged.read_text()) if judged.exists() else {}
        if args.rescore:
            result = rescore(name, equivalent)
        else:
            result = run(name, modules[name], args.max_children, equivalent, args.resume)
            result["commit"] = commit
            result["date"] = datetime.date.today().isoformat()
        scores[name] = result
        print(
            f"{name}: {result['score']}% of {result['mutants']} mutants "
            f"({len(result['live_survivors'])} survivors in .mutation/{name}/survivors.txt)"
        )
        write({name: result}, modules)


if __name__ == "__main__":
    main()
