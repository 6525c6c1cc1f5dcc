#!/usr/bin/env python3
"""Compiles every ```cpp block of the given markdown files against a pipeworks build.

Usage: .ci/check_snippets.py [--build DIR] FILE.md...

Each block is one translation unit: a block with main() is compiled and linked, one without is
compiled only. A block directly preceded by the line `<!-- snippet: run -->` is also run (60 s
bound) and must exit 0; `<!-- snippet: skip -->` skips a block (say why next to it). The
compiler is $CXX (default c++), with -std=c++20 and warnings as errors; include and link flags
are the source tree's include/ and the library built in DIR/lib (found through an rpath).
"""
import argparse
import os
import pathlib
import re
import shlex
import subprocess
import sys
import tempfile

FENCE = re.compile(r"^```cpp\s*$")
MARK = re.compile(r"^<!--\s*snippet:\s*(run|skip)\b.*-->\s*$")


def snippets(path):
    """Yields (line number, mark, code) for each ```cpp block of a markdown file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        if FENCE.match(lines[i]):
            start = i + 1
            mark = None
            j = i - 1
            while j >= 0 and not lines[j].strip():
                j -= 1
            if j >= 0:
                m = MARK.match(lines[j].strip())
                mark = m.group(1) if m else None
            end = start
            while end < len(lines) and not lines[end].startswith("```"):
                end += 1
            if end == len(lines):
                raise SystemExit(f"{path}:{start}: unterminated ```cpp block")
            yield start, mark, "\n".join(lines[start:end]) + "\n"
            i = end + 1
        else:
            i += 1


def build_flags(build):
    """The flags a program needs to use the library of a build tree: the source tree's headers,
    the build tree's generated ones (version.hpp) and the built shared library (found through an
    rpath, so nothing has to be installed)."""
    libs = sorted(build.glob("lib/libpipeworks.so*")) + sorted(build.glob("lib/libpipeworks.a"))
    if not libs:
        raise SystemExit(f"{build}/lib: no libpipeworks (is {build} a configured build?)")
    root = pathlib.Path(__file__).resolve().parent.parent
    libdir = libs[0].parent.resolve()
    return [f"-I{root / 'include'}", f"-I{build.resolve() / 'include'}", f"-L{libdir}",
            "-lpipeworks", f"-Wl,-rpath,{libdir}", "-pthread"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default="build", help="a configured pipeworks build directory")
    ap.add_argument("files", nargs="+", type=pathlib.Path)
    args = ap.parse_args()
    build = pathlib.Path(args.build)
    subprocess.run(["meson", "compile", "-C", str(build), "pipeworks"], check=True,
                   stdout=subprocess.DEVNULL)
    flags = build_flags(build)
    cxx = shlex.split(os.environ.get("CXX", "c++"))
    failed = total = 0
    with tempfile.TemporaryDirectory(prefix="pipeworks-snippets.") as tmp:
        for md in args.files:
            for line, mark, code in snippets(md):
                name = f"{md}:{line}"
                if mark == "skip":
                    print(f"skip {name}")
                    continue
                total += 1
                src = pathlib.Path(tmp) / f"snippet{total}.cpp"
                src.write_text(code, encoding="utf-8")
                has_main = re.search(r"\bint\s+main\s*\(", code) is not None
                exe = pathlib.Path(tmp) / f"snippet{total}"
                cmd = cxx + ["-std=c++20", "-Wall", "-Wextra", "-Wpedantic", "-Werror", str(src)]
                cmd += ["-o", str(exe)] + flags if has_main else ["-c", "-o", str(exe) + ".o"]
                cflags = [f for f in flags if f.startswith("-I")]
                if not has_main:
                    cmd += cflags
                r = subprocess.run(cmd, capture_output=True, text=True)
                if r.returncode != 0:
                    failed += 1
                    print(f"FAIL {name}: does not compile\n{r.stderr}", file=sys.stderr)
                    continue
                if mark == "run":
                    if not has_main:
                        failed += 1
                        print(f"FAIL {name}: marked to run but has no main()", file=sys.stderr)
                        continue
                    try:
                        run = subprocess.run([str(exe)], stdin=subprocess.DEVNULL,
                                             capture_output=True, text=True, timeout=60)
                    except subprocess.TimeoutExpired:
                        failed += 1
                        print(f"FAIL {name}: still running after 60 s", file=sys.stderr)
                        continue
                    if run.returncode != 0:
                        failed += 1
                        print(f"FAIL {name}: exit status {run.returncode}\n{run.stdout}{run.stderr}",
                              file=sys.stderr)
                        continue
                    last = (run.stdout.strip().splitlines() or [""])[-1]
                    print(f"ok   {name} (ran, exit 0: {last})")
                else:
                    print(f"ok   {name} ({'linked' if has_main else 'compiled'})")
    print(f"snippets: {total - failed} passed, {failed} failed")
    if total == 0:
        print("snippets: no ```cpp block found", file=sys.stderr)
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
