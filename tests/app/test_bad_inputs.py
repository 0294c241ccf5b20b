"""The dashboard's bad-input matrix: every case is something a visitor of a shared server can
type or upload (a path outside the folders the server may read, a FIFO, /dev/zero, a broken
CSV, a model that needs custom code, the hub while offline, …).

Each case starts the dashboard with that input and checks what the visitor sees: the error (or
warning) it expects, every message on one line in the dashboard's words (no traceback, no
command-line flags), nothing of the file's contents on the page, and no exception. The number
of cases is printed in pytest's summary ("app bad-input matrix: N cases").
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from app_data import assert_readable, messages, shown_text, write_class_csv
from app_settings import APP, TIMEOUT

SECRET = "TOP-SECRET-LINE"  # written into files whose contents must never be shown
PASSWD = "root:"  # the first field of /etc/passwd's first line


@dataclass
class Env:
    """One case's world: a folder the server may read (``root``), one it may not
    (``outside``), the tiny model, and the environment the sidebar starts from."""

    root: Path
    outside: Path
    model: Path
    monkeypatch: pytest.MonkeyPatch

    def dataset(self, source: str | Path) -> None:
        self.monkeypatch.setenv("LLMOPT_DEFAULT_DATASET", str(source))

    def model_source(self, source: str | Path) -> None:
        self.monkeypatch.setenv("LLMOPT_DEFAULT_MODEL", str(source))

    def csv(self, name: str, data: bytes | str) -> Path:
        """A file under the root, set as the sidebar's CSV path."""
        path = self.root / name
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        self.dataset(path)
        return path

    def offline(self) -> None:
        """The hub does not answer: only local files and caches may be used."""
        import datasets.config

        self.monkeypatch.setattr("llmopt.models.hub_reachable", lambda *a, **k: False)
        self.monkeypatch.setattr("llmopt.hub.hub_reachable", lambda *a, **k: False)
        self.monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")  # restored after the test
        self.monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
        self.monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)


@dataclass
class Case:
    """``setup`` prepares the input before the first run; ``then`` (optional) acts on the
    running app; ``expect`` is what the visitor must see: an ``error`` or a ``warning``
    containing ``says`` (case-insensitive), or ``none`` (the app copes, no message)."""

    id: str
    setup: Callable[[Env], None]
    expect: str
    says: str = ""
    secret: str | None = None
    then: Callable[[object], None] | None = None
    link: dict[str, str] | None = None  # the address's query values the app is opened with


GOOD_ROWS = "".join(f"good tasty snack {i},pos\nawful stale bread {i},neg\n" for i in range(15))
GOOD_CSV = "text,label\n" + GOOD_ROWS


def _symlink(env: Env) -> None:
    link = env.root / "link.csv"
    link.symlink_to("/etc/passwd")
    env.dataset(link)


def _fifo(env: Env) -> None:
    path = env.root / "pipe.csv"
    os.mkfifo(path)
    env.dataset(path)


def _device_in_roots(env: Env) -> None:
    env.monkeypatch.setenv("LLMOPT_ROOTS", os.pathsep.join([str(env.root), "/dev"]))
    env.dataset("/dev/zero")


def _folder(env: Env) -> None:
    (env.root / "folder.csv").mkdir()
    env.dataset(env.root / "folder.csv")


def _too_big(env: Env) -> None:
    env.monkeypatch.setenv("LLMOPT_MAX_FILE_MB", "1")
    env.csv("big.csv", GOOD_CSV + f"{SECRET} " * 150_000 + ",pos\n")  # about 2.4 MB


def _cap_not_a_number(env: Env) -> None:
    env.monkeypatch.setenv("LLMOPT_MAX_FILE_MB", "lots")
    env.csv("fine.csv", GOOD_CSV)


def _same_columns(at) -> None:
    label = [s for s in at.sidebar.selectbox if s.label == "Label column"][0]
    label.set_value("text").run()


def _upload_not_utf8(at) -> None:
    data = f"text,label\n{SECRET} caf\xe9,a\nother,b\n".encode("latin-1")
    at.file_uploader[0].set_value(("latin.csv", data, "text/csv")).run()


def _clear_csv_path(at) -> None:
    at.text_input("src_csv_path").set_value("").run()


