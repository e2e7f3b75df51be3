"""The platform's one namespace: ``iugc.challenge``, ``iugc.evaluator``, ... (in a checkout,
the folders beside this one; ``setup.py`` maps them), and, in this folder, the ``iugc``
command line that composes every package's commands (the top application layer)."""
