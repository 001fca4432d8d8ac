"""Turn a step or broadcast into a multipart email for one subscriber.

Creators write plain text with Django template placeholders ({{ first_name }}). It is
compiled once per text and process (cached by the text itself) by an engine with no
loaders and no extra tag libraries, then rendered per subscriber. The HTML part is built from the same text (escaped, with
paragraphs and links), so both parts always say the same thing. The brand layout around
it is rendered once per batch with markers, and each message only fills the markers in:
the layout costs one Django template render per batch instead of one per email.
"""

import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from types import SimpleNamespace

from django.template import Context, Engine, TemplateSyntaxError
from django.template.loader import render_to_string

PLACEHOLDER_HELP = ("first_name", "name", "email", "sender_name", "brand_name")

# No loaders and no libraries beyond the built-ins: {% include %} and {% load %} fail
# instead of reaching files or code.
_engine = Engine(dirs=[], loaders=[], libraries={}, autoescape=False, debug=False)

LINK = re.compile(
    r"\[(?P<label>[^\]\n]{1,300})\]\((?P<target>https?://[^\s()<>]+)\)"
    r"|(?P<bare>https?://[^\s<>\"'()\[\]]+[^\s<>\"'()\[\].,;:!?])"
)
LINK_STYLE = "color:#4338ca;text-decoration:underline;"
BUTTON_STYLE = (
    "display:inline-block;padding:14px 24px;background-color:#4338ca;border:1px solid #4338ca;"
    "border-radius:8px;color:#ffffff;font-size:16px;font-weight:600;text-decoration:none;"
)

MARK = {
    name: f"@@lodestone-{name}@@"
    for name in ("subject", "preheader", "body", "unsubscribe", "manage", "pixel")
}


class RenderError(Exception):
    """A step's or broadcast's template cannot be rendered; the message is for the creator."""


@dataclass(frozen=True)
class CompiledEmail:
    subject: object
    preheader: object
    body: object
    button_label: str
    button_url: str


def _compile(source: str, field: str):
    try:
        return _engine.from_string(source or "")
    except TemplateSyntaxError as exc:
        raise RenderError(f"{field}: {exc}") from exc


def compile_email(obj) -> CompiledEmail:
    """Compile a SequenceStep or Broadcast; RenderError names the field at fault."""
    return CompiledEmail(
        subject=_compile(obj.subject, "Subject"),
        preheader=_compile(obj.preheader, "Preheader"),
        body=_compile(obj.body, "Body"),
        button_label=obj.button_label or "",
        button_url=obj.button_url or "",
    )


@lru_cache(maxsize=512)
def _compiled(
    subject: str, preheader: str, body: str, button_label: str, button_url: str
) -> CompiledEmail | RenderError:
    try:
        return compile_email(
            SimpleNamespace(
                subject=subject,
                preheader=preheader,
                body=body,
                button_label=button_label,
                button_url=button_url,
            )
        )
    except RenderError as exc:
        return exc


def compiled(obj) -> CompiledEmail:
    """compile_email, cached per process by the text itself: every batch of a step reuses
    one compilation, and an edit (new text) is compiled afresh without any invalidation."""
    result = _compiled(
        obj.subject or "",
        obj.preheader or "",
        obj.body or "",
        obj.button_label or "",
        obj.button_url or "",
    )
    if isinstance(result, RenderError):
        raise RenderError(str(result))
    return result


def sample_values() -> dict[str, str]:
    return {
        "first_name": "Sam",
        "name": "Sam Sample",
        "email": "sam@example.com",
        "sender_name": "Maya",
        "brand_name": "Lodestone",
    }


def template_problems(*, subject: str, preheader: str, body: str) -> dict[str, str]:
    """Field → message for every part that does not compile or render; empty when fine."""
    problems = {}
    for field, source in (("subject", subject), ("preheader", preheader), ("body", body)):
        try:
            _render(_compile(source, field.capitalize()), sample_values())
        except RenderError as exc:
            problems[field] = str(exc)
    return problems


def _render(template, values: dict) -> str:
    try:
        return template.render(Context(values, autoescape=False))
    except Exception as exc:
        raise RenderError(f"{exc.__class__.__name__}: {exc}") from exc


