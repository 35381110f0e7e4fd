"""``gc_flow``: ``prefect-mlops gc`` as a Prefect flow, deployed weekly (``deployments/prefect.yaml``).

Removes deleted runs and experiments older than ``older_than`` (and, with the retention
options, finished runs beyond ``keep_last`` per experiment and quarantined batches older
than ``quarantine_older_than``) from the worker's backend (``PREFECT_MLOPS_*`` or
``PREFECT_MLOPS_BLOCK``: a database URI; gc runs on the database, not through a tracking
server). Runs a registered model version needs are kept and listed. The flow run gets a
``gc-report`` table artifact: what was removed (counts and bytes) and what was kept.

    from prefect_mlops.flows.gc import gc_flow
    gc_flow(older_than="30d", keep_last=20, dry_run=True)
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from tracking_plugin.gc import GcReport, collect_garbage, parse_duration

__all__ = ["gc_flow"]


@task(name="collect-garbage", cache_policy=NO_CACHE)
def collect_garbage_task(
    older_than: str, keep_last: int | None, quarantine_older_than: str | None, dry_run: bool
) -> dict[str, Any]:
    report: GcReport = collect_garbage(
        older_than_seconds=parse_duration(older_than),
        keep_last=keep_last,
        quarantine_older_than_seconds=None if quarantine_older_than is None else parse_duration(quarantine_older_than),
        dry_run=dry_run,
    )
    get_run_logger().info(
        "gc%s: %d run(s), %d experiment(s), %d quarantined batch(es), %d bytes; kept %d run(s)",
        " (dry run)" if dry_run else "", report.runs_removed, report.experiments_removed,
        report.quarantine_removed, report.bytes_removed, len(report.kept),
    )
    return report.to_dict()


@flow(name="gc")
def gc_flow(
    older_than: str = "30d",
    keep_last: int | None = None,
    quarantine_older_than: str | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Permanently remove deleted runs and experiments older than ``older_than`` (30d, 12h).

    Returns the report (``GcReport.to_dict()``): counts, bytes, removed items, kept runs.
    """
    summary = collect_garbage_task(older_than, keep_last, quarantine_older_than, dry_run)
    rows = [
        {"what": item["kind"], "id": item["id"], "why": item["why"], "bytes": int(item["bytes"])}
        for item in summary["removed"]
    ] + [{"what": "kept run", "id": k["run_id"], "why": k["reason"], "bytes": 0} for k in summary["kept"]]
    create_table_artifact(
        key="gc-report",
        table=rows or [{"what": "nothing", "id": "", "why": "no garbage", "bytes": 0}],
        description=(
            f"{'Would remove' if dry_run else 'Removed'} {summary['runs_removed']} run(s), "
            f"{summary['experiments_removed']} experiment(s), {summary['quarantine_removed']} quarantined "
            f"batch(es), {summary['bytes_removed']:,} bytes; kept {len(summary['kept'])} run(s)."
        ),
    )
    return summary
