"""The IUGC domain core: label schema, challenge definitions and AoP/HSD geometry.

This package imports no other package of the project.
"""
