"""Cost of verifying one Ed25519 signature in each backend, in the same run: the agent's
path through the system libcrypto (``edgeops.trust.ed25519_libcrypto``, with its strict key
and ``S`` checks), the pure-Python verifier (``edgeops.trust.ed25519_verify``), the fleet's
path (``edgeops.trust.keys.verify_signature`` with ``cryptography`` loaded) and bare
``cryptography``; and what each costs a fresh interpreter to import.

Prints one JSON object: milliseconds per signature (median of ``--rounds`` rounds of
``--count`` verifications, over a 1 KiB message, about the size of a directive; the pure
Python verifier runs a tenth as many), the cost of the strict decoding of ``R`` that the
libcrypto path leaves to OpenSSL, and the import time and RSS added by ``edgeops.trust``
with and without ``cryptography`` and with the libcrypto binding loaded, each in a fresh
subprocess.

    python benchmarks/trust_verify.py [--count 200] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from edgeops.trust import ed25519_libcrypto, ed25519_verify, keys

IMPORT_PROBE = """
import json, time
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
before = rss()
start = time.perf_counter()
{statement}
elapsed = time.perf_counter() - start
print(json.dumps({{"import_ms": elapsed * 1000, "rss_added_mb": (rss() - before) / 2**20}}))
"""

# What the agent's verification layer costs a fresh interpreter: edgeops.trust as it is now
# (pure-Python verify), and with cryptography's Ed25519 loaded as well, as before decision 0006.
IMPORTS = {
    "edgeops.trust": "import edgeops.trust",
    "edgeops.trust + cryptography": (
        "import edgeops.trust\n"
        "from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey"
    ),
    # ssl is on the agent anyway; loading the binding maps no new library.
    "edgeops.trust + ssl": "import edgeops.trust, ssl",
    "edgeops.trust + ssl + libcrypto binding": (
        "import edgeops.trust, ssl\n"
        "from edgeops.trust import ed25519_libcrypto\n"
        "assert ed25519_libcrypto.load() is not None"
    ),
}


def per_signature_ms(verify: Callable[[], object], count: int, rounds: int) -> float:
    timings = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(count):
            verify()
        timings.append((time.perf_counter() - start) / count)
    return statistics.median(timings) * 1000


def import_cost(statement: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE.format(statement=statement)],
        check=True,
        capture_output=True,
        text=True,
    )
    values: dict[str, float] = json.loads(out.stdout)
    return {key: round(value, 2) for key, value in values.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    private = Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    message = bytes(range(256)) * 4
    signature = private.sign(message)
    reference = Ed25519PublicKey.from_public_bytes(public)
    binding = ed25519_libcrypto.load()
    if binding is None:
        raise SystemExit("the system libcrypto did not load: nothing to compare")
    r_encoding = signature[:32]

    def timed(verify: Callable[[], object], count: int = args.count) -> float:
        return round(per_signature_ms(verify, count, args.rounds), 4)

    result = {
        "benchmark": "trust_verify",
        "message_bytes": len(message),
        "libcrypto": binding.path,
        "libcrypto_ms": timed(lambda: ed25519_libcrypto.verify(public, signature, message)),
        "pure_python_ms": timed(
            lambda: ed25519_verify.verify(public, signature, message), max(1, args.count // 10)
        ),
        "cryptography_path_ms": timed(lambda: keys.verify_signature(public, signature, message)),
        "cryptography_ms": timed(lambda: reference.verify(signature, message)),
        "r_decoding_ms": timed(lambda: ed25519_verify._decode_point(r_encoding)),
        "import": {name: import_cost(statement) for name, statement in IMPORTS.items()},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
