"""The console's HTML shells (docs/console.md, "Views"). Pure strings: data is filled in by the page's
script from the SSE feeds, so a page never embeds unescaped stored text; server-side values are
escaped with ``html.escape``. Every region has a fixed size (``static/console.css``) so streamed
data never shifts the layout; every control is a link, button or input (keyboard reachable).
"""

from __future__ import annotations

import html
from typing import Any

_NAV = ("<nav aria-label=console><a href=/console>Active calls</a><a href=/console/escalations>Escalations</a>"
        "<a href=/console/fleet>Fleet</a><a href=/console/phone>Softphone</a></nav>")


def shell(title: str, view: str, body: str, script: str | None = "console.js") -> str:
    """A whole page: head with the stylesheet, navigation (when logged in: ``script`` set), ``body``,
    the view's script."""
    nav = _NAV if script else ""
    tag = f"<script src=/console/static/{script}></script>" if script else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width,initial-scale=1'>"
        f"<title>{html.escape(title)}</title><link rel=stylesheet href=/console/static/console.css></head>"
        f"<body data-view={view}>{nav}{body}"
        f"<p class=status role=status aria-live=polite id=status></p>{tag}</body></html>"
    )


def login(next_page: str = "/console") -> str:
    """The login form; ``next_page`` (a console path, see ``auth.safe_next``) is where it leads."""
    return shell("callbridge console: log in", "login", (
        "<h1>callbridge console</h1><form method=post action=/console/login>"
        f"<input type=hidden name=next value='{html.escape(next_page, quote=True)}'>"
        "<label>Operator token <input name=token type=password autocomplete=current-password required></label> "
        "<button type=submit>Log in</button></form>"), script=None)


def calls() -> str:
    return shell("callbridge console: active calls", "calls", (
        "<h1>Active calls (<span id=count>0</span>)</h1>"
        "<div class=scroll id=calls-region tabindex=0 aria-label='active calls'><table><thead><tr>"
        "<th style=width:20rem>call</th><th>provider</th><th>caller</th><th>state</th><th>duration</th>"
        "<th>language</th><th style=width:9rem>frustration</th><th>cost</th><th>replica</th>"
        "</tr></thead><tbody id=calls></tbody></table></div>"))


def call(call_id: str) -> str:
    safe = html.escape(call_id[:200])
    facts = "".join(f"<div>{label}: <span id={key}>…</span></div>" for key, label in (
        ("state", "State"), ("provider", "Provider"), ("caller", "Caller"), ("replica", "Replica"),
        ("duration", "Duration"), ("language", "Language"), ("cost", "Cost"), ("escalation", "Escalation")))
    return shell(f"call {safe}", "call", (
        f"<h1>Call <span id=cid>{safe}</span></h1><div class=facts>{facts}</div>"
        "<h2>Frustration (latest <span id=frustration>–</span>)</h2>"
        "<svg class=chart id=chart viewBox='0 0 600 160' preserveAspectRatio=none role=img "
        "aria-label='frustration over the call, 0 at the bottom, 1 at the top'><polyline points=''/></svg>"
        "<div class=grid><section><h2>Transcript</h2><ol id=turns class=scroll tabindex=0 aria-label=transcript></ol>"
        "</section><section><h2>Events</h2><ul id=events class=scroll tabindex=0 aria-label=events></ul>"
        "</section></div>"))


def escalations() -> str:
    return shell("callbridge console: escalations", "escalations", (
        "<h1>Escalations</h1><p>In the outbox, awaiting delivery: <span id=pending>0</span></p>"
        "<h2>Recent (pending, delivered, dead-lettered)</h2>"
        "<div class=scroll id=esc-region tabindex=0 aria-label='recent escalations'><table><thead><tr>"
        "<th>escalation</th><th>call</th><th>trigger</th><th>status</th><th>decided at</th>"
        "</tr></thead><tbody id=escalations></tbody></table></div>"
        "<h2>Dead letters (the receiver's answer)</h2>"
        "<div class=scroll id=dead-region tabindex=0 aria-label='dead letters'><table><thead><tr>"
        "<th>escalation</th><th>call</th><th>status</th><th>answer</th><th>action</th>"
        "</tr></thead><tbody id=dead></tbody></table></div>"))


def fleet() -> str:
    return shell("callbridge console: fleet", "fleet", (
        "<h1>Fleet</h1><div class=scroll id=fleet-region tabindex=0 aria-label=replicas><table><thead><tr>"
        "<th>replica</th><th>heartbeat</th><th>calls held</th><th>active calls owned</th><th>state</th>"
        "</tr></thead><tbody id=replicas></tbody></table></div>"))


def phone() -> str:
    """The softphone: call/hang-up buttons, a keypad row, and fixed-size counters (``static/phone.js``)."""
    keys = "".join(f"<button type=button data-digit={d}>{d}</button>" for d in "123456789*0#")
    return shell("callbridge softphone", "phone", (
        "<h1>Softphone</h1><p>Talk to the bot from this browser's microphone; the call shows in the "
        "console like any phone call.</p><p><button type=button id=call>Call</button> "
        "<button type=button id=hangup disabled>Hang up</button></p>"
        f"<p aria-label=keypad>{keys}</p>"
        "<div class=facts><div>Status: <span id=phone-status>idle</span></div>"
        "<div>Call: <a id=call-link href=/console>–</a></div>"
        "<div>Frames sent: <span id=sent>0</span></div><div>Bot audio received: <span id=heard>0</span> ms</div>"
        "<div>Barge-ins (flushes): <span id=clears>0</span></div>"
        "<div>Call state: <span id=call-state>–</span></div><div>Escalation: <span id=call-escalation>–</span></div>"
        "</div><h2>Transcript</h2><ol id=turns class=scroll tabindex=0 aria-label=transcript></ol>"),
        script="phone.js")


def agent(view: dict[str, Any]) -> str:
    """The agent's page, rendered on the server (it needs no script): every value escaped."""
    esc = html.escape
    turns = "".join(f"<li>{esc(t['role'])}: {esc(t['text'])}</li>" for t in view["transcript"])
    tools = "".join(f"<li>{esc(t['name'])}: {esc(t['result'])}</li>" for t in view["tool_results"]) or "<li>none</li>"
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width,initial-scale=1'><title>escalation</title>"
        "<link rel=stylesheet href=/console/static/console.css></head><body data-view=agent>"
        f"<h1>Escalation {esc(view['escalation_id'])}</h1>"
        f"<div class=facts><div>Call: {esc(view['call_id'])}</div><div>Trigger: {esc(view['trigger'])}</div>"
        f"<div>Delivery: {esc(view['status'])}</div><div>Frustration: {view['frustration']}</div></div>"
        f"<h2>Summary</h2><p id=summary>{esc(view['summary'])}</p>"
        f"<h2>Reason</h2><p id=reason>{esc(view['reason']) or '–'}</p>"
        "<h2>Sentiment</h2><svg class=chart viewBox='0 0 600 160' preserveAspectRatio=none role=img "
        f"aria-label='frustration over the call'><polyline points='{esc(view['chart'])}'/></svg>"
        f"<div class=grid><section><h2>Transcript</h2><ol id=turns class=scroll tabindex=0>{turns}</ol></section>"
        f"<section><h2>Tool results</h2><ul id=events class=scroll tabindex=0>{tools}</ul></section></div>"
        "</body></html>"
    )
