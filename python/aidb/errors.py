"""Errors the engine raises, each with the failure category that decides
what happens next (docs/architecture.md, "Failures"):

- RecordTemporary:   this record failed for now (rate limit, 5xx, timeout);
                     retried later.
- RecordPermanent:   this record can never succeed as it is (the model
                     rejected the value); recorded and skipped.
- PipelineTemporary: the whole pipeline cannot run for now.
- PipelinePermanent: the configuration is broken (bad credentials, unknown
                     model); the pipeline blocks until it is fixed.
"""

RECORD_TEMPORARY = "RecordTemporary"
RECORD_PERMANENT = "RecordPermanent"
PIPELINE_TEMPORARY = "PipelineTemporary"
PIPELINE_PERMANENT = "PipelinePermanent"

# SQLSTATEs used when an error reaches SQL.
INVALID_PARAMETER = "22023"        # invalid_parameter_value
UNDEFINED_OBJECT = "42704"         # undefined_object
DUPLICATE_OBJECT = "42710"         # duplicate_object
INSUFFICIENT_PRIVILEGE = "42501"   # insufficient_privilege
EXTERNAL_ROUTINE = "38000"         # external_routine_exception


class AidbError(Exception):
    """An error meant for the user: message, optional detail and hint."""

    sqlstate = EXTERNAL_ROUTINE
    category = PIPELINE_PERMANENT

    def __init__(self, message, *, detail=None, hint=None, sqlstate=None, category=None):
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.hint = hint
        if sqlstate:
            self.sqlstate = sqlstate
        if category:
            self.category = category


class InvalidInput(AidbError):
    """Bad input to a SQL function: nothing was changed."""

    sqlstate = INVALID_PARAMETER


class ModelError(AidbError):
    """A model provider failed; `category` says whether to retry, skip or block."""
