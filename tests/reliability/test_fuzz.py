"""Schema fuzzing with schemathesis against each server's own /openapi.json (real Waitress, tiny models).

Pass criteria: no 5xx; every response matches the documented status codes and schema; every
error is OpenAI's shape; schema-violating requests are refused; a missing or wrong key is a 401.
Schema-violating bodies are sent as JSON where the operation takes JSON: a form field is always
text, so an object the fuzzer puts into a text field arrives as a valid string (the server is right
to accept it). Operations that take only forms (edits, image-to-video) still get schema-violating
forms, judged by every check but "refused": no 5xx, documented statuses, OpenAI's error shape.
A schema-valid request may still get a 400 where the constraint is semantic (a size that is not a
multiple of the model's step, a cursor id that does not exist): that is the one relaxation.
"""

from __future__ import annotations

import collections
import json
import os

import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import negative_data_rejection

from tests.reliability.conftest import AUTH

# Examples per operation; SGLD_FUZZ_EXAMPLES raises it for a longer local run.
EXAMPLES = int(os.environ.get("SGLD_FUZZ_EXAMPLES", "25"))
CONFIG = schemathesis.Config.from_dict(
    {"checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "400", "401", "404", "409", "429"]}}}
)
STATUSES: collections.Counter = collections.Counter()


@schemathesis.check
def openai_error_shape(ctx, response, case):
    """Every 4xx/5xx body is ``{"error": {message, type, param, code}}``."""
    STATUSES[response.status_code] += 1
    if response.status_code >= 400:
        error = json.loads(response.content)["error"]
        assert set(error) >= {"message", "type", "param", "code"} and error["message"], response.content[:200]


def fuzz(srv, examples: int) -> None:
    """Every operation of ``srv``'s schema, schema-valid and schema-violating examples, all checks."""
    from hypothesis import given

    schema = schemathesis.openapi.from_url(srv.base + "/openapi.json", config=CONFIG)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations
    for operation in operations:
        media = {body.media_type for body in operation.body}
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            media_type, excluded = None, []
            if mode is GenerationMode.NEGATIVE and media:
                if "application/json" in media:
                    media_type = "application/json"
                else:  # forms only: see the module docstring
                    excluded = [negative_data_rejection]

            @given(case=operation.as_strategy(generation_mode=mode, media_type=media_type))
            @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def check(case):
                # A schema-violating case may leave the required Authorization header out on purpose (the server
                # must then refuse it: 401); only a case that has one gets the server's key put in.
                dropped = mode is GenerationMode.NEGATIVE and "Authorization" not in (case.headers or {})
                case.call_and_validate(headers=None if dropped else AUTH, timeout=120, excluded_checks=excluded)

            try:
                check()
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE  # an operation with no input has nothing to violate


def test_fuzz_video_server(video_server):
    fuzz(video_server, EXAMPLES)


def test_fuzz_image_server(image_server):
    fuzz(image_server, EXAMPLES)


def test_fuzz_edit_server(edit_server):
    fuzz(edit_server, max(2, EXAMPLES // 10))  # each valid edit VAE-encodes a ~1 MP condition image


def test_fuzz_report(video_server, image_server, edit_server):
    """What the fuzzers sent (figures for docs/reliability.md); no 5xx among them, none logged as unhandled.

    Run alone (the fuzz tests above did not fill the counter), it fuzzes each server briefly itself.
    """
    if not STATUSES:
        for srv in (video_server, image_server, edit_server):
            fuzz(srv, 2)
    assert sum(STATUSES.values()) > 0
    for srv in (video_server, image_server, edit_server):
        log = srv.log.read_text(errors="replace")
        # the 500 handler's and the worker's last-resort messages (injected engine faults log their own traceback)
        assert "unhandled error" not in log and "unexpected error outside generation" not in log
    print(f"\nfuzz responses by status: {dict(sorted(STATUSES.items()))}, total {sum(STATUSES.values())}")
    assert not [s for s in STATUSES if s >= 500]
