"""Pipelines: definitions, change capture DDL, batch processing and runs.

One module per stage, in the order a change flows through:
    definition  the pipeline as registered (names resolved and quoted)
    create      checks the arguments of create_pipeline and builds its objects
    capture     the trigger function that feeds the backlog
    queries     the SQL of a batch (the only place that builds it)
    batch       one batch: claim, lock, read, run the steps, write
    runner      drains a backlog (run_pipeline, workers), reconciles drift
    error_log   what failed, for aidb.pipeline_errors
    steps/      ChunkText, KnowledgeBase, ...
"""
