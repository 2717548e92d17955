"""/docs: the OpenAPI document rendered for people (issue 17 item 7): linked from the
navigation, no raw Markdown backticks or Python lists, every operation and schema there,
every schema link leading somewhere."""
from __future__ import annotations

import json
import re
from html.parser import HTMLParser

from web.api_docs import constraints, prose, type_label

from .test_auth_ui import sign_up


class Page(HTMLParser):
    """Visible text, element ids and in-page links of an HTML page."""

    def __init__(self):
        super().__init__()
        self.text: list[str] = []
        self.ids: set[str] = set()
        self.anchors: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and (attrs.get("href") or "").startswith("#"):
            self.anchors.append(attrs["href"][1:])
        if tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip:
            self.text.append(data)


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    return page


def test_docs_are_linked_from_the_navigation(app):
    visitor = app.test_client()
    assert 'href="/docs"' in visitor.get("/").get_data(as_text=True)
    member = app.test_client()
    sign_up(member)
    assert 'href="/docs"' in member.get("/dashboard").get_data(as_text=True)


def test_no_raw_markdown_or_python_reprs(client):
    html = client.get("/docs").get_data(as_text=True)
    text = " ".join(parse(html).text)
    assert "`" not in text
    assert "['string', 'null']" not in html and "[&#39;string&#39;, &#39;null&#39;]" not in html
    assert "{'" not in text and "$ref" not in text
    # what the backticks meant is now code
    assert "<code>Authorization: Bearer &lt;access token&gt;</code>" in html
    assert "string or null" in text


def test_every_operation_and_schema_has_a_section_and_every_link_a_target(client):
    spec = client.get("/openapi.json").get_json()
    page = parse(client.get("/docs").get_data(as_text=True))
    for path, methods in spec["paths"].items():
        for method in methods:
            anchor = f"{method}-" + path.strip("/").replace("/", "-").replace("{", "").replace("}", "")
            assert anchor in page.ids, anchor
            assert anchor in page.anchors, anchor  # listed in the table of contents
    for name in spec["components"]["schemas"]:
        assert f"schema-{name}" in page.ids
    missing = [a for a in page.anchors if a not in page.ids]
    assert missing == []


def test_types_in_words():
    assert type_label({"type": ["string", "null"]}) == "string or null"
    assert type_label({"type": "string", "format": "uuid"}) == "string (uuid)"
    assert type_label({"enum": ["free", "pro"]}) == "one of <code>free</code>, <code>pro</code>"
    assert type_label({"type": "array", "items": {"$ref": "#/components/schemas/Job"}}) == \
        'array of <a href="#schema-Job">Job</a>'
    assert type_label({"const": True}) == "always <code>true</code>"
    assert constraints({"type": "integer", "minimum": 15, "maximum": 60, "default": 20}) == \
        "15–60; default <code>20</code>"
    assert constraints({"type": "string", "maxLength": 254, "pattern": r"\S"}) == "at most 254 characters; not blank"


def test_descriptions_are_escaped_before_code_spans_become_code():
    assert prose("use `<b>` here") == "use <code>&lt;b&gt;</code> here"
    assert prose("<script>alert(1)</script>") == "&lt;script&gt;alert(1)&lt;/script&gt;"


def test_examples_are_runnable_curl_with_the_documents_own_examples(client):
    spec = client.get("/openapi.json").get_json()
    body = spec["paths"]["/v1/shorts/generate"]["post"]["requestBody"]["content"]["application/json"]["example"]
    html = client.get("/docs").get_data(as_text=True)
    section = html[html.index('id="post-v1-shorts-generate"'):]
    section = section[:section.index("</section>")]
    curl = re.search(r"<pre tabindex=\"0\"><code>(curl .*?)</code></pre>", section, re.S).group(1)
    curl = curl.replace("&#34;", '"').replace("&#39;", "'").replace("&amp;", "&")
    assert curl.startswith("curl -X POST https://YOUR-HOST/v1/shorts/generate \\\n")
    assert '-H "Authorization: Bearer $TOKEN"' in curl and '-H "Content-Type: application/json"' in curl
    sent = json.loads(re.search(r"-d '(.*)'$", curl).group(1))
    assert sent == body
    # and the answer it gets, from the document too
    answer = re.search(r"Answer 202:</p>\s*<pre tabindex=\"0\"><code>(.*?)</code></pre>", section, re.S).group(1)
    assert json.loads(answer.replace("&#34;", '"')) == \
        spec["paths"]["/v1/shorts/generate"]["post"]["responses"]["202"]["content"]["application/json"]["example"]


def test_groups_follow_the_declared_tags_with_their_descriptions(client):
    spec = client.get("/openapi.json").get_json()
    html = client.get("/docs").get_data(as_text=True)
    order = re.findall(r'<h2 class="group-title" id="tag-(\w+)">', html)
    declared = [tag["name"] for tag in spec["tags"]]
    assert [tag for tag in order if tag in declared] == [tag for tag in declared if tag in order]
    for tag in spec["tags"]:
        if tag["name"] in order:
            text = re.sub(r"`([^`]+)`", r"<code>\1</code>", tag["description"])
            assert text in html.replace("&#39;", "'"), tag["name"]
