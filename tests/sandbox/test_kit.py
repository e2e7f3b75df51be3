"""The team starter kit (issue 20): `iugc kit new` writes a project, `iugc kit check` says
what the platform's sanity check would, and `iugc docker export-base` saves the base.

The kit-check tests need a Docker engine (skipped with the reason without one;
IUGC_REQUIRE_DOCKER=1 makes that a failure) and build each image once per session: the
two templates on iugc/base:latest with no network, and each typical mistake as a small
layer on the built template.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from iugc.challenge.definition import load_challenge
from iugc.data_manifest.landmarks import derive_landmarks
from iugc.data_manifest.importers import import_dataset
from iugc.data_manifest.manifest import load_manifest
from iugc.data_manifest.nonstandard import generate_nonstandard_dataset
from iugc.data_manifest.sample import write_sample
from iugc.sandbox.container_runner import _Workspace, input_cases
from iugc.sandbox.exceptions import KitError
from iugc.sandbox.kit import KIT_FILE, TEMPLATE_FILES, check, format_report, new_kit, read_kit
from iugc.sandbox.outputs import collect_outputs
from tests.conftest import ROOT
from tests.docker_support import require_engine

pytestmark = pytest.mark.xdist_group("docker")  # with the other engine tests: they count the runner's containers
BASE = "iugc/base:latest"
CHALLENGES = ("psfhs2023", "iugc2024", "iugc2025")


def iugc(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "iugc", *map(str, args)], capture_output=True, text=True, cwd=ROOT, timeout=timeout)


# --- kit new (no engine needed) ---------------------------------------------------------

def test_new_kit_refuses_a_non_empty_folder_and_writes_nothing(tmp_path):
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "notes.txt").write_text("keep me")
    run = iugc("kit", "new", dest, "--challenge", "iugc2024")
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [f"Error: {dest} exists and is not empty; give `iugc kit new` a new folder"]
    assert [p.name for p in dest.iterdir()] == ["notes.txt"] and (dest / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no staging folder left beside it


def test_new_kit_refuses_an_unknown_challenge_and_writes_nothing(tmp_path):
    run = iugc("kit", "new", tmp_path / "kit", "--challenge", "iugc2031")
    assert run.returncode == 1
    (line,) = run.stderr.strip().splitlines()
    assert "unknown challenge 'iugc2031'" in line and "iugc2025" in line and "psfhs2023" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("base, offline", [(BASE, True), ("python:3.11-slim", False)])
def test_new_kit_renders_the_template_for_the_challenge_and_base(tmp_path, base, offline):
    kit = new_kit(tmp_path / "My Kit", "iugc2024", base=base)
    dest = tmp_path / "My Kit"
    assert {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()} == {*TEMPLATE_FILES, KIT_FILE}
    for name in TEMPLATE_FILES:
        assert "{{" not in (dest / name).read_text(), name
    dockerfile = (dest / "Dockerfile").read_text()
    assert f"\nFROM {base}\n" in dockerfile
    assert "\nUSER 10001:10001\n" in dockerfile and 'ENTRYPOINT ["python3", "/opt/team/predict.py"]' in dockerfile
    assert ("--no-index" in dockerfile) is offline  # offline builds have no index to reach
    assert read_kit(dest) == kit
    assert kit.image == "team/my-kit:latest" and kit.build_network == ("none" if offline else "default")
    assert 'TASKS = "classification,segmentation,biometry".split(",")' in (dest / "predict.py").read_text()


def test_a_challenge_file_travels_with_the_kit(tmp_path):
    definition = yaml.safe_load((ROOT / "challenge" / "definitions" / "psfhs2023.yaml").read_text())
    definition["name"] = "my-challenge"
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(definition))
    kit = new_kit(tmp_path / "kit", str(tmp_path / "mine.yaml"), base=BASE)
    assert kit.challenge == "challenge.yaml"
    assert load_challenge(tmp_path / "kit" / "challenge.yaml").name == "my-challenge"
    text = (tmp_path / "kit" / "predict.py").read_text()
    assert 'CHALLENGE = "my-challenge"' in text and 'TASKS = "segmentation,biometry".split(",")' in text


def test_kit_check_needs_a_challenge_for_an_image(tmp_path):
    with pytest.raises(KitError, match="say which challenge with --challenge"):
        check("team/some-image:1")
    with pytest.raises(KitError, match="not a kit folder"):
        check(str(tmp_path))


@pytest.fixture(scope="module")
def real_sample(psfhs_dir, tmp_path_factory):
    """Eight public sample cases from real frames: the release sample's 40 frames and
    non-standard planes made from them, so both plane labels are there."""
    root = tmp_path_factory.mktemp("real")
    import_dataset("psfhs", psfhs_dir / "release_sample", root / "release", progress=False)
    generate_nonstandard_dataset(root / "release", root / "with-ns", per_frame=0.25, seed=0, progress=False)
    write_sample(root / "sample", 8, source=root / "with-ns")
    derive_landmarks(root / "sample", progress=False)  # for the landmark challenge (iugc2025)
    labels = [c.standard_plane for c in load_manifest(root / "sample").cases]
    assert True in labels and False in labels
    return root / "sample"


@pytest.mark.parametrize("challenge", CHALLENGES)
def test_the_template_writes_what_the_contract_asks_without_docker(challenge, real_sample, tmp_path, monkeypatch):
    """The rendered predict.py, run as a plain process on the platform's own /input
    layout, writes outputs the platform's output checks accept."""
    monkeypatch.setenv("IUGC_WORK_DIR", str(tmp_path / "work"))
    new_kit(tmp_path / "kit", challenge, base=BASE)
    workspace = _Workspace("kit-local")
    cases = input_cases(real_sample)
    workspace.prepare_input(cases, challenge, load_challenge(challenge).tasks)
    workspace.output.mkdir()
    env = {**os.environ, "IUGC_INPUT": str(workspace.input), "IUGC_OUTPUT": str(workspace.output)}
    run = subprocess.run([sys.executable, str(tmp_path / "kit" / "predict.py")], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == f"predicted {len(cases)} of {len(cases)} cases"
    classifies = challenge == "iugc2024"
    collected = collect_outputs(workspace.output, {c.case_id: c.shape for c in cases}, tmp_path / "clean",
                                tasks=load_challenge(challenge).tasks)
    assert collected.errors == {} and collected.warnings == [] and collected.valid_predictions == len(cases)
    assert (workspace.output / "predictions.json").exists() is classifies
    assert (workspace.output / "landmarks.json").exists() is (challenge == "iugc2025")


# --- kit check against the real engine --------------------------------------------------

@pytest.fixture(scope="session")
def engine():
    return require_engine()


@pytest.fixture(scope="session")
def kits(engine, tmp_path_factory):
    """One kit per challenge on iugc/base:latest, built once (offline, --network none)."""
    from iugc.sandbox.images import build_base
    from iugc.sandbox.kit import build_kit

    build_base(progress=False, engine=engine)  # reused when the recipe's image is there
    root = tmp_path_factory.mktemp("kits")
    made = {}
    for challenge in CHALLENGES:
        folder = root / f"iugc-test-kit-{challenge}"
        kit = new_kit(folder, challenge, base=BASE)
        build_kit(engine, folder, kit)
        made[challenge] = (folder, kit.image)
    return made


@pytest.fixture(autouse=True)
def own_work_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("IUGC_WORK_DIR", str(tmp_path / "work"))


@pytest.mark.parametrize("challenge", CHALLENGES)
def test_the_template_passes_kit_check_and_evaluate_image_on_real_frames(challenge, kits, real_sample, tmp_path):
    folder, image = kits[challenge]
    run = iugc("kit", "check", folder, "--data", real_sample, "--out", tmp_path / "kit.json")
    assert run.returncode == 0, run.stdout + run.stderr
    n = 6 if challenge == "iugc2025" else 8  # two of the eight are non-standard frames, with no landmarks to find
    assert f"ACCEPTED: the sanity check would pass (all {n} cases have valid outputs)" in run.stdout
    assert f"checked {image} on {n} real cases from {real_sample} ({challenge}, phase sanity-check)" in run.stdout
    assert "of the phase's 300 s limit" in run.stdout and "of the phase's 8192 MB limit" in run.stdout
    kit_result = json.loads((tmp_path / "kit.json").read_text())
    assert kit_result["status"] == "succeeded" and kit_result["aggregates"]["n_errors"] == 0
    if challenge == "iugc2025":  # the stand-in's fixed points are near the anatomy, not on it
        assert 0 < kit_result["aggregates"]["mre"] < 200 and kit_result["score"] is not None
    else:
        assert 0 < kit_result["aggregates"]["dice"] < 1  # the stand-in overlaps the anatomy, imperfectly
    if challenge == "iugc2024":
        assert kit_result["score"] is not None  # both plane labels: AUC and the score are defined
    # The platform's own command on the same image and cases says the same.
    run = iugc("evaluate-image", "--image", image, "--data", real_sample, "--challenge", challenge,
               "--phase", "sanity-check", "--out", tmp_path / "platform.json", "--quiet")
    assert run.returncode == 0, run.stderr
    platform = json.loads((tmp_path / "platform.json").read_text())
    assert platform["status"] == "succeeded"
    assert platform["aggregates"] == kit_result["aggregates"] and platform["score"] == kit_result["score"]
    assert platform["image_digest"] == kit_result["image_digest"]


def test_a_kit_that_does_not_build_is_refused_with_the_build_log(kits, tmp_path):
    new_kit(tmp_path / "kit", "psfhs2023", base=BASE)
    with open(tmp_path / "kit" / "requirements.txt", "a") as fh:
        fh.write("onnxruntime==1.23.2\n")  # not in the base and no wheel given
    run = iugc("kit", "check", tmp_path / "kit")
    assert run.returncode == 1
    first = run.stderr.splitlines()[0]
    assert first.startswith("Error: the kit does not build (it builds with no network: every package not in the base must be a wheel in wheels/)")
    assert "No matching distribution found for onnxruntime==1.23.2" in run.stderr


def _with_main_prefix(code: str):
    """A predict.py whose main() first runs ``code`` (a mistake at start-up)."""
    return "\n_template_main = main\n\n\ndef main():\n" + "".join(f"    {line}\n" for line in code.splitlines()) + "    return _template_main()\n"


def _with_predict(body: str):
    """A predict.py whose predict() wraps the template's (a mistake in the model's answer)."""
    return ("\n_template_predict = predict\n\n\ndef predict(frame):\n    mask, p = _template_predict(frame)\n"
            + "".join(f"    {line}\n" for line in body.splitlines()))


# name -> (Dockerfile line or predict.py change, expected platform failure code, words of the platform's message)
MISTAKES = {
    "root": ("USER root", "image_rejected", "image rejected: it runs as root (USER root)"),
    "wrong_size": (_with_predict("return mask[::2, ::2], p"), "invalid_outputs", "shape (128, 128) differs from the input frame's (256, 256)"),
    "labels_7_8": (_with_predict("return np.choose(mask, [0, 7, 8]).astype(np.uint8), p"), "invalid_outputs", "labels [7, 8] outside the schema 0/1/2"),
    "no_predictions_json": (("if \"classification\" in TASKS:", "if False:"), None, "missing p_standard_plane"),
    "probability_above_1": (_with_predict("return mask, 1.5"), None, "p_standard_plane '1.5' is not a finite number in [0, 1]"),
    "writes_outside_output": (_with_main_prefix("Path('/opt/team/predict.log').write_text('started')"), "exit_code",
                              "Read-only file system: '/opt/team/predict.log'"),
    "too_slow": (_with_predict("import time\ntime.sleep(60)\nreturn mask, p"), "time_limit", "time limit exceeded: still running after 4 s"),
    "needs_network": (_with_main_prefix("import urllib.request\nurllib.request.urlopen('https://huggingface.co/team/model/resolve/main/model.onnx', timeout=10)"),
                      "exit_code", "Temporary failure in name resolution"),
}


@pytest.fixture(scope="session")
def mistake_images(engine, kits, tmp_path_factory):
    """Each mistake as a small layer on the built iugc2024 template, built on first use."""
    from iugc.sandbox.docker_engine import build_image

    folder, template = kits["iugc2024"]
    built = {}

    def get(name: str) -> str:
        if name not in built:
            change = MISTAKES[name][0]
            context = tmp_path_factory.mktemp(f"mistake-{name}")
            lines = [f"FROM {template}"]
            if isinstance(change, str) and change.startswith("USER"):
                lines.append(change)
            else:
                text = (folder / "predict.py").read_text()
                if isinstance(change, tuple):
                    assert text.count(change[0]) == 1
                    text = text.replace(*change)
                else:
                    marker = '\nif __name__ == "__main__":'
                    assert text.count(marker) == 1
                    text = text.replace(marker, change + "\n" + marker)
                (context / "predict.py").write_text(text)
                lines.append("COPY predict.py /opt/team/predict.py")
            (context / "Dockerfile").write_text("\n".join(lines) + "\n")
            built[name] = f"iugc-test/kit-{name.replace('_', '-')}:latest"
            build_image(engine, context, built[name])
        return built[name]

    return get


@pytest.fixture(scope="session")
def quick_challenge(tmp_path_factory):
    """iugc2024 with a 4 s sanity-check time limit, so running past it takes seconds."""
    definition = yaml.safe_load((ROOT / "challenge" / "definitions" / "iugc2024.yaml").read_text())
    definition["phases"][0]["limits"]["time_limit_seconds"] = 4
    path = tmp_path_factory.mktemp("challenge") / "iugc2024-quick.yaml"
    path.write_text(yaml.safe_dump(definition))
    return str(path)


@pytest.mark.parametrize("mistake", MISTAKES)
def test_each_typical_mistake_is_refused_with_the_platforms_message(mistake, mistake_images, engine, real_sample, quick_challenge):
    _, failure, words = MISTAKES[mistake]
    challenge = quick_challenge if mistake == "too_slow" else "iugc2024"
    report = check(mistake_images(mistake), challenge=challenge, data=real_sample, engine=engine, jobs=1)
    assert report.accepted is False
    assert report.result["failure"] == failure, report.result.get("error")
    assert words in report.reason, report.reason
    if failure is not None:  # the run failed: the verdict is the platform's own message
        assert report.reason == report.result["error"]
    lines = format_report(report)
    assert f"REFUSED: {report.reason}" in lines
    if mistake in ("writes_outside_output", "needs_network", "too_slow"):
        assert any(line.startswith("  what to do: ") for line in lines)


def test_kit_check_exits_1_and_prints_the_refusal(mistake_images, real_sample):
    run = iugc("kit", "check", mistake_images("root"), "--challenge", "iugc2024", "--data", real_sample)
    assert run.returncode == 1, run.stdout + run.stderr
    assert run.stdout.strip().splitlines()[-1] == "REFUSED: image rejected: it runs as root (USER root); add a non-root `USER 1000` to the Dockerfile"


def test_memory_used_is_measured(mistake_images, engine, kits, real_sample, tmp_path):
    """A model holding 300 MB is seen using at least that and not much more."""
    from iugc.sandbox.docker_engine import build_image

    folder, template = kits["psfhs2023"]
    text = (folder / "predict.py").read_text()
    ballast = "\nBALLAST = np.ones(300 * 2**20 // 8)  # 300 MB, every page touched\n"
    (tmp_path / "predict.py").write_text(text.replace("\n\n# =====", ballast + "\n\n# =====", 1))
    (tmp_path / "Dockerfile").write_text(f"FROM {template}\nCOPY predict.py /opt/team/predict.py\n")
    image = build_image(engine, tmp_path, "iugc-test/kit-ballast:latest")
    report = check(image, challenge="psfhs2023", data=real_sample, engine=engine, jobs=1)
    assert report.accepted, report.reason
    assert 300 <= report.result["memory_peak_mb"] < 420, report.result["memory_peak_mb"]


def test_an_archive_goes_through_the_platforms_intake(engine, kits, real_sample, tmp_path):
    from iugc.sandbox.docker_engine import save_image

    _, image = kits["psfhs2023"]
    save_image(engine, image, tmp_path / "submission.tar")
    run = iugc("kit", "check", tmp_path / "submission.tar", "--challenge", "psfhs2023", "--data", real_sample)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "ACCEPTED" in run.stdout
    # An archive with a member escaping it is refused before the engine sees it.
    with tarfile.open(tmp_path / "bad.tar", "w") as tar:
        member = tarfile.TarInfo("../../etc/cron.d/x")
        member.size = 3
        tar.addfile(member, io.BytesIO(b"bad"))
    report = check(str(tmp_path / "bad.tar"), challenge="psfhs2023", data=real_sample, engine=engine)
    assert not report.accepted and report.result["failure"] == "image_rejected"
    assert report.reason == "image archive rejected: member '../../etc/cron.d/x' has a '..' component"


def test_export_base_writes_a_loadable_archive_and_its_sha256(engine, kits, tmp_path):
    from iugc.sandbox.intake import check_archive, config_image_id

    out = tmp_path / "iugc-base.tar"
    run = iugc("docker", "export-base", "--out", out)
    assert run.returncode == 0, run.stderr
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    assert (tmp_path / "iugc-base.tar.sha256").read_text() == f"{digest}  iugc-base.tar\n"
    assert digest in run.stdout
    info = check_archive(out, max_bytes=2 * 2**30)  # the platform's own archive rules
    assert info.repo_tags == (BASE,)
    assert config_image_id(info.config) == engine.api.inspect_image(BASE)["Id"]  # what `docker load` gives back
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iugc-base.tar", "iugc-base.tar.sha256"]
