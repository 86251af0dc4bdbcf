"""Run one fuzz target under atheris (coverage-guided, libFuzzer).

    python tests/fuzz/fuzz_run.py TARGET [libFuzzer flags...] [CORPUS_DIR...]
    python tests/fuzz/fuzz_run.py --list

Without a corpus folder the target's seeds go into a temporary one. ``-max_len`` and
``-timeout`` default to the target's own; every other flag is libFuzzer's
(``-runs=N``, ``-max_total_time=S``, ``-rss_limit_mb=M``, ``-artifact_prefix=DIR/``). A crash
(any exception but the target's allowed edgeops errors, or a slow input) exits non-zero
with the input saved as ``crash-<sha1>`` under the artifact prefix.
"""

from __future__ import annotations

import math
import sys
import tempfile
from pathlib import Path


def main(argv: list[str]) -> None:
    import atheris

    if len(argv) < 2 or argv[1].startswith("-"):
        if "--list" in argv:
            from fuzz_targets import TARGETS

            for target in TARGETS.values():
                print(f"{target.name:18} {target.doc}")
            return
        raise SystemExit(__doc__)
    name, flags = argv[1], argv[2:]
    # Everything edgeops imports from here on, including the lazy imports the seeds set off
    # while warming up, is instrumented for coverage; the libraries underneath are not.
    with atheris.instrument_imports(include=["edgeops"]):
        from fuzz_harness import build_one_input
        from fuzz_targets import TARGETS

        if name not in TARGETS:
            raise SystemExit(f"unknown target {name!r}; choose among {', '.join(TARGETS)}")
        target = TARGETS[name]
        one_input = build_one_input(target, alarm=False)
        seeds = target.seeds()
        for seed in seeds:
            one_input(seed)

    if not any(flag.startswith("-max_len=") for flag in flags):
        flags.append(f"-max_len={target.max_len}")
    if not any(flag.startswith("-timeout=") for flag in flags):
        flags.append(f"-timeout={math.ceil(target.time_limit_s * 2)}")
    if not any(not flag.startswith("-") for flag in flags):
        corpus = Path(tempfile.mkdtemp(prefix=f"edgeops-corpus-{name}-"))
        for index, seed in enumerate(seeds):
            (corpus / f"seed-{index}").write_bytes(seed)
        flags.append(str(corpus))
    atheris.Setup([argv[0], *flags], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
