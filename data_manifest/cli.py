"""``iugc data``: import, verify, split and generate datasets."""
from __future__ import annotations

from pathlib import Path

import click

from iugc.common.options import Number, SEED, count


@click.group("data")
def data_group() -> None:
    """Import public releases into the canonical layout, verify, split, make phantoms."""


@data_group.command("import")
@click.option("--layout", type=click.Choice(["psfhs", "png", "iugc2024", "iugc2025"]), required=True,
              help="psfhs: image_mha/ + label_mha/; png: images/ + masks/; iugc2024: videos/ + seg/ + CSV + landmark.json; "
                   "iugc2025: frames + one CSV (Filename, PS1, PS2, FH1; points [x, y] or (x, y)).")
@click.option("--source", required=True, type=click.Path(path_type=Path), help="The release folder.")
@click.option("--dest", required=True, type=click.Path(path_type=Path), help="New (or empty) folder for the canonical dataset.")
@click.option("--name", default=None, help="Dataset name recorded in the manifest (default: the folder name).")
def import_cmd(layout, source, dest, name):
    """Import a release into DEST (images/, masks/, manifest.json).

    Every file is checked first; if any is bad, each problem is printed and nothing is
    written to DEST.
    """
    from iugc.data_manifest.importers import ImportProblems, import_dataset

    try:
        manifest = import_dataset(layout, source, dest, name=name)
    except ImportProblems as exc:
        for problem in exc.problems:
            click.echo(f"error: {problem}", err=True)
        raise click.ClickException(f"{len(exc.problems)} bad file(s) in {source}; nothing was written. Fix them and run again.") from None
    except FileExistsError as exc:
        raise click.ClickException(str(exc)) from None
    labelled = sum(1 for c in manifest.cases if c.mask)
    derived = sum(1 for c in manifest.cases if c.standard_plane_derived)
    pointed = sum(1 for c in manifest.cases if c.aop_landmarks)
    click.echo(f"imported {len(manifest.cases)} cases ({labelled} with masks{f', {pointed} with landmarks' if pointed else ''}) into {dest}"
               + (" -- SYNTHETIC data, marked so in the manifest" if manifest.synthetic else ""))
    if derived:
        standard = sum(1 for c in manifest.cases if c.standard_plane_derived and c.standard_plane)
        click.echo(f"standard-plane labels derived from the masks (IUGC rule: both PS and FH visible) for {derived} cases "
                   f"the release does not label: {standard} standard, {derived - standard} not")


@data_group.command("landmarks")
@click.argument("dataset", type=click.Path(path_type=Path))
def landmarks_cmd(dataset):
    """Derive IUGC 2025's landmarks (PS1, PS2, FH1) from DATASET's masks.

    PS1 and PS2 are the ends of the pubic symphysis' long axis, FH1 the point where the
    line from PS2 touches the fetal head: the points the IUGC 2024 contour construction
    measures the AoP from. They are written into the manifest marked derived; landmarks a
    release annotated are kept. Cases whose masks lack a structure get none.
    """
    from iugc.data_manifest.landmarks import NoMasks, derive_landmarks
    from iugc.data_manifest.manifest import ManifestError

    try:
        outcome = derive_landmarks(dataset)
    except (ManifestError, NoMasks) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{dataset}: landmarks derived from the masks for {len(outcome['derived'])} cases"
               + (f", none for {len(outcome['undefined'])} (a structure missing or no tangent point)" if outcome["undefined"] else "")
               + (f"; {len(outcome['annotated'])} annotated kept" if outcome["annotated"] else ""))


@data_group.command("verify")
@click.argument("dataset", type=click.Path(path_type=Path))
def verify_cmd(dataset):
    """Check checksums, shapes and label values of DATASET against its manifest.

    Prints one line per bad file and exits 1 if there is any.
    """
    from iugc.data_manifest.verify import verify_dataset

    problems = verify_dataset(dataset, progress=True)
    for problem in problems:
        click.echo(f"error: {problem}", err=True)
    if problems:
        raise click.ClickException(f"{len(problems)} problem(s) in {dataset}")
    click.echo(f"{dataset}: OK")


