"""``python -m pedtools.bench.rtt_alone``: the round-trip figure alone, on the bench's rig.

Starts pedclient and pedserver (emulated PED) as `pedtools.bench.run` does, runs
`pedtools.bench.rtt` and prints its table (``--out FILE`` also writes its JSON).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from pedtools.bench import rtt
from pedtools.bench.run import FULL, QUICK, Rig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pedtools.bench.rtt_alone")
    parser.add_argument("--quick", action="store_true", help="100 ms only, 2 samples")
    parser.add_argument("--out", metavar="FILE", help="also write the JSON figure here")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ped-bench-rtt-"))

    def log(text: str) -> None:
        print(f"[bench] {text}", file=sys.stderr, flush=True)

    try:
        rig = Rig(work, QUICK if args.quick else FULL)
        try:
            result = rtt.measure(work, rig.ped_port, str(rig.client.home / "pedclient.sock"),
                                 str(rig.keyring), quick=args.quick, log=log)
        finally:
            rig.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print("\n".join(rtt.markdown({"rtt": result})))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
