"""Great Expectations suites run as gates between pipeline steps.

``validation.gate.run_gate`` validates a table chunk by chunk against a suite, writes the
GX results (JSON) and data docs (HTML) into ``workspace/validation``, and raises
:class:`~validation.gate.ValidationFailed` with a readable summary when any expectation
fails, so the step that called it stops before publishing anything.
``validation.suites`` holds the suites.  May import: ``components`` (table layouts).
"""
