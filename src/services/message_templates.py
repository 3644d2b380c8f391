"""Message templates: declared variables, checked when a template is saved, and one logic-less
rendering pass.

A template names variables as `{{patient.given_name}}` (spaces inside the braces allowed) and
nothing else: no expressions, conditions, loops, partials or filters. A `{{ … }}` that is not
a declared variable is refused when saving (422 with a pointer); `{% … %}` and any other text
are text. Rendering is one left-to-right substitution: a value is never scanned again, so a
patient named `{{clinic.name}}` stays literally so. E-mail also gets an HTML part in which
everything — template text and values alike — is escaped.

Mustache or Jinja's sandbox would do more than this needs (sections, partials, unescaped
triple braces, attribute access), and every feature is surface a clinic's template could
reach; the variables are a closed list.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from dataclasses import dataclass

from carebase.errors import FieldError

# A tag: two braces, anything but braces, two braces. Names are checked against VARIABLES.
_TAG = re.compile(r"\{\{([^{}]{0,100})\}\}")
_NAME = re.compile(r"\s*([a-z][a-z_]*(?:\.[a-z][a-z_]*)?)\s*")

VARIABLES: Mapping[str, str] = {
    "patient.given_name": "The recipient's given name.",
    "patient.family_name": "The recipient's family name.",
    "patient.full_name": "Given and family name.",
    "clinic.name": "The organization's name.",
    "appointment.next_at": "The recipient's next appointment, in the clinic's time zone "
    "(empty when none is booked).",
    "appointment.next_date": "The date of that appointment (empty when none).",
    "unsubscribe_url": "E-mail only: the one-time link that stops this channel's broadcasts "
    "(every e-mail carries it in its footer anyway).",
}
EMAIL_ONLY = frozenset({"unsubscribe_url"})
BODY_LIMITS: Mapping[str, int] = {"email": 20_000, "sms": 1_600, "whatsapp": 4_096}


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str | None
    text: str
    html: str | None


def problems(channel: str, subject: str | None, body: str) -> list[FieldError]:
    """Every reason the template cannot be saved, each with its pointer."""
    found: list[FieldError] = []
    if channel == "email" and not subject:
        found.append(FieldError("/body/subject", "An e-mail template needs a subject.", "required"))
    if channel != "email" and subject is not None:
        found.append(FieldError("/body/subject", f"A {channel} message has no subject.", "invalid"))
    limit = BODY_LIMITS[channel]
    if len(body) > limit:
        found.append(
            FieldError(
                "/body/body", f"A {channel} body holds at most {limit} characters.", "max_length"
            )
        )
    for pointer, text in (("/body/subject", subject or ""), ("/body/body", body)):
        for name in unknown_variables(channel, text):
            found.append(
                FieldError(pointer, f"Unknown variable {{{{{name}}}}}.", "unknown_variable")
            )
    return found


def unknown_variables(channel: str, text: str) -> list[str]:
    """The tags of `text` that are not variables of `channel`, as written (stripped)."""
    unknown = []
    for match in _TAG.finditer(text):
        name = _variable(match.group(1))
        if name is None or (name in EMAIL_ONLY and channel != "email"):
            unknown.append(match.group(1).strip())
    return unknown


def _variable(inside: str) -> str | None:
    named = _NAME.fullmatch(inside)
    if named is None or named.group(1) not in VARIABLES:
        return None
    return named.group(1)


def substitute(text: str, values: Mapping[str, str], *, escape: bool = False) -> str:
    """One pass: each declared tag becomes its value (HTML-escaped when `escape`); the text
    between tags is escaped too when `escape`; an undeclared tag stays as written."""
    out: list[str] = []
    last = 0
    for match in _TAG.finditer(text):
        name = _variable(match.group(1))
        if name is None:
            continue
        between = text[last : match.start()]
        out.append(html.escape(between) if escape else between)
        value = values.get(name, "")
        out.append(html.escape(value) if escape else value)
        last = match.end()
    rest = text[last:]
    out.append(html.escape(rest) if escape else rest)
    return "".join(out)


def render(
    channel: str,
    subject: str | None,
    body: str,
    values: Mapping[str, str],
    *,
    unsubscribe_url: str | None = None,
) -> Rendered:
    """The message one recipient gets. E-mail carries its unsubscribe link in a footer."""
    if channel != "email":
        return Rendered(None, substitute(body, values), None)
    values = {**values, "unsubscribe_url": unsubscribe_url or ""}
    text = substitute(body, values)
    paragraphs = [p for p in re.split(r"\n\s*\n", body) if p.strip()]
    html_body = "".join(
        "<p>" + substitute(p, values, escape=True).replace("\n", "<br>\n") + "</p>\n"
        for p in paragraphs
    )
    if unsubscribe_url:
        text += f"\n\n--\nTo stop these e-mails: {unsubscribe_url}\n"
        link = html.escape(unsubscribe_url, quote=True)
        html_body += f'<p style="font-size:small"><a href="{link}">Unsubscribe</a></p>\n'
    document = (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head><body>\n'
        f"{html_body}</body></html>\n"
    )
    # A header is one line: a value's line breaks would start another header.
    one_line = " ".join(substitute(subject or "", values).split())
    return Rendered(one_line, text, document)
