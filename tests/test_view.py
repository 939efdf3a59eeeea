"""``ecap view``: the read-only web page over a store, through Starlette's TestClient.

The store is made the way users make theirs: a spec (CSV source, fake captioner, fake filter, fake
judge, fake training, and a captioner running the trained model) run by the runner, plus what a
person adds in an annotate step (a refinement, a graded verdict with a defect code, a preference).
"""

from __future__ import annotations

import io
import json
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("starlette", reason="needs the view extra: pip install 'editcaption[view]'")

from starlette.routing import Route
from starlette.testclient import TestClient

from ecap.records import ImageRef, Instruction, Pair, Preference, Verdict
from ecap.store import Store
from ecap.store.store import CompletedSample
from ecap.testing import make_pairs, run_spec
from ecap_view import queries
from ecap_view.app import create_app
from ecap_view.command import view_command

SPEC = """
name: view-test
steps:
  pairs: {{source: csv, with: {{path: {csv}}}}}
  captions:
    caption: fake
    from: pairs
    with: {{replies: {{color: "Make the square blue."}}, fail: [add]}}
  scored: {{filter: fake, from: captions, with: {{replies: {{color: "2"}}, min_score: 3}}}}
  judged: {{judge: fake, from: scored}}
  sft: {{train: fake, from: judged}}
  tuned:
    caption: fake
    from: pairs
    with: {{model: {{step: sft}}, template: "Tuned: edit the {{category}} image."}}
"""


@dataclass(frozen=True)
class ViewStore:
    """A store built for these tests, and the ids tests look for."""

    url: str
    pairs: dict[str, str]  # category -> pair id
    model_instruction: str  # the captioner's instruction for the "color" pair
    human_instruction: str  # a person's refinement of it


def build_view_store(folder: Path, url: str) -> ViewStore:
    """Run the spec (pair 4's target is missing, the "add" pair fails to caption), then add a
    person's refinement, verdict and preference for the "color" pair as an annotate step would."""
    csv = make_pairs(folder, 6, missing=(4,))
    spec = folder / "spec.yaml"
    spec.write_text(SPEC.format(csv=csv))
    assert run_spec(spec, store=url).status == "complete"
    store = Store(url)
    try:
        pairs = {p.category: p.id for p in queries_all(store, "pair")}
        model = next(
            i
            for i in queries_all(store, "instruction")
            if i.pair_id == pairs["color"] and i.author == "fake"  # the untrained captioner
        )
        human = Instruction(
            pair_id=pairs["color"],
            text="Turn the red square blue, keep the background.",
            origin="human",
            author="annotator-7",
            parent_id=model.id,
        )
        grade = Verdict(
            pair_id=pairs["color"],
            instruction_id=model.id,
            judge="annotator-7",
            kind="human",
            axes={"accuracy": 2.0},
            reasons={"accuracy": "it names the wrong colour change"},
            labels=["P0:viewpoint"],
        )
        preference = Preference(pair_id=pairs["color"], chosen_id=human.id, rejected_id=model.id)
        run_id = store.start_run(
            name="humans",
            spec_path=str(spec),
            spec_text="",
            spec_hash="0" * 64,
            ecap_version="test",
            plugins={},
        )
        step_run = store.start_step(
            run_id=run_id,
            step_id="refine",
            kind="annotate",
            plugin="people",
            plugin_version="1",
            package="test",
            config={},
            step_key="ecap1:refine",
        )
        store.save_batch(
            step_run,
            "ecap1:refine",
            "refine",
            [
                CompletedSample(
                    "ecap1:r1", "r1", [{"pair": pairs["color"], "instruction": human.id}]
                )
            ],
            [],
            [human, grade, preference],
        )
        store.finish_step(step_run, "complete", {"inputs": 1, "done": 1})
        store.finish_run(run_id, "complete")
    finally:
        store.close()
    return ViewStore(url, pairs, model.id, human.id)


