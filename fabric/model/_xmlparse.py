"""Parse untrusted XML with defusedxml into a small tree that remembers line numbers."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from xml.sax import SAXParseException, handler
from xml.sax.saxutils import escape, quoteattr
from xml.sax.xmlreader import AttributesNSImpl, InputSource, Locator

from defusedxml import (  # type: ignore[import-untyped]
    DTDForbidden,
    EntitiesForbidden,
    ExternalReferenceForbidden,
)
from defusedxml.expatreader import create_parser  # type: ignore[import-untyped]

from fabric.model._files import decode_utf8
from fabric.model.errors import ModelError

MAX_DEPTH = 32  # the deepest real path (Endpoints/InstanceInputEndpoint/...) is 5 levels
MAX_ELEMENTS = 100_000
_DECL = re.compile(r"""\A\s*<\?xml[^>]*?encoding\s*=\s*["']([^"']*)["']""")
_OK_ENCODINGS = {"utf-8", "utf8", "us-ascii", "ascii"}


@dataclass
class Node:
    """One XML element: namespace, local name, attributes, children, line and text."""

    ns: str | None
    tag: str
    attrs: dict[tuple[str | None, str], str]
    line: int
    children: list[Node] = field(default_factory=list)
    text: str = ""

    def attr(self, name: str) -> str | None:
        """The value of an attribute without a namespace, or None."""
        return self.attrs.get((None, name))

    def to_xml(self) -> str:
        """Serialize this element (local names only) for keeping it verbatim."""
        attrs = "".join(f" {name}={quoteattr(v)}" for (_ns, name), v in self.attrs.items())
        inner = escape(self.text.strip()) + "".join(c.to_xml() for c in self.children)
        return f"<{self.tag}{attrs}>{inner}</{self.tag}>" if inner else f"<{self.tag}{attrs}/>"


class _Limit(Exception):
    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.line = line


class _Builder(handler.ContentHandler):
    def __init__(self) -> None:
        super().__init__()
        self.locator: Locator | None = None
        self.stack: list[Node] = []
        self.root: Node | None = None
        self.count = 0

    def setDocumentLocator(self, locator: Locator) -> None:
        self.locator = locator

    def line(self) -> int:
        line = self.locator.getLineNumber() if self.locator else None
        return line or 0

    def startElementNS(
        self, name: tuple[str | None, str], qname: str | None, attrs: AttributesNSImpl
    ) -> None:
        self.count += 1
        if len(self.stack) >= MAX_DEPTH:
            raise _Limit(f"elements are nested more than {MAX_DEPTH} deep", self.line())
        if self.count > MAX_ELEMENTS:
            raise _Limit(f"has more than {MAX_ELEMENTS} elements", self.line())
        node = Node(name[0] or None, name[1], dict(attrs.items()), self.line())
        if self.stack:
            self.stack[-1].children.append(node)
        else:
            self.root = node
        self.stack.append(node)

    def endElementNS(self, name: tuple[str | None, str], qname: str | None) -> None:
        self.stack.pop()

    def characters(self, content: str) -> None:
        if self.stack:
            self.stack[-1].text += content


def parse_xml(data: bytes, file: str) -> Node:
    """Parse XML bytes safely: no DTDs, entities or external references; UTF-8 only.

    Raises ModelError naming the file and line for anything that is not plain, well-formed XML.
    """
    text = decode_utf8(data, file)
    declared = _DECL.match(text)
    if declared and declared.group(1).lower() not in _OK_ENCODINGS:
        raise ModelError.single(
            file,
            f"declares encoding '{declared.group(1)}'; save it as UTF-8 and declare encoding=\"utf-8\"",
            line=1,
        )
    builder = _Builder()
    parser = create_parser()
    parser.forbid_dtd = True
    parser.forbid_entities = True
    parser.forbid_external = True
    parser.setFeature(handler.feature_namespaces, True)
    parser.setContentHandler(builder)
    try:
        source = InputSource(file)
        source.setByteStream(io.BytesIO(text.encode("utf-8")))
        parser.parse(source)
    except SAXParseException as exc:
        raise ModelError.single(
            file, f"is not well-formed XML: {exc.getMessage()}", line=exc.getLineNumber()
        ) from None
    except DTDForbidden:
        raise ModelError.single(
            file,
            "contains a DTD (<!DOCTYPE ...>); remove it, DTDs are not allowed",
            line=builder.line(),
        ) from None
    except EntitiesForbidden:
        raise ModelError.single(
            file, "declares an entity; remove it, entities are not allowed", line=builder.line()
        ) from None
    except ExternalReferenceForbidden:
        raise ModelError.single(
            file, "refers to an external entity; remove it", line=builder.line()
        ) from None
    except _Limit as exc:
        raise ModelError.single(file, str(exc), line=exc.line) from None
    if builder.root is None:  # pragma: no cover - expat rejects a document without a root
        raise ModelError.single(file, "has no root element")
    return builder.root
