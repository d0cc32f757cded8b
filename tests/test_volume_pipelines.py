"""Volume pipelines end to end: files in a directory and objects in an S3
bucket (moto on 127.0.0.1) become chunks and embeddings, through the
document steps, and stay in step when files are added, changed and removed."""

import json
import os
import shutil
import tempfile

import pytest

from tests.support.common import TEST_API_KEY, wait_for
from tests.support.documents import make_html, make_pdf, make_text_png
from tests.support.fake_vectors import fake_embedding
from tests.support.pipeline_checks import SERVER_MODEL, create_fake_model, pipeline_errors
from tests.support.s3_server import s3_server  # noqa: F401 — the fixture

pytestmark = pytest.mark.volumes


@pytest.fixture
def folder(conn):
    """A directory the server (the postgres OS user) can read, allowed by
    aidb.allowed_local_paths for the duration of the test."""
    path = tempfile.mkdtemp(prefix="aidb-volume-")
    os.chmod(path, 0o755)
    conn.execute(f"ALTER SYSTEM SET aidb.allowed_local_paths = '{path}'")
    conn.execute("SELECT pg_reload_conf()")
    wait_for(lambda: _setting_visible(conn, path), message="the reloaded setting")
    yield path
    conn.execute("ALTER SYSTEM RESET aidb.allowed_local_paths")
    conn.execute("SELECT pg_reload_conf()")
    shutil.rmtree(path, ignore_errors=True)


def _setting_visible(conn, path):
    with conn.cursor() as cur:
        # a new transaction in this session sees the reloaded value
        return cur.execute("SELECT current_setting('aidb.allowed_local_paths')").fetchone()[0] == path


def write(folder, name, data):
    path = os.path.join(folder, name)
    with open(path, "wb" if isinstance(data, bytes) else "w") as out:
        out.write(data)
    os.chmod(path, 0o644)


def destination(conn, pipeline):
    rows = conn.execute(f"SELECT source_key, part_id, value, embedding::text FROM {pipeline}_embeddings "
                        "ORDER BY 1, 2").fetchall()
    return rows


def create_volume_pipeline(conn, name, volume, *steps, data_format="Text", **options):
    """A pipeline over a volume: `steps` are (operation, options SQL) before KnowledgeBase."""
    parts, n = [], 1
    for operation, options_sql in steps:
        parts.append(f"step_{n} => '{operation}', step_{n}_options => {options_sql}")
        n += 1
    parts.append(f"step_{n} => 'KnowledgeBase', step_{n}_options => "
                 f"aidb.knowledge_base_config('fake', data_format => '{data_format}')")
    extra = "".join(f", {k} => '{v}'" for k, v in options.items())
    conn.execute(f"SELECT aidb.create_pipeline('{name}', '{volume}', {', '.join(parts)}{extra})")


def scans(conn, pipeline):
    return conn.execute('SELECT "volume: scans completed" FROM aidb.pipem WHERE pipeline = %s',
                        (pipeline,)).fetchone()[0]


def test_text_files_added_changed_and_removed(conn, model_server, folder):
    create_fake_model(conn, model_server.url, TEST_API_KEY)
    write(folder, "a.txt", "alpha document")
    os.makedirs(os.path.join(folder, "sub"))
    os.chmod(os.path.join(folder, "sub"), 0o755)
    write(folder, "sub/b.txt", "beta")
    conn.execute(f"SELECT aidb.create_volume('docs_folder', 'file://{folder}')")
    create_volume_pipeline(conn, "files", "docs_folder")
    conn.execute("SELECT aidb.run_pipeline('files')")
    rows = destination(conn, "files")
    assert [(r[0], r[2]) for r in rows] == [("a.txt", "alpha document"), ("sub/b.txt", "beta")]
    expected = fake_embedding("alpha document", 8, SERVER_MODEL)
    assert all(abs(a - b) < 1e-5 for a, b in zip(json.loads(rows[0][3]), expected))
    first_scans = scans(conn, "files")

    write(folder, "a.txt", "alpha, rewritten")
    os.remove(os.path.join(folder, "sub", "b.txt"))
    write(folder, "c.txt", "gamma")
    conn.execute("SELECT aidb.run_pipeline('files')")
    assert [(r[0], r[2]) for r in destination(conn, "files")] == [
        ("a.txt", "alpha, rewritten"), ("c.txt", "gamma")]
    assert scans(conn, "files") > first_scans
    assert conn.execute('SELECT "count(source records)" FROM aidb.pipem').fetchone()[0] == 2


