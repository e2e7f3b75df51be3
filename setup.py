"""The package layout and the optional compiled metrics kernel; all metadata lives in pyproject.toml.

Every package is installed under one namespace, ``iugc`` (``iugc.challenge``,
``iugc.evaluator``, ...), while the repository keeps its folders at the top
(``challenge/``, ``evaluator/``, ...): ``package_dir`` maps each name to its folder, for
wheels and editable installs alike. Sub-folders (templates, static files, weights,
definitions, the kit template) are found as namespace packages so that their files ship
(``[tool.setuptools.package-data]`` in pyproject.toml).

``optional=True``: without a C compiler or Python headers the install still succeeds and
the evaluator uses its NumPy/OpenCV path (same numbers, slower).
"""
from setuptools import Extension, find_namespace_packages, setup

# the layers, bottom to top (tests/repository/test_layers.py holds their import rules)
PACKAGES = ("common", "challenge", "data_manifest", "evaluator", "sandbox", "baseline", "submissions", "leaderboard")
found = find_namespace_packages(include=[f"{p}{tail}" for p in (*PACKAGES, "iugc") for tail in ("", ".*")],
                                exclude=["*.__pycache__", "*.__pycache__.*"])

setup(
    packages=[name if name.split(".")[0] == "iugc" else f"iugc.{name}" for name in found],
    package_dir={f"iugc.{p}": p for p in PACKAGES},
    ext_modules=[
        Extension(
            "iugc.evaluator._fastmetrics",
            ["evaluator/_fastmetrics.c"],
            extra_compile_args=["-O3"],
            optional=True,
        )
    ],
)
