"""Only for the optional compiled metrics kernel; all metadata lives in pyproject.toml.

`optional=True`: without a C compiler or Python headers the install still succeeds and
the evaluator uses its NumPy/OpenCV path (same numbers, slower).
"""
from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "evaluator._fastmetrics",
            ["evaluator/_fastmetrics.c"],
            extra_compile_args=["-O3"],
            optional=True,
        )
    ]
)
