"""The error a step raises when one record's data cannot be processed (a
corrupt PDF, an unreadable image, bytes that are not text): the pipeline
records it against that record and goes on with the others."""

from ...errors import AidbError, RECORD_PERMANENT

DATA_EXCEPTION = "22000"    # SQLSTATE data_exception: the record's data is at fault


class RecordError(AidbError):
    """This record's data can never be processed as it is (RecordPermanent)."""

    sqlstate = DATA_EXCEPTION
    category = RECORD_PERMANENT