def _three_classes(env: Env) -> None:
    env.dataset(write_class_csv(env.root / "three.csv", 3))


def _model_outside(env: Env) -> None:
    shutil.copytree(env.model, env.outside / "bert")
    env.model_source(env.outside / "bert")


def _model_folder(env: Env, name: str, files: dict[str, str]) -> None:
    folder = env.root / name
    folder.mkdir()
    for file, text in files.items():
        (folder / file).write_text(text)
    env.model_source(folder)


def _custom_code(env: Env) -> None:
    config = {
        "model_type": "bert",
        "architectures": ["EvilForSequenceClassification"],
        "auto_map": {"AutoModelForSequenceClassification": "evil.EvilForSequenceClassification"},
    }
    _model_folder(env, "custom", {"config.json": json.dumps(config), "evil.py": "raise SystemExit"})


def _encoder_outside(env: Env) -> None:
    shutil.copytree(env.model, env.outside / "encoder")
    env.model_source(f"encoder:{env.outside / 'encoder'}")


def _hub_offline(env: Env) -> None:
    env.offline()
    env.model_source("some-org/no-such-model-anywhere")


def _hf_offline(env: Env) -> None:
    env.offline()
    env.dataset("hf:no_such_dataset_anywhere_xyz")


def _hf_without_prefix(at) -> None:
    at.text_input("src_hf").set_value("no_such_dataset_anywhere_xyz").run()


def _crash(env: Env) -> None:
    """Not a user mistake: an error inside llmopt, with a message of several lines."""

    def broken(*args, **kwargs):
        raise RuntimeError(f'boom\nTraceback (most recent call last):\n  File "x.py"\n{SECRET}')

    env.monkeypatch.setattr("llmopt.model_facts", broken)


EVIL_LINK = "[Click here to log in](https://evil.example/login)"
EVIL_IMAGE = "![r](http://127.0.0.1:1/x)"
# What a browser would follow or fetch if Markdown made a link or an image of the text.
LEAKED = re.compile(r"<(a|img)\b[^>]*(evil\.example|127\.0\.0\.1)", re.IGNORECASE)


def _markdown_csv(env: Env) -> None:
    """Column names and label values that are Markdown links and images."""
    head = f"{EVIL_LINK},{EVIL_IMAGE}"
    rows = "".join(
        f"tasty snack {i},{EVIL_LINK}\nstale bread {i},{EVIL_IMAGE}\n" for i in range(15)
    )
    env.csv("md.csv", head + "\n" + rows)


def _csv_link(env: Env) -> dict[str, str]:
    """A link to a CSV under the roots whose text column is a Markdown image."""
    return {"data": str(env.root / "reviews.csv"), "text": EVIL_IMAGE, "label": "label"}