def test_unchanged_files_are_not_embedded_again(conn, model_server, folder):
    create_fake_model(conn, model_server.url, TEST_API_KEY)
    write(folder, "a.txt", "stays the same")
    conn.execute(f"SELECT aidb.create_volume('v', 'file://{folder}')")
    create_volume_pipeline(conn, "p", "v")
    conn.execute("SELECT aidb.run_pipeline('p')")
    before = model_server.state()["requests_total"]
    conn.execute("SELECT aidb.run_pipeline('p')")
    assert model_server.state()["requests_total"] == before


def test_html_pdf_and_image_steps(conn, model_server, folder):
    create_fake_model(conn, model_server.url, TEST_API_KEY)
    for kind in ("html", "pdf", "png"):
        os.makedirs(os.path.join(folder, kind), mode=0o755)
        os.chmod(os.path.join(folder, kind), 0o755)
    write(folder, "html/page.html", make_html())
    write(folder, "pdf/report.pdf", make_pdf(["first page text", "second page text"]))
    write(folder, "pdf/broken.pdf", b"%PDF-1.4 this is not really a pdf")
    write(folder, "png/sign.png", make_text_png("HELLO VOLUME"))
    write(folder, "png/broken.png", b"\x89PNG\r\n\x1a\n truncated")
    for kind in ("html", "pdf", "png"):
        conn.execute(f"SELECT aidb.create_volume('{kind}', 'file://{folder}/{kind}')")
    create_volume_pipeline(conn, "html_p", "html", ("ParseHtml", "aidb.html_parse_config()"))
    create_volume_pipeline(conn, "pdf_p", "pdf", ("ParsePdf", "aidb.pdf_parse_config()"))
    create_volume_pipeline(conn, "png_p", "png", data_format="Image")
    for name in ("html_p", "pdf_p", "png_p"):
        conn.execute(f"SELECT aidb.run_pipeline('{name}')")

    html_text = " ".join(r[2] for r in destination(conn, "html_p"))
    assert html_text and "<" not in html_text
    pdf_rows = destination(conn, "pdf_p")
    assert [(r[0], r[1]) for r in pdf_rows] == [("report.pdf", 0), ("report.pdf", 1)]
    assert "second page" in pdf_rows[1][2]
    png_rows = destination(conn, "png_p")
    assert [r[0] for r in png_rows] == ["sign.png"]
    assert "HELLO" in png_rows[0][2].upper()

    # the broken files are RecordPermanent errors of their own; the rest went through
    assert [(e[0], e[1]) for e in pipeline_errors(conn, "pdf_p")] == [
        ("broken.pdf", "RecordPermanent")]
    assert [(e[0], e[1]) for e in pipeline_errors(conn, "png_p")] == [
        ("broken.png", "RecordPermanent")]


def test_summarize_then_embed(conn, model_server, folder):
    create_fake_model(conn, model_server.url, TEST_API_KEY)
    conn.execute("""SELECT aidb.create_model('writer', 'openai_completions',
                    jsonb_build_object('model', 'chat-test', 'url', %s::text || '/v1'),
                    jsonb_build_object('api_key', %s::text))""", (model_server.url, TEST_API_KEY))
    write(folder, "long.txt", "one two three four five six seven eight nine ten eleven twelve thirteen")
    conn.execute(f"SELECT aidb.create_volume('v', 'file://{folder}')")
    create_volume_pipeline(conn, "p", "v", ("SummarizeText", "aidb.summarize_text_config('writer')"))
    conn.execute("SELECT aidb.run_pipeline('p')")
    rows = destination(conn, "p")
    assert len(rows) == 1 and rows[0][2].startswith("summary:")