def queries_all(store: Store, record_type: str) -> list:
    """Every record of a type, through the view's own keyset paging."""
    from ecap.provenance import query

    ids = [r["id"] for r in query(store, record_type=record_type, limit=10_000)]
    return list(store.records(record_type, ids).values())


@pytest.fixture
def built(tmp_path: Path, store_url: str, ecap_registry) -> ViewStore:
    return build_view_store(tmp_path, store_url)


@pytest.fixture
def client(built: ViewStore):
    store = Store(built.url, read_only=True)
    try:
        yield TestClient(create_app(store, page_size=2))
    finally:
        store.close()


def step_run_id(client: TestClient, step_id: str) -> str:
    """The id of the latest run's step run for ``step_id``, found by following the page's links."""
    runs = client.get("/").text
    run_link = runs.split('href="/runs/')[1].split('"')[0]
    run_page = client.get(f"/runs/{run_link}").text
    if f">{step_id}<" not in run_page:  # the humans' run is the latest; the spec's is the other
        run_link = runs.split('href="/runs/')[2].split('"')[0]
        run_page = client.get(f"/runs/{run_link}").text
    before = run_page.split(f">{step_id}</a>")[0]
    return before.rsplit('href="/steps/', 1)[1].split('"')[0]


# -- read-only ------------------------------------------------------------------------------


def test_every_route_answers_get_only_and_writes_are_refused(client, built):
    routes = [r for r in client.app.routes if isinstance(r, Route)]
    assert routes
    for route in routes:
        assert route.methods <= {"GET", "HEAD"}, route.path
    pair = built.pairs["color"]
    for url in ["/", f"/pairs/{pair}", "/search", "/export", f"/image/{pair}/source"]:
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            assert client.request(method, url).status_code == 405, (method, url)


def test_pages_load_nothing_from_elsewhere_and_images_are_never_sniffed(client, built):
    for url in ("/", f"/pairs/{built.pairs['color']}", f"/image/{built.pairs['color']}/source"):
        headers = client.get(url).headers
        policy = headers["content-security-policy"]
        assert "default-src 'none'" in policy and "script-src 'self'" in policy
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"


def test_a_page_for_loopback_refuses_requests_naming_another_host(built):
    """A web site that rebinds its name to 127.0.0.1 cannot read the page from a browser."""
    store = Store(built.url, read_only=True)
    try:
        app = create_app(store, allowed_hosts=["127.0.0.1", "localhost"])
        assert TestClient(app, base_url="http://127.0.0.1:8765").get("/").status_code == 200
        assert TestClient(app, base_url="http://localhost:8765").get("/").status_code == 200
        rebound = TestClient(app, base_url="http://attacker.example:8765").get("/")
        assert rebound.status_code == 400
        assert "view-test" not in rebound.text
    finally:
        store.close()


def test_the_command_explains_how_to_install_the_web_stack_when_it_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # an import of it now fails
    result = CliRunner().invoke(view_command, ["--store", "sqlite:///nowhere.db"])
    assert result.exit_code == 1
    assert "pip install 'editcaption[view]'" in result.output


def test_the_command_says_when_its_port_is_taken(built):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = CliRunner().invoke(view_command, ["--store", built.url, "--port", port])
    assert result.exit_code == 1
    assert f"cannot listen on 127.0.0.1:{port} (Address already in use)" in result.output


# -- runs and steps -------------------------------------------------------------------------


def test_runs_list_both_runs_and_a_run_shows_its_steps_counts_failures_and_timings(client):
    runs = client.get("/")
    assert runs.status_code == 200
    assert "view-test" in runs.text and "humans" in runs.text
    step = step_run_id(client, "captions")
    run_id = client.get(f"/steps/{step}").text.split('href="/runs/')[1].split('"')[0]
    page = client.get(f"/runs/{run_id}").text
    for step_id in ("pairs", "captions", "scored", "judged", "sft", "tuned"):
        assert f">{step_id}</a>" in page
    assert "kept 3" in page and "dropped 1" in page
    assert "1 failed" in page  # the missing image, and the "add" pair the captioner failed
    assert "ScriptedFailure" in page
    assert "cannot read image" in page or "No such file" in page
    assert " s</td>" in page  # a duration


