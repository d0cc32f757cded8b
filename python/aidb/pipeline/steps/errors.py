"""The error a step raises when one record's data cannot be processed (a
corrupt PDF, an unreadable image, bytes that are not text): the pipeline
records it against that record and goes on with the others."""

from ...errors import AidbError, RECORD_PERMANENT

DATA_EXCEPTION = "22000"    # SQLSTATE data_exception: the record's data is at fault


class RecordError(AidbError):
    """This record's data can never be processed as it is (RecordPermanent)."""

    sqlstate = DATA_EXCEPTION
    category = RECORD_PERMANENT


def require_bytes(data, step_name, what):
    """`data` as bytes, or a RecordError saying the step wants `what` (a file)."""
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    if not isinstance(data, bytes):
        raise RecordError(f"{step_name}: the input must be bytes ({what}), "
                          f"not {type(data).__name__}")
    return data
