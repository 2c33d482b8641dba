"""`python -m bench` lists the benchmarks; `python -m bench <name> [options]` runs one.

A benchmark is one module in this package, `bench/<name>.py` (a `-` in the name is a
`_` in the module: `perf-model` is `bench/perf_model.py`). It provides:

- a module docstring, whose first line is its one-line summary in the list;
- `add_arguments(parser)` (optional): its own command-line options (argparse);
- `run(args) -> int`: runs it and returns the exit status — 0 when it produced its
  figure (PASS or MISS: a benchmark measures, it does not assert), 1 when it could not
  (bad responses, a crashed server…). With `--fail-on-miss`, a MISS exits 3.

Nothing else needs registering. Modules whose name starts with `_`, and `common`,
are not benchmarks.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import pkgutil
import sys
from pathlib import Path

from bench.common import EXIT_MISS

PACKAGE_DIR = Path(__file__).resolve().parent
NOT_BENCHMARKS = {"common"}


def available() -> dict[str, Path]:
    """Benchmark name → module file, found by listing the package (nothing is imported)."""
    found = {}
    for module in pkgutil.iter_modules([str(PACKAGE_DIR)]):
        if module.name.startswith("_") or module.name in NOT_BENCHMARKS or module.ispkg:
            continue
        found[module.name.replace("_", "-")] = PACKAGE_DIR / f"{module.name}.py"
    return dict(sorted(found.items()))


def summary(path: Path) -> str:
    """First line of the module's docstring, read without importing it (listing stays cheap and
    works even when one benchmark's dependencies are missing)."""
    try:
        doc = ast.get_docstring(ast.parse(path.read_text()))
    except (OSError, SyntaxError) as exc:
        return f"(unreadable: {exc.__class__.__name__})"
    return doc.strip().splitlines()[0] if doc else "(no description)"


def print_list() -> None:
    benchmarks = available()
    print("usage: python -m bench <name> [options]    (python -m bench <name> --help for its options)\n")
    print("Benchmarks (targets: DESIGN.md, \"Performance targets\"):")
    width = max((len(name) for name in benchmarks), default=0)
    for name, path in benchmarks.items():
        print(f"  {name:<{width}}  {summary(path)}")
    if not benchmarks:
        print("  (none yet)")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in {"-h", "--help", "list"}:
        print_list()
        return 0
    name, rest = argv[0], argv[1:]
    benchmarks = available()
    if name not in benchmarks:
        print(f"python -m bench: no benchmark named {name!r}.\n", file=sys.stderr)
        print_list()
        return 2
    module = importlib.import_module(f"bench.{name.replace('-', '_')}")
    parser = argparse.ArgumentParser(prog=f"python -m bench {name}", description=module.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fail-on-miss", action="store_true",
                        help=f"exit {EXIT_MISS} when the figure misses its target "
                             f"(default: exit 0, a benchmark measures)")
    if hasattr(module, "add_arguments"):
        module.add_arguments(parser)
    args = parser.parse_args(rest)
    return module.run(args)


if __name__ == "__main__":
    sys.exit(main())