def test_a_step_page_lists_what_it_wrote_page_by_page_and_its_failures(client):
    step = step_run_id(client, "pairs")
    first = client.get(f"/steps/{step}")
    assert first.status_code == 200
    assert first.text.count('<td><a href="/pairs/') == 2  # page size 2
    seen = []
    url = f"/steps/{step}"
    while url:
        text = client.get(url).text
        seen += [part.split('"')[0] for part in text.split('<td><a href="/pairs/')[1:]]
        url = (
            text.split('class="next" href="')[1].split('"')[0].replace("&amp;", "&")
            if ('class="next"' in text)
            else None
        )
    assert len(seen) == len(set(seen)) == 5  # every imported pair once, none twice
    assert "Failures (1)" in first.text


def test_a_train_step_page_draws_its_training_curve(client):
    page = client.get(f"/steps/{step_run_id(client, 'sft')}").text
    assert "<svg" in page and "<polyline" in page and ">loss<" in page


# -- the pair page --------------------------------------------------------------------------


def test_the_pair_page_shows_every_instruction_with_scores_verdicts_and_preferences(client, built):
    page = client.get(f"/pairs/{built.pairs['color']}")
    assert page.status_code == 200
    text = page.text
    assert f'src="/image/{built.pairs["color"]}/source"' in text
    assert f'src="/image/{built.pairs["color"]}/target"' in text
    assert 'class="slider"' in text and 'class="blink"' in text
    assert "Make the square blue." in text  # the model's
    assert "Turn the red square blue, keep the background." in text  # the person's
    assert "Tuned: edit the color image." in text  # the trained checkpoint's
    assert "trained checkpoint: fake-sft" in text
    assert "score 2" in text  # the filter's score (this instruction was dropped)
    assert "it names the wrong colour change" in text  # a verdict's reason per axis
    assert "P0:viewpoint" in text
    assert 'class="chosen">Turn the red square blue' in text
    assert f'corrects <a href="#i-{built.model_instruction}">' in text


def test_a_judged_pair_shows_the_judge_axes_and_weighted_score(client, built):
    text = client.get(f"/pairs/{built.pairs['remove']}").text
    assert "model verdict</b> by fake" in text
    assert "S 4.20" in text
    for axis in ("accuracy", "completeness", "clarity"):
        assert f"<td>{axis}</td>" in text


def test_text_from_the_store_is_shown_as_text_never_run_as_markup(built):
    sneaky = Instruction(
        pair_id=built.pairs["move"], text='<script>alert("x")</script><img src=x>', origin="human"
    )
    writer = Store(built.url)
    writer.save_batch("", "ecap1:x", "x", [], [], [sneaky])
    writer.close()
    store = Store(built.url, read_only=True)
    try:
        client = TestClient(create_app(store))
        for url in (f"/pairs/{built.pairs['move']}", "/search", f"/records/{sneaky.id}/lineage"):
            text = client.get(url).text
            assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img src=x&gt;" in text, url
            assert "<script>alert" not in text and "<img src=x>" not in text
    finally:
        store.close()


def test_an_unknown_pair_is_a_404_page(client):
    assert client.get(f"/pairs/{'0' * 64}").status_code == 404


# -- images ---------------------------------------------------------------------------------


def test_an_image_is_served_as_the_stored_pair_points_to_it(client, built, tmp_path):
    pair = built.pairs["move"]
    response = client.get(f"/image/{pair}/target")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.content == (tmp_path / "images" / "3-target.png").read_bytes()


