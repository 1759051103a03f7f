#!/usr/bin/env python3
"""Judge an Autobahn|Testsuite fuzzingclient report (index.json).

A case fails when
  - its `behavior` or `behaviorClose` is anything but OK / INFORMATIONAL
    (so NON-STRICT, UNIMPLEMENTED, FAILED, WRONG CODE, UNCLEAN ... all fail), or
  - its (behavior, behaviorClose) differs from expected-results.json, or it is
    missing from the run or from the expectations (the case set must not drift).

Usage:
  check.py INDEX_JSON EXPECTED_JSON [--config FUZZINGCLIENT_JSON]   check a run
  check.py INDEX_JSON EXPECTED_JSON --write-expected                 record a clean run

With --config, only the expectations for the cases that config ran (its "cases"
patterns, matched as wstest matches them, with fnmatch) are looked for.

Ends with the line `autobahn: N passed, M failed`; exits 1 if M > 0.
"""
import argparse
import fnmatch
import json
import sys

GOOD = {"OK", "INFORMATIONAL"}
# Key of the committed file before the first clean wsrelay run recorded it.
PLACEHOLDER_KEY = "_placeholder"


def case_key(case_id):
    """Sort '1.1.10' after '1.1.9'."""
    return tuple(int(p) if p.isdigit() else p for p in case_id.split("."))


def load_run(path):
    with open(path) as f:
        index = json.load(f)
    if len(index) != 1:
        sys.exit(f"autobahn: {path}: expected exactly one agent, found {sorted(index)}")
    (agent, cases), = index.items()
    return agent, cases


def ran_by(config_path):
    """A predicate: whether the fuzzingclient config at `config_path` runs a case."""
    with open(config_path) as f:
        config = json.load(f)
    cases, excluded = config.get("cases", []), config.get("exclude-cases", [])
    return lambda cid: (any(fnmatch.fnmatch(cid, p) for p in cases)
                        and not any(fnmatch.fnmatch(cid, p) for p in excluded))


def load_expected(path):
    """Returns (expectations, note); note is set when there are none to compare with."""
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}, f"{path} does not exist"
    if PLACEHOLDER_KEY in data:
        return {}, f"{path} is a placeholder: {data[PLACEHOLDER_KEY]}"
    return {cid: tuple(v) for cid, v in data.items()}, None


def write_expected(path, run):
    # One case per line, in case order, so a changed verdict is a one-line diff.
    lines = [
        f"  {json.dumps(cid)}: {json.dumps([r['behavior'], r['behaviorClose']])}"
        for cid, r in sorted(run.items(), key=lambda kv: case_key(kv[0]))
    ]
    with open(path, "w") as f:
        f.write("{\n" + ",\n".join(lines) + "\n}\n")


def describe(r):
    return (f"behavior={r.get('behavior')} behaviorClose={r.get('behaviorClose')} "
            f"remoteCloseCode={r.get('remoteCloseCode')}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("index")
    ap.add_argument("expected")
    ap.add_argument("--config", help="the fuzzingclient config the run used")
    ap.add_argument("--write-expected", action="store_true",
                    help="record this run as the expectations (refused unless every case is OK/INFORMATIONAL)")
    args = ap.parse_args()

    agent, run = load_run(args.index)
    expected = {}
    failed = {}  # case -> list of reasons

    for cid, r in run.items():
        if r.get("behavior") not in GOOD or r.get("behaviorClose") not in GOOD:
            failed.setdefault(cid, []).append(describe(r))

    if args.write_expected:
        if failed:
            for cid in sorted(failed, key=case_key):
                print(f"FAIL {cid}: {'; '.join(failed[cid])}")
            print(f"autobahn: refusing to write {args.expected}: the run has failing cases")
        else:
            write_expected(args.expected, run)
            print(f"autobahn: wrote {len(run)} cases to {args.expected}")
    else:
        expected, note = load_expected(args.expected)
        if args.config:
            ran = ran_by(args.config)
            expected = {cid: v for cid, v in expected.items() if ran(cid)}
        if note:
            # Every case is unexpected; say so once rather than once per case.
            print(f"autobahn: no expectations to compare with: {note}")
            for cid in run:
                failed.setdefault(cid, []).append("no expectation recorded")
        for cid in run.keys() & expected.keys():
            got = (run[cid]["behavior"], run[cid]["behaviorClose"])
            if got != expected[cid]:
                failed.setdefault(cid, []).append(
                    f"expected {list(expected[cid])}, got {list(got)}")
        if not note:
            for cid in run.keys() - expected.keys():
                failed.setdefault(cid, []).append("not in expected-results.json")
        for cid in expected.keys() - run.keys():
            failed.setdefault(cid, []).append("expected but missing from the run")

        for cid in sorted(failed, key=case_key):
            if failed[cid] != ["no expectation recorded"]:
                print(f"FAIL {cid}: {'; '.join(failed[cid])}")

    all_cases = run.keys() | expected.keys()
    n_failed = len(failed)
    print(f"agent {agent}: {len(all_cases)} cases")
    print(f"autobahn: {len(all_cases) - n_failed} passed, {n_failed} failed")
    return 1 if n_failed else 0


if __name__ == "__main__":
    sys.exit(main())
