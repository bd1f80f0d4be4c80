#!/usr/bin/python3
"""Checks deploy/Dockerfile as far as a machine without a Docker engine can.

Usage: check_dockerfile.py [--self-test] DOCKERFILE SOURCE_DIR BINARY...

- two stages on Debian 12: a build stage that runs `make build`, and a
  runtime stage that the binaries are copied into;
- the runtime stage's apt-get install list is exactly the set of Debian
  packages that own the shared libraries `ldd` lists for BINARY... (found
  with `dpkg -S`): nothing missing, nothing extra;
- every file the Dockerfile copies from the build context exists, and every
  binary copied from the build stage is one of BINARY... ;
- it runs as a numeric non-root user, with fanoutd as the entrypoint and
  its configuration from /etc/fanout/config.yaml.
--self-test also breaks each rule in a copy of the Dockerfile and checks
that the rule catches it.
Exit 0 when it holds, 1 with the problems on stderr.
"""

import os
import re
import shlex
import subprocess
import sys
import tempfile


def instructions(path):
    """(INSTRUCTION, arguments) in order, continuation lines joined."""
    out = []
    pending = ""
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue  # Docker skips these inside a continued instruction too
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            full = (pending + line).strip()
            pending = ""
            word, _, rest = full.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stages(instrs):
    result = []
    for word, rest in instrs:
        if word == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            result.append({"image": parts[0], "name": name, "instrs": []})
        elif result:
            result[-1]["instrs"].append((word, rest))
    return result


def candidates(path):
    """`path` and its merged-/usr spellings, as dpkg may have recorded it."""
    out = [path, os.path.realpath(path)]
    for p in list(out):
        if p.startswith("/usr/lib/"):
            out.append(p[len("/usr"):])
        elif p.startswith("/lib/"):
            out.append("/usr" + p)
    return out


def owners(paths):
    """{path: Debian package} for the paths dpkg knows, in one dpkg call."""
    r = subprocess.run(["dpkg", "-S"] + sorted(set(paths)), capture_output=True, text=True)
    found = {}
    for line in r.stdout.splitlines():
        pkgs, _, path = line.partition(": ")
        found[path.strip()] = pkgs.split(",")[0].split(":")[0].strip()
    return found


def needed_packages(binaries, problems):
    libs = {}
    for binary in binaries:
        r = subprocess.run(["ldd", binary], capture_output=True, text=True)
        if r.returncode != 0:
            problems.append(f"ldd {binary} failed: {r.stderr.strip()}")
            continue
        for line in r.stdout.splitlines():
            m = re.search(r"=>\s*(\S+)\s*\(", line) or re.match(r"\s*(/\S+)\s*\(", line)
            if m:
                libs.setdefault(m[1], binary)
            elif "not found" in line:
                problems.append(f"{binary}: {line.strip()}")
    known = owners(p for lib in libs for p in candidates(lib))
    needed = {}
    for lib, binary in libs.items():
        pkg = next((known[p] for p in candidates(lib) if p in known), None)
        if pkg is None:
            problems.append(f"{binary}: no Debian package ships {lib}")
        else:
            needed.setdefault(pkg, set()).add(os.path.basename(lib))
    return needed


def apt_packages(run_args):
    """Packages named by `apt-get install` in a RUN line."""
    packages = []
    for command in re.split(r"&&|;", run_args):
        words = shlex.split(command)
        if len(words) >= 2 and words[0] == "apt-get" and "install" in words:
            packages += [w for w in words[words.index("install") + 1:] if not w.startswith("-")]
    return packages