@pytest.mark.parametrize(
    "url",
    [
        "/image/" + "0" * 64 + "/source",  # a well-formed id that is no pair's
        "/image/..%2F..%2F..%2Fetc%2Fpasswd/source",
        "/image/%2Fetc%2Fpasswd/source",
        "/image/../../../etc/passwd",
        "/image/{pair}/..%2F..%2Fspec.yaml",
        "/image/{pair}/meta",
        "/image/{pair}%2F..%2Fspec.yaml/source",
        "/static/..%2F..%2F__init__.py",
        "/static/../app.py",
    ],
)
def test_image_requests_for_anything_but_a_stored_pair_are_refused(client, built, url):
    response = client.get(url.format(pair=built.pairs["move"]))
    assert response.status_code == 404
    assert b"root:" not in response.content and b"steps:" not in response.content
    assert b"import" not in response.content


def test_an_image_replaced_on_disk_is_refused_not_served(client, built, tmp_path):
    (tmp_path / "images" / "0-source.png").write_bytes(b"another file under the old name")
    response = client.get(f"/image/{built.pairs['color']}/source")
    assert response.status_code == 409
    assert b"another file" not in response.content


def test_remote_and_relative_image_references_are_not_fetched(built, tmp_path):
    remote = ImageRef(uri="http://169.254.169.254/latest/meta-data", sha256="a" * 64)
    relative = ImageRef(uri="images/0-source.png", sha256="b" * 64)
    pair = Pair.of(remote, relative)
    writer = Store(built.url)
    writer.save_batch("", "ecap1:x", "x", [], [], [pair])
    writer.close()
    store = Store(built.url, read_only=True)
    client = TestClient(create_app(store))
    try:
        source = client.get(f"/image/{pair.id}/source")
        assert source.status_code == 404 and "remote" in source.text
        target = client.get(f"/image/{pair.id}/target")
        assert target.status_code == 404 and "relative" in target.text
    finally:
        store.close()


# -- lineage and report ---------------------------------------------------------------------


def test_the_lineage_page_goes_back_to_the_pair_and_forward_to_verdicts_and_models(client, built):
    page = client.get(f"/records/{built.model_instruction}/lineage?depth=6")
    assert page.status_code == 200
    text = page.text
    origins, uses = text.split("Back to its origins")[1].split("Forward to its uses")
    assert f'href="/records/{built.pairs["color"]}/lineage' in origins
    assert "human verdict by annotator-7" in uses
    assert "preference" in uses
    assert f'href="/records/{built.human_instruction}/lineage' in uses


def test_the_lineage_of_a_judged_instruction_reaches_the_trained_model(client, built):
    judged = client.get(f"/pairs/{built.pairs['remove']}").text
    instruction = judged.split('<article class="instruction model" id="i-')[1].split('"')[0]
    uses = client.get(f"/records/{instruction}/lineage?depth=6").text.split("Forward")[1]
    assert "model fake-sft" in uses and "dataset sft" in uses


def test_an_unknown_record_has_no_lineage_page(client):
    assert client.get("/records/nothing-like-this/lineage").status_code == 404


def test_the_report_page_shows_the_report_tables_and_training_curves(client):
    pytest.importorskip("scipy", reason="the report's statistics need the report extra")
    text = client.get("/report").text
    assert "Judge scores by model and benchmark" in text
    assert "4.20" in text
    assert "<polyline" in text and "sft (" in text


# -- search, filters, paging, export --------------------------------------------------------


def search(client: TestClient, **params: str) -> list[str]:
    """The instruction texts a search lists, over every page."""
    found: list[str] = []
    after = ""
    while True:
        text = client.get("/search", params={**params, "after": after}).text
        for row in text.split('<tr class="hit">')[1:]:
            found.append(row.split("</a></td>")[1].rsplit(">", 1)[1])
        if 'class="next"' not in text:
            return found
        after = text.split('class="next" href="')[1].split("after=")[1].split('"')[0]


def test_paging_lists_every_instruction_once(client):
    everything = search(client)
    # 5 from the CSV, 4 captions (the "add" pair failed), 5 by the tuned model, 1 by a person
    assert len(everything) == len(set(everything)) == 15
    assert sorted(everything) == sorted(search(client, origin=""))


