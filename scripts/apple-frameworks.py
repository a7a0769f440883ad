#!/usr/bin/env python3
"""Text stubs (.tbd) of the Apple system frameworks the plugin links against, so its
macOS binaries link on Linux, where no Apple SDK can be installed.

A stub names a framework's install path and the symbols the binary takes from it; the
linker records the path in the binary (macOS loads the real framework at start) and
binds the symbols there. Which frameworks and symbols are needed is read from a failed
link's output (zig's "unable to find system framework" and "undefined symbol" errors),
so the stubs follow the dependencies without a list kept by hand:

    apple-frameworks.py DIR LINK_LOG   # adds what LINK_LOG asks for to the stubs in DIR;
                                       # exits 1 when it asks for nothing they can give

A symbol goes to the framework its name's prefix belongs to; one that fits none is
refused, naming it, rather than guessed.
"""

import re
import sys
from pathlib import Path

# Each framework's symbol prefixes (a C name gets a leading underscore in Mach-O).
PREFIXES = {
    "Security": ("_Sec", "_kSec", "_SSL", "_kSSL"),
    "CoreFoundation": ("_CF", "_kCF", "___CF", "___kCF"),
    "SystemConfiguration": ("_SC", "_kSC"),
}
TARGETS = "[ x86_64-macos, arm64-macos ]"


def stub_path(root: Path, framework: str) -> Path:
    return root / f"{framework}.framework" / f"{framework}.tbd"


def read_symbols(stub: Path) -> set:
    if not stub.exists():
        return set()
    match = re.search(r"symbols:\s*\[([^\]]*)\]", stub.read_text())
    return {s.strip() for s in match.group(1).split(",") if s.strip()} if match else set()


def write_stub(root: Path, framework: str, symbols: set):
    stub = stub_path(root, framework)
    stub.parent.mkdir(parents=True, exist_ok=True)
    exports = ""
    if symbols:
        listed = ", ".join(sorted(symbols))
        exports = f"exports:\n  - targets: {TARGETS}\n    symbols: [ {listed} ]\n"
    stub.write_text(
        "--- !tapi-tbd\n"
        "tbd-version: 4\n"
        f"targets: {TARGETS}\n"
        f"install-name: '/System/Library/Frameworks/{framework}.framework/Versions/A/{framework}'\n"
        "current-version: 1\n"
        "compatibility-version: 1\n"
        f"{exports}...\n"
    )


def framework_of(symbol: str) -> str:
    for framework, prefixes in PREFIXES.items():
        if symbol.startswith(prefixes):
            return framework
    sys.exit(f"apple-frameworks.py: the link needs {symbol}, which no known framework's prefix covers; "
             f"add its framework to PREFIXES in {__file__}")


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: apple-frameworks.py DIR LINK_LOG")
    root, log = Path(sys.argv[1]), Path(sys.argv[2]).read_text(errors="replace")
    wanted = {name: set() for name in re.findall(r'unable to find (?:system )?framework [\'"](\w+)[\'"]', log)}
    for symbol in re.findall(r"undefined symbol: (_\w+)", log):
        wanted.setdefault(framework_of(symbol), set()).add(symbol)
    added = 0
    for framework, symbols in wanted.items():
        if framework not in PREFIXES:
            sys.exit(f"apple-frameworks.py: the link needs the {framework} framework, which has no prefixes "
                     f"in {__file__}")
        stub = stub_path(root, framework)
        have = read_symbols(stub)
        if stub.exists() and symbols <= have:
            continue
        write_stub(root, framework, have | symbols)
        added += 1
    if not added:
        sys.exit(1)
    print(f"apple-frameworks.py: stubs in {root} for {', '.join(sorted(wanted))}")


main()
