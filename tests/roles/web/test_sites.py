"""Loading site folders: which kind, import isolation between sites, errors naming the file."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from roles.hosts._web import SiteKind, SiteLoadError, load_site


def test_folder_kind_follows_the_files_it_holds(web, tmp_path: Path) -> None:
    asgi = load_site(web.asgi_site(tmp_path / "a", "a"))
    wsgi = load_site(web.wsgi_site(tmp_path / "w"))
    static = load_site(web.static_site(tmp_path / "s"))
    both = web.asgi_site(tmp_path / "both", "both")
    (both / "wsgi.py").write_text("application = None\n")
    assert [asgi.kind, wsgi.kind, static.kind] == [SiteKind.ASGI, SiteKind.WSGI, SiteKind.STATIC]
    assert load_site(both).kind is SiteKind.ASGI  # asgi.py wins, as the order is documented


def test_sibling_modules_of_two_sites_do_not_mix(web, tmp_path: Path) -> None:
    first = load_site(web.asgi_site(tmp_path / "one", "one"))
    second = load_site(web.asgi_site(tmp_path / "two", "two"))
    assert first.app.__globals__["helper"].NAME == "one"
    assert second.app.__globals__["helper"].NAME == "two"
    assert str(tmp_path / "one") not in sys.path
    assert str(tmp_path / "two") not in sys.path


def test_missing_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(SiteLoadError, match=r"site folder .*nowhere does not exist"):
        load_site(tmp_path / "nowhere")


def test_module_without_its_callable_is_named(tmp_path: Path) -> None:
    (tmp_path / "wsgi.py").write_text("app = None\n")
    with pytest.raises(SiteLoadError, match=r"wsgi\.py does not define `application`"):
        load_site(tmp_path)


def test_import_error_names_the_file_and_keeps_the_cause(tmp_path: Path) -> None:
    (tmp_path / "asgi.py").write_text("1 / 0\n")
    with pytest.raises(SiteLoadError, match=r"asgi\.py failed: ZeroDivisionError") as caught:
        load_site(tmp_path)
    assert isinstance(caught.value.__cause__, ZeroDivisionError)
    assert str(tmp_path) not in sys.path