def test_filters_narrow_the_list(client, built):
    assert search(client, category="color") == [
        "Turn the red square blue, keep the background.",
        "Tuned: edit the color image.",
        "Make the square blue.",
        "Make pair 0 bluer.",  # the CSV's reference instruction
    ]
    assert search(client, model="annotator-7") == ["Turn the red square blue, keep the background."]
    assert search(client, origin="human") == ["Turn the red square blue, keep the background."]
    assert len(search(client, step="tuned")) == 5
    assert len(search(client, step="judged")) == 3  # judged by that step
    assert len(search(client, min_score="4", max_score="5")) == 3  # the judge's S is 4.2
    assert search(client, min_score="4.5") == []
    assert search(client, score_name="score", max_score="3") == ["Make the square blue."]
    assert search(client, defect="P0:4") == ["Make the square blue."]  # row 4 is viewpoint
    assert len(search(client, benchmark="pairs")) == 15  # the step that imported the pairs
    assert search(client, benchmark="elsewhere") == []


def test_a_bad_filter_value_is_a_400_that_says_why(client):
    response = client.get("/search", params={"min_score": "high"})
    assert response.status_code == 400
    assert "min_score must be a number" in response.text
    assert client.get("/search", params={"defect": "P9:nothing"}).status_code == 400


def test_export_downloads_the_filtered_selection_as_jsonl_and_parquet(client, built):
    response = client.get("/export", params={"format": "jsonl", "category": "color"})
    assert response.status_code == 200
    assert "ecap-selection.jsonl" in response.headers["content-disposition"]
    rows = [json.loads(line) for line in response.text.splitlines()]
    assert {r["pair_id"] for r in rows} == {built.pairs["color"]}
    assert len(rows) == 4
    assert {r["instruction_origin"] for r in rows} == {"model", "human", "reference"}
    graded = next(r for r in rows if r["instruction_id"] == built.model_instruction)
    assert json.loads(graded["verdict"])["labels"] == ["P0:viewpoint"]
    assert json.loads(graded["scores"]) == {"score": 2.0}

    import pyarrow.parquet as pq

    parquet = client.get("/export", params={"format": "parquet", "origin": "human"})
    assert parquet.status_code == 200
    table = pq.read_table(io.BytesIO(parquet.content))
    assert table.column("instruction").to_pylist() == [
        "Turn the red square blue, keep the background."
    ]
    assert client.get("/export", params={"format": "../../x"}).status_code == 400


def test_keyset_paging_reads_the_same_rows_as_one_big_page(built):
    store = Store(built.url, read_only=True)
    try:
        everything = queries.search_ids(store, queries.Filters(), None, 1000).rows
        paged, after = [], None
        while True:
            page = queries.search_ids(store, queries.Filters(), after, 3)
            paged += page.rows
            if page.after is None:
                break
            after = page.after
        assert paged == everything == sorted(everything, reverse=True)
    finally:
        store.close()


# -- training curves ------------------------------------------------------------------------


def test_training_curves_take_numbers_only_and_show_a_single_logged_step():
    from ecap_view.charts import curves, line_plot

    rows = [
        {"step_run_id": "a", "step": 2, "values": {"loss": 0.5, "done": True, "note": "x"}},
        {"step_run_id": "a", "step": 1, "values": {"loss": 0.9}},
        {"step_run_id": "b", "step": 1, "values": {"loss": 0.7}},
    ]
    found = curves(rows, {"a": "sft", "b": "dpo"})
    assert list(found) == ["loss"]  # a boolean or a text is not a curve
    assert [(c.label, c.points) for c in found["loss"]] == [
        ("sft", [(1.0, 0.9), (2.0, 0.5)]),
        ("dpo", [(1.0, 0.7)]),
    ]
    svg = line_plot("loss", found["loss"])
    assert svg.count("<polyline") == 2 and svg.count("<circle") == 3
    assert line_plot("<b>", [found["loss"][1]]).count("&lt;b&gt;") == 2  # title and label
