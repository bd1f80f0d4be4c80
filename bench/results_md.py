"""Rewrites one suite's section of bench/RESULTS.md.

A section lies between "<!-- BEGIN name -->" and "<!-- END name -->". The
generated text replaces it, except for a line starting "<!-- name notes:"
and what follows it up to the END marker: hand-written notes, kept as they are.

As a command: python3 bench/results_md.py RESULTS.md NAME < generated.md
"""
import sys


def rewrite_section(path, name, generated):
    begin, end = "<!-- BEGIN %s -->" % name, "<!-- END %s -->" % name
    text = open(path).read()
    b, e = text.index(begin), text.index(end)
    section = text[b + len(begin):e]
    kept = ""
    at = section.find("<!-- %s notes:" % name)
    if at >= 0:
        kept = "\n" + section[at:].strip("\n") + "\n"
    new = begin + "\n" + generated.rstrip("\n") + "\n" + kept
    open(path, "w").write(text[:b] + new + text[e:])


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: results_md.py RESULTS.md NAME < generated.md")
    rewrite_section(sys.argv[1], sys.argv[2], sys.stdin.read())
