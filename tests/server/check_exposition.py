#!/usr/bin/python3
"""Checks a Prometheus text exposition (version 0.0.4) read from a file.

Usage: check_exposition.py FILE

Two checks, both must pass (exit 0; else exit 1 with every problem on stderr):
- it parses with prometheus_client's parser (Debian's python3-prometheus-client);
- a strict line check: every line is a HELP, a TYPE or a sample of a family
  declared before it, names and labels are well formed, no series repeats,
  and fanout's naming conventions hold (fanout_ prefix, counters end in
  _total, histograms measure seconds, no label value looks like a payload).
"""

import math
import re
import sys

from prometheus_client.parser import text_string_to_metric_families

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\["\\n])*"'
SAMPLE = re.compile(
    rf"^(?P<name>{NAME})(?:\{{(?P<labels>{LABEL}(?:,{LABEL})*)?\}})? (?P<value>\S+)(?: -?\d+)?$")
HELP = re.compile(rf"^# HELP (?P<name>{NAME}) .+$")
TYPE = re.compile(rf"^# TYPE (?P<name>{NAME}) (?P<type>counter|gauge|histogram|summary|untyped)$")
LABEL_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count", "")}
# Labels fanout may use; each has a small set of values or names from the configuration.
ALLOWED_LABELS = {"rpc", "code", "tier", "stale", "result", "cause", "reason", "route", "backend",
                  "policy", "outcome", "state", "from", "quantile", "le"}


def family_of(name, types):
    if name in types:
        return name
    for family, kind in types.items():
        for suffix in SUFFIXES.get(kind, ()):
            if suffix and name == family + suffix:
                return family
    return None


def strict_check(text):
    problems = []
    types = {}
    helps = set()
    seen = set()
    if not text.endswith("\n"):
        problems.append("the exposition does not end with a newline")
    for number, line in enumerate(text.splitlines(), 1):
        where = f"line {number}: {line[:120]!r}"
        if line.startswith("# HELP "):
            m = HELP.match(line)
            if not m:
                problems.append(f"{where}: malformed HELP")
            else:
                helps.add(m["name"])
            continue
        if line.startswith("# TYPE "):
            m = TYPE.match(line)
            if not m:
                problems.append(f"{where}: malformed TYPE")
                continue
            name, kind = m["name"], m["type"]
            if name in types:
                problems.append(f"{where}: second TYPE for {name}")
            types[name] = kind
            if not name.startswith("fanout_"):
                problems.append(f"{where}: {name} lacks the fanout_ prefix")
            if kind == "counter" and not name.endswith("_total"):
                problems.append(f"{where}: counter {name} does not end in _total")
            if kind != "counter" and name.endswith("_total"):
                problems.append(f"{where}: {kind} {name} ends in _total")
            if kind == "histogram" and not name.endswith("_seconds"):
                problems.append(f"{where}: histogram {name} is not in seconds")
            for unit in ("_milliseconds", "_ms", "_us", "_microseconds", "_kb", "_mb"):
                if unit in name:
                    problems.append(f"{where}: {name} is not in a base unit")
            continue
        if line.startswith("#") or not line:
            problems.append(f"{where}: unexpected line")
            continue
        m = SAMPLE.match(line)
        if not m:
            problems.append(f"{where}: malformed sample")
            continue
        name = m["name"]
        family = family_of(name, types)
        if family is None:
            problems.append(f"{where}: sample of {name} before its TYPE")
        elif family not in helps:
            problems.append(f"{where}: {family} has no HELP")
        try:
            value = float(m["value"])
        except ValueError:
            problems.append(f"{where}: value is not a number")
            value = 0
        labels = LABEL_PAIR.findall(m["labels"] or "")
        names = [k for k, _ in labels]
        if len(names) != len(set(names)):
            problems.append(f"{where}: repeated label")
        for k, v in labels:
            if k not in ALLOWED_LABELS:
                problems.append(f"{where}: label {k} is not one fanout uses")
            if len(v) > 200:
                problems.append(f"{where}: label {k} holds {len(v)} bytes")
        if family is not None and types[family] == "counter" and (value < 0 or math.isnan(value)):
            problems.append(f"{where}: counter below zero")
        series = (name, tuple(sorted(labels)))
        if series in seen:
            problems.append(f"{where}: repeated series")
        seen.add(series)
    return problems


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1], encoding="utf-8") as f:
        text = f.read()
    problems = strict_check(text)
    try:
        families = list(text_string_to_metric_families(text))
        if not families:
            problems.append("prometheus_client found no metric family")
    except Exception as e:  # the parser raises ValueError and others
        problems.append(f"prometheus_client cannot parse it: {e!r}")
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