def test_size_limit_records_an_error(conn, model_server, folder):
    create_fake_model(conn, model_server.url, TEST_API_KEY)
    write(folder, "small.txt", "small")
    write(folder, "big.txt", "x" * 5000)
    conn.execute(f"""SELECT aidb.create_volume('v', 'file://{folder}', '{{"max_object_size": 1000}}')""")
    create_volume_pipeline(conn, "p", "v")
    conn.execute("SELECT aidb.run_pipeline('p')")
    assert [r[0] for r in destination(conn, "p")] == ["small.txt"]
    errors = pipeline_errors(conn, "p")
    assert [(e[0], e[1]) for e in errors] == [("big.txt", "RecordPermanent")]


def test_live_mode_is_refused_for_volumes(conn, model_server, folder):
    create_fake_model(conn, model_server.url, TEST_API_KEY)
    conn.execute(f"SELECT aidb.create_volume('v', 'file://{folder}')")
    with pytest.raises(Exception, match="cannot be Live"):
        create_volume_pipeline(conn, "p", "v", auto_processing="Live")
    assert conn.execute("SELECT count(*) FROM aidb.pipelines").fetchone()[0] == 0


def test_background_volume_pipeline_picks_up_new_files(conn, model_server, folder):
    create_fake_model(conn, model_server.url, TEST_API_KEY)
    conn.execute(f"SELECT aidb.create_volume('v', 'file://{folder}')")
    create_volume_pipeline(conn, "p", "v", auto_processing="Background",
                           background_sync_interval="1 second")
    write(folder, "new.txt", "arrived later")
    wait_for(lambda: [r[0] for r in destination(conn, "p")] == ["new.txt"], timeout=60,
             message="the background worker to embed the new file")


def test_s3_volume_and_an_interrupted_listing(conn, model_server, s3_server):  # noqa: F811
    create_fake_model(conn, model_server.url, TEST_API_KEY)
    bucket = "aidb-pipeline-test"
    client = s3_server.client()
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="docs/one.txt", Body=b"first object")
    client.put_object(Bucket=bucket, Key="docs/two.txt", Body=b"second object")
    credentials = s3_server.credentials
    conn.execute("SELECT aidb.create_volume('bucket', %s, jsonb_build_object("
                 "'endpoint_url', %s::text, 'region', 'us-east-1', "
                 "'access_key_id', %s::text, 'secret_access_key', %s::text))",
                 (f"s3://{bucket}/docs/", s3_server.url, credentials["access_key_id"],
                  credentials["secret_access_key"]))
    create_volume_pipeline(conn, "p", "bucket")
    conn.execute("SELECT aidb.run_pipeline('p')")
    assert [(r[0], r[2]) for r in destination(conn, "p")] == [
        ("one.txt", "first object"), ("two.txt", "second object")]

    client.put_object(Bucket=bucket, Key="docs/one.txt", Body=b"first, changed")
    client.delete_object(Bucket=bucket, Key="docs/two.txt")
    conn.execute("SELECT aidb.run_pipeline('p')")
    assert [(r[0], r[2]) for r in destination(conn, "p")] == [("one.txt", "first, changed")]

    # A listing that fails (the bucket refuses us) deletes nothing.
    conn.execute("SELECT aidb.create_volume('bucket_bad_key', %s, jsonb_build_object("
                 "'endpoint_url', %s::text, 'region', 'us-east-1', "
                 "'access_key_id', %s::text, 'secret_access_key', 'wrong-secret'))",
                 (f"s3://{bucket}/docs/", s3_server.url, credentials["access_key_id"]))
    conn.execute("UPDATE aidb.pipeline_registry SET source_volume = 'bucket_bad_key' WHERE name = 'p'")
    with pytest.raises(Exception) as failure:
        conn.execute("SELECT aidb.run_pipeline('p')")
    assert "wrong-secret" not in str(failure.value)
    assert [(r[0], r[2]) for r in destination(conn, "p")] == [("one.txt", "first, changed")]
