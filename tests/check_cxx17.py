#!/usr/bin/env python3
"""Checks that a C++17 program including any public header of pipeworks fails with pipeworks' own #error,
as its first error, and that the same program compiles as C++20.

usage: check_cxx17.py INCLUDE_DIR... -- COMPILER [ARGS...]
"""
import os
import subprocess
import sys
import tempfile

MESSAGE = "pipeworks needs C++20"


def compile_one(compiler, includes, std, source):
    args = [*compiler, f"-std={std}", "-fsyntax-only", *[f"-I{d}" for d in includes], source]
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def main():
    if "--" not in sys.argv:
        sys.exit(__doc__)
    cut = sys.argv.index("--")
    includes, compiler = sys.argv[1:cut], sys.argv[cut + 1:]
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        headers = sorted({f"pipeworks/{name}" for d in includes
                          if os.path.isdir(os.path.join(d, "pipeworks"))
                          for name in os.listdir(os.path.join(d, "pipeworks"))
                          if name.endswith(".hpp")})
        if len(headers) < 10:
            problems.append(f"only {len(headers)} public headers found in {includes}")
        for header in headers:
            source = os.path.join(tmp, "consumer.cpp")
            with open(source, "w", encoding="utf-8") as f:
                f.write(f"#include <{header}>\nint main() {{ return 0; }}\n")
            old = compile_one(compiler, includes, "c++17", source)
            errors = [line for line in old.stderr.splitlines() if "error:" in line]
            if old.returncode == 0:
                problems.append(f"{header}: compiled as C++17")
            elif not errors or MESSAGE not in errors[0]:
                problems.append(f"{header}: the first C++17 error is not ours: {errors[:1]}")
            print(f"{header}: C++17 refused ({errors[0].strip() if errors else 'no error'})")
        # The control, once for all of them: the same headers are fine as C++20.
        source = os.path.join(tmp, "all.cpp")
        with open(source, "w", encoding="utf-8") as f:
            f.write("".join(f"#include <{h}>\n" for h in headers) + "int main() { return 0; }\n")
        new = compile_one(compiler, includes, "c++20", source)
        if new.returncode != 0:
            problems.append(f"C++20: the headers do not compile: {new.stderr[:500]}")
        print(f"all {len(headers)} headers as C++20: {'ok' if new.returncode == 0 else 'FAILED'}")
    for p in problems:
        print("FAIL", p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
