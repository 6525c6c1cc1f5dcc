#!/usr/bin/env python3
"""Runs doxygen on a Doxyfile and fails when it printed a warning (docs/api/meson.build)."""
import pathlib
import subprocess
import sys

doxygen, doxyfile, log, stamp = sys.argv[1:5]
pathlib.Path(log).unlink(missing_ok=True)
rc = subprocess.run([doxygen, doxyfile]).returncode
warnings = pathlib.Path(log).read_text(encoding="utf-8").strip() if pathlib.Path(log).exists() else ""
if warnings:
    sys.stderr.write(warnings + "\n")
    sys.stderr.write(f"doxygen: {len(warnings.splitlines())} warning line(s); see {log}\n")
    sys.exit(1)
if rc != 0:
    sys.stderr.write(f"doxygen exited with status {rc}\n")
    sys.exit(rc)
pathlib.Path(stamp).write_text("ok\n", encoding="utf-8")
