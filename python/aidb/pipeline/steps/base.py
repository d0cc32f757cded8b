"""What every step but KnowledgeBase shares: a name, declared options
(aidb.options), the SQL function that builds them, and options validated
once, at construction."""

from ...options import check_options


class Step:
    """Base of the text and document steps; a step with checks beyond its
    declarations (ChunkText, PerformOcr) overrides validate_options."""

    name = None             # the operation, as create_pipeline names it
    OPTIONS = ()            # its options (aidb.options.Option)
    builder = None          # the SQL function that builds its options

    @classmethod
    def validate_options(cls, options):
        """The options checked against OPTIONS, defaults filled in."""
        return check_options(cls.name, options, cls.OPTIONS,
                             hint=f"Build the options with {cls.builder}.")

    def __init__(self, options):
        self.options = self.validate_options(options)
