"""Each service error carries the HTTP status its docstring promises, and the app answers
with it: JSON under /api/v1/, the error page elsewhere."""
import inspect
import re

import iugc.submissions.exceptions as exceptions


def _service_errors():
    return [cls for _, cls in inspect.getmembers(exceptions, inspect.isclass)
            if issubclass(cls, exceptions.ServiceError) and cls.__module__ == exceptions.__name__]


def test_every_error_states_its_status_in_its_docstring_and_carries_it():
    stated = {}
    for cls in _service_errors():
        found = re.findall(r"HTTP (\d{3})", cls.__doc__ or "")
        if found:
            stated[cls.__name__] = (int(found[-1]), cls.status)
    assert len(stated) >= 8, stated
    assert {name: pair for name, pair in stated.items() if pair[0] != pair[1]} == {}


def test_a_subclass_inherits_its_parents_status_unless_it_says_otherwise():
    assert exceptions.RateLimited.status == exceptions.QuotaExceeded.status == 429
    assert exceptions.SchemaNotCurrent.status == exceptions.ConfigurationError.status == 503
    assert exceptions.InvalidArchive.status == 422 != exceptions.InvalidRequest.status == 400