def values_for(subscriber, brand) -> dict[str, str]:
    return {
        "first_name": subscriber.first_name,
        "name": subscriber.name,
        "email": subscriber.email,
        "sender_name": brand.sender_name or brand.brand_name,
        "brand_name": brand.brand_name,
    }


def _paragraphs(text: str, track: Callable[[str], str]) -> tuple[str, str]:
    """(plain text, HTML) of the body, every link passed through ``track``."""
    text_out: list[str] = []
    html_paragraphs: list[str] = []
    for paragraph in re.split(r"\n[ \t]*\n", text.strip()):
        if not paragraph.strip():
            continue
        pos, t_parts, h_parts = 0, [], []
        for match in LINK.finditer(paragraph):
            before = paragraph[pos : match.start()]
            t_parts.append(before)
            h_parts.append(html.escape(before))
            target = match.group("target") or match.group("bare")
            tracked = track(target)
            label = match.group("label")
            if label:
                t_parts.append(f"{label} ({tracked})")
                h_parts.append(
                    f'<a href="{html.escape(tracked)}" style="{LINK_STYLE}">{html.escape(label)}</a>'
                )
            else:
                t_parts.append(tracked)
                h_parts.append(
                    f'<a href="{html.escape(tracked)}" style="{LINK_STYLE}">{html.escape(target)}</a>'
                )
            pos = match.end()
        t_parts.append(paragraph[pos:])
        h_parts.append(html.escape(paragraph[pos:]))
        text_out.append("".join(t_parts))
        html_paragraphs.append(
            '<p dir="auto" style="margin:0 0 16px;word-wrap:break-word;overflow-wrap:anywhere;">'
            + "".join(h_parts).replace("\n", "<br>")
            + "</p>"
        )
    return "\n\n".join(text_out), "\n".join(html_paragraphs)


@dataclass(frozen=True)
class Message:
    subject: str
    text: str
    html: str


@dataclass(frozen=True)
class Layout:
    """The brand layout rendered once, with markers where each message's parts go."""

    html: str
    text: str

    @classmethod
    def build(cls, *, brand) -> "Layout":
        context = {
            "brand": brand,
            "subject": MARK["subject"],
            "preheader": MARK["preheader"],
            "body_html": MARK["body"],
            "body_text": MARK["body"],
            "unsubscribe_url": MARK["unsubscribe"],
            "manage_url": MARK["manage"],
            "pixel": MARK["pixel"],
        }
        return cls(
            html=render_to_string("funnels/email/sequence_message.html", context),
            text=render_to_string("funnels/email/sequence_message.txt", context),
        )


def render_message(
    compiled: CompiledEmail,
    *,
    layout: Layout,
    values: dict[str, str],
    track: Callable[[str], str],
    unsubscribe_url: str,
    manage_url: str,
    pixel_url: str | None = None,
) -> Message:
    subject = " ".join(_render(compiled.subject, values).split())
    if not subject:
        raise RenderError("Subject: it is empty for this subscriber.")
    preheader = " ".join(_render(compiled.preheader, values).split())
    body_text, body_html = _paragraphs(_render(compiled.body, values), track)
    if compiled.button_url:
        tracked = track(compiled.button_url)
        body_text += f"\n\n{compiled.button_label}: {tracked}"
        body_html += (
            f'\n<p style="margin:8px 0 8px;"><a href="{html.escape(tracked)}" '
            f'style="{BUTTON_STYLE}">{html.escape(compiled.button_label)}</a></p>'
        )
    pixel = (
        f'<img src="{html.escape(pixel_url)}" width="1" height="1" alt="" '
        'style="display:block;width:1px;height:1px;border:0;">'
        if pixel_url
        else ""
    )
    html_out = (
        layout.html.replace(MARK["subject"], html.escape(subject))
        .replace(MARK["preheader"], html.escape(preheader))
        .replace(MARK["unsubscribe"], html.escape(unsubscribe_url))
        .replace(MARK["manage"], html.escape(manage_url))
        .replace(MARK["pixel"], pixel)
        .replace(MARK["body"], body_html)
    )
    text_out = (
        layout.text.replace(MARK["unsubscribe"], unsubscribe_url)
        .replace(MARK["manage"], manage_url)
        .replace(MARK["body"], body_text)
    )
    return Message(subject=subject, text=text_out, html=html_out)
