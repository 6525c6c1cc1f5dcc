#!/usr/bin/env python3
"""Checks that pipeworks-relay's man page and its --help document the same options, each with
the same kind of value, and that the relay's parser accepts every one of them as documented.

usage: check_options.py PIPEWORKS_RELAY MAN_PAGE

Options come from the OPTIONS section of each: in the man page the tag line after each .TP,
in --help the lines indented by four spaces that start with a dash. A tag such as
"--cert FILE, --key FILE" documents two options that take a value; "-q, --quiet" two flags.
The parser is run with one option (and a sample value) and no LISTEN or TARGET: an accepted
option reaches the check for the two endpoints, an unknown one is refused before that.
"""
import re
import subprocess
import sys

OPTION = re.compile(r"^-{1,2}[a-z][a-z-]*$")
# A value that the parser accepts for each documented placeholder.
SAMPLES = {"N": "3", "S": "1.5", "FILE": "/dev/null", "NAME": "localhost", "LIST": "h2",
           "SERVER[:PORT]": "127.0.0.1"}
# Options that print something and exit 0 instead of relaying.
EXITS_AT_ONCE = {"-h", "--help", "--version"}


def parse_tag(tag, where):
    """{option: value placeholder or None} from one tag ("--ca FILE", "-q, --quiet")."""
    found = {}
    for part in tag.split(","):
        words = part.split()
        if not words:
            continue
        if not OPTION.match(words[0]):
            sys.exit(f"{where}: \"{tag}\" does not start with an option")
        found[words[0]] = "".join(words[1:]) or None
    return found


def roff_text(line):
    """A roff line without its macro, font changes, quotes and escapes."""
    line = re.sub(r"^\.(B|I|BR|BI|IR|RB|IB|RI)\s+", "", line)
    line = re.sub(r"\\f[BIRP]", "", line)
    return line.replace("\\-", "-").replace('"', " ")


def man_options(path):
    options = {}
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    section = None
    for i, line in enumerate(lines):
        if line.startswith(".SH "):
            section = line[4:].strip()
        elif section == "OPTIONS" and line == ".TP" and i + 1 < len(lines):
            options.update(parse_tag(roff_text(lines[i + 1]), f"{path}:{i + 2}"))
    return options


def help_options(relay):
    out = run(relay, ["--help"])
    if out.returncode != 0:
        sys.exit(f"{relay} --help exited {out.returncode}: {out.stderr}")
    options = {}
    section = None
    for n, line in enumerate(out.stdout.splitlines(), 1):
        if line and not line[0].isspace():
            section = line.strip()
        elif section == "OPTIONS" and re.match(r"^    -", line):
            options.update(parse_tag(line.strip(), f"--help line {n}"))
    return options


def run(relay, args):
    return subprocess.run([relay, *args], capture_output=True, text=True, timeout=20,
                          stdin=subprocess.DEVNULL)


def check_parser(relay, option, value):
    """The problems the parser shows with `option` as documented, as strings."""
    problems = []
    if option in EXITS_AT_ONCE:
        out = run(relay, [option])
        if out.returncode != 0 or not out.stdout:
            problems.append(f"{option}: exit {out.returncode}, expected 0 and output")
        return problems
    if value is None:
        tries = [[option]]
        # A flag refuses a value.
        wrong = run(relay, [option + "=x"])
        if option.startswith("--") and "takes no value" not in wrong.stderr:
            problems.append(f"{option}=x: expected \"takes no value\", got {wrong.stderr!r}")
    else:
        samples = value.split("|") if "|" in value else [SAMPLES.get(value)]
        if None in samples:
            return [f"{option} {value}: no sample value for {value}"]
        tries = [[option, s] for s in samples] + [[f"{option}={s}"] for s in samples]
        # An option with a value refuses to go without one.
        alone = run(relay, [option])
        if "needs a value" not in alone.stderr:
            problems.append(f"{option} alone: expected \"needs a value\", got {alone.stderr!r}")
    for args in tries:
        out = run(relay, args)
        if out.returncode != 2 or "expected LISTEN and TARGET" not in out.stderr:
            problems.append(f"{' '.join(args)}: not accepted: exit {out.returncode}, "
                            f"{out.stderr.splitlines()[:1]}")
    return problems


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    relay, man = sys.argv[1], sys.argv[2]
    in_man = man_options(man)
    in_help = help_options(relay)
    problems = []
    if len(in_man) < 10 or len(in_help) < 10:
        problems.append(f"too few options found (man page {len(in_man)}, --help {len(in_help)})")
    for option in sorted(set(in_man) | set(in_help)):
        if option not in in_help:
            problems.append(f"{option}: in the man page, not in --help")
        elif option not in in_man:
            problems.append(f"{option}: in --help, not in the man page")
        elif in_man[option] != in_help[option]:
            problems.append(f"{option}: value {in_man[option]!r} in the man page, "
                            f"{in_help[option]!r} in --help")
        else:
            problems += check_parser(relay, option, in_man[option])
    # The parser does refuse what is not documented, or the checks above would prove nothing.
    unknown = run(relay, ["--no-such-option"])
    if unknown.returncode != 2 or "unknown option" not in unknown.stderr:
        problems.append(f"--no-such-option: expected \"unknown option\", got {unknown.stderr!r}")
    for p in problems:
        print("FAIL", p)
    print(f"{len(in_man)} options in the man page, {len(in_help)} in --help, "
          f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