@data_group.command("split")
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--blocks", help='Contiguous id blocks, e.g. "train=03744-04300,validation=04301-04401"; "+" joins several blocks of one split: "train=03744-04205+04302-04343,...".')
@click.option("--by-video", "fractions", help='Whole videos in fractions, e.g. "train=0.8,validation=0.2".')
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the video shuffle.")
@click.option("--allow-unassigned", is_flag=True, help="Write the split even when some cases fall in no block or a split gets no case (they stay 'unassigned').")
def split_cmd(dataset, blocks, fractions, seed, allow_unassigned):
    """Assign train/validation/test splits in DATASET's manifest.

    Never by random frames: neighbouring frames of a clip would leak across the split.
    Generated frames (`iugc data nonstandard`) follow the frame they were made from. A
    split that leaves cases unassigned or a split empty is refused (nothing is written)
    unless --allow-unassigned.
    """
    from iugc.data_manifest.manifest import ManifestError, load_manifest, write_manifest
    from iugc.data_manifest.split import parse_blocks, split_by_blocks, split_by_video

    if bool(blocks) == bool(fractions):
        raise click.UsageError("give exactly one of --blocks or --by-video")
    try:
        manifest = load_manifest(dataset)
        if blocks:
            updated = split_by_blocks(manifest, parse_blocks(blocks), allow_unassigned=allow_unassigned)
        else:
            parsed = {}
            for part in fractions.split(","):
                key, _, value = part.partition("=")
                try:
                    parsed[key.strip()] = float(value)
                except ValueError:
                    raise ValueError(f"bad fraction {part!r}: expected SPLIT=FRACTION, e.g. train=0.8") from None
            updated = split_by_video(manifest, parsed, seed, allow_unassigned=allow_unassigned)
    except (ManifestError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    write_manifest(dataset, updated)
    counts: dict[str, int] = {}
    for case in updated.cases:
        counts[case.split] = counts.get(case.split, 0) + 1
    click.echo(", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))


@data_group.command("nonstandard")
@click.option("--source", required=True, type=click.Path(path_type=Path), help="Dataset of standard frames (from `iugc data import`).")
@click.option("--dest", required=True, type=click.Path(path_type=Path), help="New folder: the source frames plus generated ones.")
@click.option("--per-frame", type=Number(min=0, max=100, min_open=True), default=1.0, show_default=True, help="Generated non-standard frames per source frame.")
@click.option("--seed", type=SEED, default=0, show_default=True)
def nonstandard_cmd(source, dest, per_frame, seed):
    """Add non-standard planes made from real frames (structures pushed out of view,
    acoustic shadowing, probe lift-off), each labelled from what stays visible.

    The rule and the mix of kinds are in data_manifest/nonstandard.py and the README.
    """
    from iugc.data_manifest.manifest import ManifestError
    from iugc.data_manifest.nonstandard import generate_nonstandard_dataset

    try:
        manifest = generate_nonstandard_dataset(source, dest, per_frame=per_frame, seed=seed)
    except (ManifestError, FileExistsError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    standard = sum(1 for c in manifest.cases if c.standard_plane)
    click.echo(f"{len(manifest.cases)} cases in {dest}: {standard} standard, {len(manifest.cases) - standard} not")


@data_group.command("phantom")
@click.option("--dest", required=True, type=click.Path(path_type=Path), help="New folder for the SYNTHETIC data.")
@click.option("--layout", type=click.Choice(["canonical", "iugc2024"]), default="canonical", show_default=True, help="canonical dataset, or raw IUGC 2024 clips (AVI) to test the importer.")
@click.option("--cases", type=count(100_000), default=24, show_default=True, help="Frames (canonical layout).")
@click.option("--videos", type=count(1000), default=2, show_default=True, help="Clips (iugc2024 layout).")
@click.option("--frames", type=count(10_000), default=8, show_default=True, help="Frames per clip (iugc2024 layout).")
@click.option("--size", type=click.IntRange(32, 4096), default=None, help="Frame size (default 256 canonical, 512 iugc2024).")
@click.option("--nonstandard-fraction", type=Number(0, 1), default=0.25, show_default=True)
@click.option("--seed", type=SEED, default=0, show_default=True)
def phantom_cmd(dest, layout, cases, videos, frames, size, nonstandard_fraction, seed):
    """Generate SYNTHETIC ultrasound-like frames with PS/FH masks, for demos and tests."""
    from iugc.data_manifest.phantom import write_phantom_dataset, write_phantom_iugc2024

    try:
        if layout == "canonical":
            write_phantom_dataset(dest, cases, seed=seed, size=size or 256, nonstandard_fraction=nonstandard_fraction)
        else:
            write_phantom_iugc2024(dest, videos, frames, seed=seed, size=size or 512)
    except (FileExistsError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote SYNTHETIC phantom data ({layout}) to {dest}")


@data_group.command("sample")
@click.option("--from", "source", type=click.Path(path_type=Path), default=None, help="Canonical dataset (from `iugc data import`) whose frames may be published; without it, SYNTHETIC phantoms.")
@click.option("--dest", required=True, type=click.Path(path_type=Path), help="New (or empty) folder for the sample.")
@click.option("--cases", "n_cases", type=count(100_000), default=8, show_default=True, help="How many cases.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the phantoms (without --from).")
def sample_cmd(source, dest, n_cases, seed):
    """Public sample cases for teams, the data `iugc kit check --data` runs on.

    Real cases from --from, evenly spread over its ids and in proportion to its
    standard-plane labels, or SYNTHETIC phantoms (marked so in the manifest and on every
    frame) when the release may not be published. Masks and labels are included: teams
    see the scores the platform would give. Nothing is written on failure.
    """
    from iugc.data_manifest.manifest import ManifestError
    from iugc.data_manifest.sample import write_sample

    try:
        manifest = write_sample(dest, n_cases, source=source, seed=seed)
    except (ManifestError, FileExistsError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    standard = sum(1 for c in manifest.cases if c.standard_plane)
    kind = "SYNTHETIC phantom" if manifest.synthetic else "real"
    click.echo(f"{len(manifest.cases)} {kind} cases in {dest} ({standard} standard planes)")