def _no_markup_from_the_link(at) -> None:
    """No element's Markdown body makes a link or an image of what a link or a file gave."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark")
    bodies = [e.value for kind in ("error", "warning", "caption", "markdown", "info", "success")
              for e in getattr(at, kind)]  # fmt: skip
    for body in bodies:
        html = md.render(str(body))
        assert not LEAKED.search(html), f"Markdown made a link or image: {body!r} -> {html!r}"
        for url in ("https://evil.example", "http://127.0.0.1:1"):
            assert url not in str(body), f"a bare address a browser would link: {body!r}"


def _one_run(env: Env) -> None:
    """A store holding one run (the Compare page reads a link's runs only when it has some)."""
    from llmopt.cli import main

    env.monkeypatch.setenv("LLMOPT_EXPERIMENTS", str(env.root / "experiments.sqlite"))
    argv = ["evaluate", "--model", str(env.model), "--dataset", str(env.root / "reviews.csv")]
    assert main([*argv, "--limit", "20"]) == 0


def _switch(page: str) -> Callable[[object], None]:
    return lambda at: at.switch_page(page).run()


def _rows(value: str) -> Callable[[Env], None]:
    return lambda env: env.monkeypatch.setenv("LLMOPT_DEFAULT_ROWS", value)


def _evaluate(at) -> None:
    at.switch_page("pages/compress.py").run()
    [b for b in at.button if b.label == "Evaluate"][0].click().run()
    assert at.get("plotly_chart"), "nothing was evaluated"


def _rows_clamped(at) -> None:
    assert at.number_input("src_rows").value == 1_000_000


CASES = [
    # --- a CSV typed as a path: only regular files under the server's roots, within the cap
    Case("csv /etc/passwd", lambda e: e.dataset("/etc/passwd"), "error", "outside", PASSWD),
    Case(
        "csv ../ out of the root",
        lambda e: e.dataset(f"{e.root}/{'../' * 12}etc/passwd"),
        "error",
        "outside",
        PASSWD,
    ),
    Case("csv symlink out of the root", _symlink, "error", "outside", PASSWD),
    Case("csv FIFO in the root", _fifo, "error", "named pipe"),
    Case("csv /dev/zero", lambda e: e.dataset("/dev/zero"), "error", "outside"),
    Case("csv /dev/zero with /dev a root", _device_in_roots, "error", "device"),
    Case("csv a folder", _folder, "error", "folder"),
    Case("csv missing", lambda e: e.dataset(e.root / "nope.csv"), "error", "not found"),
    Case("csv above the size cap", _too_big, "error", "limit", SECRET),
    Case("size cap not a number", _cap_not_a_number, "error", "positive number"),
    Case(
        "csv no path typed",
        lambda e: e.csv("fine.csv", GOOD_CSV),
        "error",
        "upload a CSV",
        then=_clear_csv_path,
    ),  # fmt: skip
    # --- the file's contents
    Case(
        "csv not UTF-8",
        lambda e: e.csv("latin.csv", f"text,label\n{SECRET} caf\xe9,a\nb,c\n".encode("latin-1")),
        "error",
        "UTF-8",
        SECRET,
    ),
    Case(
        "csv upload not UTF-8",
        lambda e: e.csv("fine.csv", GOOD_CSV),
        "error",
        "UTF-8",
        SECRET,
        then=_upload_not_utf8,
    ),  # fmt: skip
    Case("csv empty", lambda e: e.csv("empty.csv", ""), "error", "empty"),
    Case("csv header only", lambda e: e.csv("header.csv", "text,label\n"), "error", "no rows"),
    Case(
        "csv one class",
        lambda e: e.csv("one.csv", "text,label\n" + "nice tea,a\n" * 20),
        "error",
        "single class",
    ),
    Case(
        "csv NUL bytes",
        lambda e: e.csv("nul.csv", f"text,label\n{SECRET}\x00,a\nb,c\n"),
        "error",
        "NUL",
        SECRET,
    ),
    Case(
        "csv malformed",
        lambda e: e.csv("bad.csv", f'text,label\n{SECRET},a,b,c,d\n"open quote,b\n'),
        "error",
        "well-formed",
        SECRET,
    ),
    Case(
        "csv label column with 60 values",
        lambda e: e.csv("ids.csv", "review,id\n" + "".join(f"tasty {i},{i}\n" for i in range(60))),
        "warning",
        "probably not a label column",
    ),
    Case(
        "csv same text and label column",
        lambda e: e.csv("fine.csv", GOOD_CSV),
        "error",
        "both",
        then=_same_columns,
    ),  # fmt: skip
    Case("csv 3 classes, a 2-label model", _three_classes, "error", "Encoder + trained head"),
    # --- model folders and hub ids
    Case("model folder outside the roots", _model_outside, "error", "outside"),
    Case(
        "model folder missing", lambda e: e.model_source(e.root / "no_model"), "error", "not found"
    ),  # fmt: skip
    Case(
        "model folder without config.json",
        lambda e: _model_folder(e, "empty", {}),
        "error",
        "config.json",
    ),  # fmt: skip
    Case(
        "model folder is a file",
        lambda e: e.model_source(e.csv("m.csv", GOOD_CSV)),
        "error",
        "not a folder",
    ),  # fmt: skip
    Case("model needs custom code", _custom_code, "error", "code"),
    Case("model box empty", lambda e: e.model_source("encoder:"), "error", "empty"),
    Case("encoder folder outside the roots", _encoder_outside, "error", "outside"),
    Case("hub id while offline", _hub_offline, "error", "no-such-model"),
    Case("hub id malformed", lambda e: e.model_source("not a hub id!"), "error", "hub id like"),
    # --- Hugging Face datasets
    Case("hf: local folder outside the roots", lambda e: e.dataset("hf:/etc"), "error", "outside"),
    Case("hf: unknown while offline", _hf_offline, "error", "no_such_dataset"),
    Case("hf: no name", lambda e: e.dataset("hf:"), "error", "dataset name"),
    Case(
        "hf id typed without hf:",
        _hf_offline,
        "error",
        "'no_such_dataset_anywhere_xyz'",
        then=_hf_without_prefix,
    ),  # fmt: skip
    # --- anything else
    Case("an unexpected error in llmopt", _crash, "error", "Something went wrong", SECRET),
    # --- Evaluation rows
    Case("rows 0 from the environment", _rows("0"), "none", then=_evaluate),
    Case("rows above the box's limit", _rows("5000000"), "none", then=_rows_clamped),
    Case("rows not a number", _rows("many"), "none", then=_evaluate),
    # --- Markdown and odd characters from a link or a file are shown as text (issue 18)
    Case("link model is a Markdown link", lambda e: None, "error", "click here",
         link={"model": EVIL_LINK}),
    Case("link rows is a Markdown image", lambda e: None, "warning", "evaluation rows",
         link={"rows": EVIL_IMAGE}),
    Case("link c_bits is a Markdown image", lambda e: None, "warning", "settings were not used",
         link={"c_bits": EVIL_IMAGE}),
    Case("link data is a Markdown image", lambda e: None, "error", "r\\]",
         link={"data": EVIL_IMAGE}),
    Case("link text column is a Markdown image", _csv_link, "any"),
    Case("csv column names and labels are Markdown", _markdown_csv, "any"),
    Case("link data holds a NUL", lambda e: None, "warning", "control characters",
         link={"data": "\x00x"}),
    Case("link compress run overflows", _one_run, "warning", "not a run id",
         link={"run": "99999999999999999999"}, then=_switch("pages/compress.py")),
    Case("link compare runs is a superscript digit", _one_run, "warning", "not a run id",
         link={"runs": "\u00b2"}, then=_switch("pages/compare.py")),
    Case("link compare ref is a superscript digit", _one_run, "warning", "not a run id",
         link={"ref": "\u00b2"}, then=_switch("pages/compare.py")),
]  # fmt: skip


@pytest.fixture()
def env(tiny_env, tmp_path, monkeypatch):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    roots = os.pathsep.join([str(root), str(tiny_env["model"].parent)])
    monkeypatch.setenv("LLMOPT_ROOTS", roots)  # not the test's tmp folder: not ``outside``
    shutil.copy(tiny_env["csv"], root / "reviews.csv")
    monkeypatch.setenv("LLMOPT_DEFAULT_DATASET", str(root / "reviews.csv"))
    return Env(root=root, outside=outside, model=tiny_env["model"], monkeypatch=monkeypatch)


@pytest.mark.matrix("app bad-input matrix")
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(env, case):
    from streamlit.testing.v1 import AppTest

    link = case.setup(env)  # a setup may return the link's query values
    link = link if isinstance(link, dict) else {}
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for key, value in {**link, **(case.link or {})}.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, at.exception
    if case.then is not None:
        case.then(at)
    assert not at.exception, at.exception
    errors, warnings = [e.value for e in at.error], [w.value for w in at.warning]
    for message in messages(at):
        assert_readable(message)
    _no_markup_from_the_link(at)
    if case.expect == "none":
        assert not errors and not warnings, errors + warnings
    elif case.expect != "any":
        found = errors if case.expect == "error" else warnings
        assert found, f"expected an st.{case.expect}; errors {errors}, warnings {warnings}"
        assert any(case.says.lower() in m.lower() for m in found), (case.says, found)
    if case.secret:
        assert case.secret not in shown_text(at)
    assert at.sidebar.radio  # the sidebar is still there to fix the choice


def test_the_matrix_is_large_enough():
    """At least 20 cases, each named once; ``-s`` shows the count here too."""
    print(f"app bad-input matrix: {len(CASES)} cases")
    assert len(CASES) >= 20
    assert len({c.id for c in CASES}) == len(CASES)
