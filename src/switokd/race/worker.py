"""One worker process of a race: ``python -m switokd.race.worker --storage URL --study NAME``.

``switokd race --workers N`` starts N of these on one machine; on another machine, start them by hand (or with
``switokd race ... --workers N`` and the same ``--storage``) to join the same study.
"""
from __future__ import annotations

import argparse
import sys

from .engine import Study, WorkerOptions, open_storage, work


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m switokd.race.worker", description=__doc__)
    p.add_argument("--storage", required=True, help="the race's Optuna storage: a journal file or a database URL")
    p.add_argument("--study", default="race", help="the study's name (default: race)")
    p.add_argument("--lease", type=float, default=120.0, help="seconds without a heartbeat before a segment is taken up again")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--kind", default="race", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    study = Study(open_storage(args.storage), args.study)
    work(study, WorkerOptions(lease_s=args.lease), lambda m: print(m.replace("race:", f"{args.kind}:", 1),
                                                                     file=sys.stderr, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
