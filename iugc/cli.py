"""Entry point of the `iugc` console script."""
from __future__ import annotations

from pathlib import Path

import click

from iugc.common.options import PORT, count
from iugc.baseline.cli import baseline_group, build_baseline_cmd
from iugc.challenge.cli import challenge_group
from iugc.data_manifest.cli import data_group
from iugc.evaluator.cli import biometry_cmd, evaluate_cmd, rank_cmd
from iugc.sandbox.cli import docker_group, evaluate_image_cmd, kit_group
from iugc.common.signals import interrupt_on_signals
from iugc.leaderboard.cli import serve_cmd, submit_cmd
from iugc.submissions.cli import admin_group, db_group, worker_cmd


class _Cancellable(click.Group):
    """Every command ends promptly on SIGINT and SIGTERM with exit status 130.

    Both signals raise KeyboardInterrupt in the main process, so each command's own
    clean-up runs (temporary files removed, staging folders aborted, worker pools
    terminated). SIGINT is set here, not left to Python's default: a command started in
    the background (`cmd &`, many supervisors) inherits SIGINT ignored, and `kill -INT`
    then killed only its pool workers and left it waiting forever. Click's own handling
    would print "Aborted!" and exit 1."""

    def invoke(self, ctx):
        interrupt_on_signals()
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("cancelled: interrupted by a signal (exit status 130)", err=True)
            ctx.exit(130)


@click.group(cls=_Cancellable, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """IUGC challenge platform: data, evaluation, ranking, the baseline, the sandbox
    and the challenge site for intrapartum ultrasound.

    Start with `make demo` in the checkout (it sets up and serves the site; `iugc demo`
    ranks stand-in teams in the terminal); every command has its own --help.
    """


@main.command("demo")
@click.option("--workdir", type=click.Path(path_type=Path), default=Path(".demo"), show_default=True, help="Where the demo writes its data and results.")
@click.option("--data", type=click.Path(path_type=Path), default=None, help="PNG dataset (images/, masks/); default ../shared/data/psfhs when present, else SYNTHETIC phantoms.")
@click.option("--cases", type=count(658), default=60, show_default=True, help="How many cases to use.")
def demo_cmd(workdir, data, cases):
    """Import data, score degraded copies of the truth standing in for teams, rank them."""
    from iugc.demo import run_demo

    run_demo(workdir, data, cases)


@main.command("demo-site")
@click.option("--instance", type=click.Path(path_type=Path), default=Path(".demo/instance"), show_default=True,
              help="Instance folder: database, storage, data, secret key, credentials (kept between runs).")
@click.option("--cases", type=count(200), default=20, show_default=True, help="Frames per phase (real when ../shared/data/psfhs exists).")
@click.option("--port", type=PORT, default=5000, show_default=True)
@click.option("--no-serve", is_flag=True, help="Prepare everything, print the credentials, do not serve.")
def demo_site_cmd(instance, cases, port, no_serve):
    """The leaderboard site with challenges, data, an organizer, a demo team, the baseline
    and stand-in teams ranked, served at http://127.0.0.1:PORT (what `make demo` runs)."""
    from iugc.site_demo import run_site_demo

    run_site_demo(instance, cases, port, serve=not no_serve)


main.add_command(baseline_group)
main.add_command(challenge_group)
main.add_command(data_group)
main.add_command(evaluate_cmd)
main.add_command(biometry_cmd)
main.add_command(rank_cmd)
main.add_command(evaluate_image_cmd)
docker_group.add_command(build_baseline_cmd)
main.add_command(kit_group)
main.add_command(docker_group)
main.add_command(db_group)
main.add_command(admin_group)
main.add_command(serve_cmd)
main.add_command(worker_cmd)
main.add_command(submit_cmd)

if __name__ == "__main__":
    main()
