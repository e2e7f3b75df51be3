"""The baseline tests' dataset: the PSFHS release sample imported, split and with generated
non-standard frames; built once per test process and only read."""
import pytest

from iugc.data_manifest.importers import import_dataset
from iugc.data_manifest.manifest import load_manifest, write_manifest
from iugc.data_manifest.nonstandard import generate_nonstandard_dataset
from iugc.data_manifest.split import split_by_blocks


@pytest.fixture(scope="session")
def dataset(psfhs_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("baseline")
    import_dataset("psfhs", psfhs_dir / "release_sample", root / "real", progress=False)
    write_manifest(root / "real", split_by_blocks(load_manifest(root / "real"), {"train": [("03744", "03771")], "validation": [("03772", "03783")]}))
    generate_nonstandard_dataset(root / "real", root / "ds", per_frame=0.3, seed=0, progress=False)
    return root / "ds"