def check(dockerfile, source_dir, binaries):
    problems = []
    st = stages(instructions(dockerfile))
    if len(st) < 2:
        problems.append(f"{len(st)} stage(s): want a build stage and a runtime stage")
        return problems
    build, runtime = st[0], st[-1]
    for s in (build, runtime):
        if not re.fullmatch(r"debian:12(-slim)?|debian:bookworm(-slim)?", s["image"]):
            problems.append(f"stage FROM {s['image']} is not Debian 12")
    if not build["name"]:
        problems.append("the build stage has no name (FROM ... AS build)")
    if not any(w == "RUN" and re.search(r"\bmake build\b", a) for w, a in build["instrs"]):
        problems.append("the build stage does not run `make build`")

    installed = []
    for w, a in runtime["instrs"]:
        if w == "RUN":
            installed += apt_packages(a)
    needed = needed_packages(binaries, problems)
    for pkg in sorted(set(needed) - set(installed)):
        problems.append(f"runtime stage lacks {pkg} (for {', '.join(sorted(needed[pkg]))})")
    for pkg in sorted(set(installed) - set(needed)):
        problems.append(f"runtime stage installs {pkg}, which no binary loads")

    copied = []
    for w, a in runtime["instrs"]:
        if w != "COPY":
            continue
        words = a.split()
        from_build = any(x.startswith("--from=") for x in words)
        paths = [x for x in words if not x.startswith("--")]
        for src in paths[:-1]:
            if from_build:
                copied.append(os.path.basename(src))
            elif not os.path.exists(os.path.join(source_dir, src)):
                problems.append(f"COPY {src}: no such file in the build context")
    names = {os.path.basename(b) for b in binaries}
    if "fanoutd" not in copied:
        problems.append("fanoutd is not copied from the build stage")
    for c in copied:
        if c not in names:
            problems.append(f"{c} is copied from the build stage but was not checked with ldd")

    users = [a for w, a in runtime["instrs"] if w == "USER"]
    if not users:
        problems.append("no USER: the image runs as root")
    else:
        uid = users[-1].split(":")[0]
        if not uid.isdigit() or int(uid) == 0:
            problems.append(f"USER {users[-1]} is not a numeric non-root uid "
                            "(Kubernetes checks runAsNonRoot by number)")
    entry = [a for w, a in runtime["instrs"] if w == "ENTRYPOINT"]
    cmd = [a for w, a in runtime["instrs"] if w == "CMD"]
    if not entry or "fanoutd" not in entry[-1]:
        problems.append("the entrypoint is not fanoutd")
    if "/etc/fanout/config.yaml" not in " ".join(entry[-1:] + cmd[-1:]):
        problems.append("fanoutd is not told --config=/etc/fanout/config.yaml")
    return problems


# Each turns the Dockerfile's text into one that breaks a rule.
MUTATIONS = {
    "a library package missing": lambda t: re.sub(r"\n\s*libcivetweb1 \\", "", t),
    "an extra package": lambda t: t.replace("zlib1g \\", "zlib1g curl \\"),
    "runs as root": lambda t: re.sub(r"\nUSER .*", "\nUSER root", t),
    "no USER": lambda t: re.sub(r"\nUSER .*", "", t),
    "another entrypoint": lambda t: re.sub(r"\nENTRYPOINT .*", '\nENTRYPOINT ["/bin/sh"]', t),
    "no config path": lambda t: re.sub(r"\nCMD .*", "", t),
    "no make build": lambda t: t.replace("make build", "cmake --build build"),
    "one stage": lambda t: t[t.index("FROM debian:12-slim"):],
    "not Debian 12": lambda t: t.replace("FROM debian:12-slim", "FROM debian:11-slim"),
    "a missing context file": lambda t: t.replace("deploy/config/container.yaml",
                                                  "deploy/config/nope.yaml"),
}


def self_test(dockerfile, source_dir, binaries):
    with open(dockerfile, encoding="utf-8") as f:
        text = f.read()
    problems = []
    for name, mutate in MUTATIONS.items():
        broken = mutate(text)
        if broken == text:
            problems.append(f"self-test: cannot apply: {name}")
            continue
        with tempfile.NamedTemporaryFile("w", suffix=".Dockerfile") as f:
            f.write(broken)
            f.flush()
            if not check(f.name, source_dir, binaries):
                problems.append(f"self-test: the check misses: {name}")
    return problems


def main():
    args = sys.argv[1:]
    selftest = bool(args) and args[0] == "--self-test"
    if selftest:
        args = args[1:]
    if len(args) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    dockerfile, source_dir, binaries = args[0], args[1], args[2:]
    problems = check(dockerfile, source_dir, binaries)
    if selftest and not problems:
        problems = self_test(dockerfile, source_dir, binaries)
    return report(problems)


def report(problems):
    for p in problems:
        print(p, file=sys.stderr)
    print("ok" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
