"""``kdiff eval``: the options (the everyday ones first, the rest under "Research options"), the
table and the summary lines; :mod:`kdiff_cli.apps.evaluate` does the work."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from kdiff_cli.cli_common import RESEARCH, one_line, user_errors


@user_errors
def eval_cmd(
    dataset: Annotated[str, typer.Argument(help="Dataset: bsd100, levin, folder (see `kdiff plugins --kind dataset`).")],
    data_dir: Annotated[
        Optional[Path], typer.Option("--data-dir", "-d", help="Dataset folder (bsd100: <id>.jpg files, the BSDS300/500 layout or the .tgz).")
    ] = None,
    download: Annotated[bool, typer.Option("--download", help="bsd100: fetch BSDS300-images.tgz into the user cache.")] = False,
    method: Annotated[
        Optional[str], typer.Option("--method", "-m", help="Comma-separated methods, each NAME[:key=value...] (default: blurred,oracle,kernel-diff).")
    ] = None,
    method_opt: Annotated[
        Optional[list[str]], typer.Option("--method-opt", help="KEY=VALUE (or METHOD.KEY=VALUE) for the methods, e.g. steps=25 (repeatable).", rich_help_panel=RESEARCH)
    ] = None,
    metric: Annotated[
        Optional[str], typer.Option("--metric", help="Comma-separated metrics, each NAME[:key=value...] (default: the dataset's, e.g. psnr,ssim,lpips,fid,mnc; psnr and ssim also aligned).")
    ] = None,
    metric_opt: Annotated[
        Optional[list[str]], typer.Option("--metric-opt", help="KEY=VALUE (or METRIC.KEY=VALUE) for the metrics, e.g. max_shift=5, border=16: the aligned scores' shift search and cropped border (default 10, 15; repeatable).", rich_help_panel=RESEARCH)
    ] = None,
    metric_weights: Annotated[
        Optional[Path], typer.Option("--metric-weights", help="Folder with LPIPS/FID backbone weights (default: the torch hub cache).", rich_help_panel=RESEARCH)
    ] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", "-n", help="Only the first N images.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Results folder; re-running skips finished images (default: eval-DATASET).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="bsd100: protocol seed (default 2023).", rich_help_panel=RESEARCH)] = None,
    generator: Annotated[Optional[str], typer.Option(help="bsd100: kernel generator (default borodenko).", rich_help_panel=RESEARCH)] = None,
    sigma: Annotated[Optional[float], typer.Option(help="bsd100: Gaussian noise std (default 0.01).", rich_help_panel=RESEARCH)] = None,
    crop: Annotated[Optional[int], typer.Option(help="bsd100: crop side (default 256).", rich_help_panel=RESEARCH)] = None,
    kernel_size: Annotated[Optional[int], typer.Option("--kernel-size", help="bsd100: kernel side (default 64).", rich_help_panel=RESEARCH)] = None,
    export: Annotated[
        Optional[Path], typer.Option("--export", help="Write the blurred set, kernels and ground truth here (alone unless --method is given).", rich_help_panel=RESEARCH)
    ] = None,
    grid: Annotated[int, typer.Option(help="Rows of grid.png (the paper's Figure 4); 0 for none.", rich_help_panel=RESEARCH)] = 4,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    overwrite: Annotated[bool, typer.Option("--overwrite/--no-overwrite", help="--export: replace files that exist there (default: refuse). The --out folder is kdiff's own resume cache.", rich_help_panel=RESEARCH)] = False,
    shard: Annotated[
        Optional[str], typer.Option("--shard", help="I/N: run only every N-th image from the I-th (job arrays; same --out for all shards); the shard that completes the set writes metrics.json. Under torchrun the ranks split the images by themselves.", metavar="I/N", rich_help_panel=RESEARCH)
    ] = None,
):
    """Evaluate blind deblurring methods on a benchmark: table, metrics.json/.csv, grid.png."""
    from kdiff_cli.apps import datasets, evaluate
    from kdiff_cli import progress
    from kdiff_cli import shard as sharding

    part = sharding.resolve(shard)
    try:
        options = {"data_dir": data_dir, "download": download, "seed": seed, "generator": generator, "sigma": sigma,
                   "crop": crop, "kernel_size": kernel_size}
        if export is not None and part.main:
            p = evaluate.plan(dataset, options, limit)
            datasets.export(p.refs, export, p.protocol, overwrite=overwrite)
            typer.echo(f"exported {len(p.refs)} items of {dataset} to {export}", err=True)
            if method is None:
                return
        report = evaluate.run(
            dataset, options, methods=method, method_opts=method_opt or [], metrics=metric, metric_opts=metric_opt or [], metric_weights=metric_weights,
            limit=limit, out=out or Path(f"eval-{dataset}"), device=device, grid=grid, bar=progress.task_bar,
            on_error=lambda item, message: typer.echo(f"error: item {item} skipped: {one_line(message)}", err=True),
            shard=part,
        )
        if not report.merged:
            typer.echo(f"shard {report.shard}: {report.computed} runs, {report.cached} from cache; results in {report.out}", err=True)
            if report.pending:
                typer.echo(f"{len(report.pending)} images are not finished by the other shards yet; the shard that finishes "
                           "last writes metrics.json (or re-run without --shard to complete and merge)", err=True)
            if report.failed:
                raise typer.Exit(1)
            return
        if report.shard:
            typer.echo(f"shard {report.shard}: merged the results of all shards", err=True)
        progress.print_table(f"kdiff eval {dataset} ({len(report.ids)} images)", report.table_header(), report.table_rows())
        for note in report.notes():
            typer.echo(note, err=True)
        typer.echo(f"{report.computed} runs, {report.cached} from cache; results in {report.out}", err=True)
        if report.failed:
            typer.echo(f"{len(report.failed)} of {len(report.failed) + len(report.ids)} items failed (listed in metrics.json)", err=True)
            raise typer.Exit(1)
    finally:
        part.close()
