"""What a scrape of `serve --workers N` costs after many workers died, with their metrics files left as
prometheus_client leaves them and folded into the archive as the parent does (service.metrics).

One real process records requests of four routes and three statuses and a run into a multiprocess directory
and exits; its files are copied under N made-up pids (a dead worker's files each). Reports the directory's
files and size and the best of three scrapes (service.metrics.every_worker) before and after folding them all,
and one fold's time.

    .venv/bin/python -m bench.metrics_fold --dead 1000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from service import metrics

RECORD = """
from service import metrics
for route in ('/healthz', '/readyz', '/v4/schedules', '/v4/schedules/{schedule_id}'):
    for status in (200, 400, 404):
        metrics.record_request('GET', route, status, 0.002)
metrics.record_run('sent', 0.003)
"""
FIRST_MADE_UP_PID = 10_000_000


def _directory_figures(directory: str) -> tuple[int, float]:
    names = [name for name in os.listdir(directory) if name.endswith(".db")]
    return len(names), sum(os.path.getsize(os.path.join(directory, name)) for name in names) / 2**20


def _best_scrape_ms(directory: str) -> float:
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        metrics.every_worker(directory)
        timings.append(time.perf_counter() - started)
    return min(timings) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dead", type=int, default=1000, help="dead workers' files (default 1000)")
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="bench-metrics-fold-")
    try:
        subprocess.run(
            [sys.executable, "-c", RECORD], env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": directory}, check=True
        )
        originals = os.listdir(directory)
        real_pid = originals[0].rsplit("_", 1)[1][: -len(".db")]
        pids = [int(real_pid)] + [FIRST_MADE_UP_PID + index for index in range(1, args.dead)]
        for pid in pids[1:]:
            for name in originals:
                shutil.copy(os.path.join(directory, name), os.path.join(directory, name.replace(real_pid, str(pid))))
        files_before, mib_before = _directory_figures(directory)
        scrape_before = _best_scrape_ms(directory)
        started = time.perf_counter()
        for pid in pids:
            metrics.fold_dead_process(pid, directory)
        fold_ms = (time.perf_counter() - started) * 1000 / len(pids)
        files_after, mib_after = _directory_figures(directory)
        print(json.dumps({
            "dead_workers": len(pids),
            "unfolded": {"files": files_before, "mib": round(mib_before), "scrape_ms": round(scrape_before, 1)},
            "folded": {"files": files_after, "mib": round(mib_after, 2), "scrape_ms": round(_best_scrape_ms(directory), 1)},
            "one_fold_ms": round(fold_ms, 2),
        }))  # fmt: skip
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
