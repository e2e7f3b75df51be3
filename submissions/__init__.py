"""The submission service's core: records (SQLAlchemy ORM, Alembic migrations), storage of
uploaded archives and outputs, the lifecycle of a submission, quotas and the queue.

The evaluation itself is :func:`iugc.sandbox.evaluate_image.evaluate_image`; this package
adds the bookkeeping around it. ``leaderboard/`` serves it over HTTP.
"""
