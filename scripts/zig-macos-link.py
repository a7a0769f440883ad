#!/usr/bin/env python3
"""The linker scripts/release.sh gives cargo for the macOS targets: zig (through
cargo-zigbuild), with two things it does not do alone:

- each framework linked once: rustc passes `-framework CoreFoundation` once per crate
  that declares it, zig writes a load command for each, and macOS 26's dyld refuses to
  start a binary that names a library twice ("duplicate linked dylib");
- the folder of framework stubs (scripts/apple-frameworks.py) searched.

Environment: STACKMIGRATE_ZIG_TARGET (zig's target, with the minimum macOS version, for
example x86_64-macos.11.0-none) and STACKMIGRATE_APPLE_FRAMEWORKS (the stubs' folder).
"""

import os
import sys


def frameworks_once(args):
    """The arguments with each `-framework NAME` pair kept at its first place only."""
    seen, kept, pending = set(), [], iter(args)
    for arg in pending:
        if arg == "-framework":
            name = next(pending)
            if name not in seen:
                seen.add(name)
                kept += [arg, name]
        else:
            kept.append(arg)
    return kept


def response_file_once(arg):
    """An @response file (one argument a line, rustc's escaping kept) rewritten with each
    framework once; any other argument as it is."""
    if not (arg.startswith("@") and os.path.isfile(arg[1:])):
        return arg
    with open(arg[1:]) as response:
        lines = response.read().split("\n")
    # Beside rustc's own, in the folder rustc removes after the link.
    rewritten = arg[1:] + ".once"
    with open(rewritten, "w") as out:
        out.write("\n".join(frameworks_once(lines)))
    return "@" + rewritten


def main():
    target = os.environ["STACKMIGRATE_ZIG_TARGET"]
    stubs = os.environ["STACKMIGRATE_APPLE_FRAMEWORKS"]
    args = frameworks_once([response_file_once(arg) for arg in sys.argv[1:]])
    os.execvp("cargo-zigbuild",
              ["cargo-zigbuild", "zig", "cc", "--", "-g", "-fno-sanitize=all", "-target", target, f"-F{stubs}", *args])


main()
