-- aidb extension script, part 55: option builders of the document steps
-- ParseHtml, ParsePdf, PerformOcr and SummarizeText. Like chunk_text_config,
-- they only assemble jsonb (a NULL argument means "the step's default");
-- the engine checks the values when a pipeline is created.

CREATE FUNCTION aidb.html_parse_config(
    method text DEFAULT 'StructuredPlaintext'
) RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object('method', method)) $$;
COMMENT ON FUNCTION aidb.html_parse_config(text) IS
    'Options of step ParseHtml: method ''StructuredPlaintext'' (one line per heading, '
    'paragraph, list item) or ''StructuredMarkdown'' (headings, lists, emphasis, links, code as Markdown).';

CREATE FUNCTION aidb.pdf_parse_config(
    method text DEFAULT 'Text',
    allow_partial_parsing boolean DEFAULT false
) RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
              'method', method, 'allow_partial_parsing', allow_partial_parsing)) $$;
COMMENT ON FUNCTION aidb.pdf_parse_config(text, boolean) IS
    'Options of step ParsePdf (one part per page): method ''Text'' (the text layer), and whether '
    'pages that cannot be read are skipped (allow_partial_parsing) instead of failing the document.';

CREATE FUNCTION aidb.ocr_config(
    language text DEFAULT 'eng',
    psm integer DEFAULT NULL
) RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
              'language', language, 'psm', psm)) $$;
COMMENT ON FUNCTION aidb.ocr_config(text, integer) IS
    'Options of step PerformOcr (Tesseract): language code(s) such as ''eng'' or ''eng+deu'', '
    'and optionally the page segmentation mode (psm, e.g. 6 = one block of text).';

CREATE FUNCTION aidb.summarize_text_config(
    model text,
    max_length integer DEFAULT 120,
    prompt text DEFAULT NULL
) RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
              'model', model, 'max_length', max_length, 'prompt', prompt)) $$;
COMMENT ON FUNCTION aidb.summarize_text_config(text, integer, text) IS
    'Options of step SummarizeText: a model of provider openai_completions, the summary''s '
    'maximum length in words, and optionally the instructions (prompt) replacing the default ones.';
