"""The local engine's scripted contact-center agent: script loading/validation and a per-call dialogue.

Pure: text in, ``Reply`` out; no I/O except ``load_script`` reading the YAML. English only.

Intent matching is a weighted token-set similarity (Dice coefficient with idf weights over the
script's examples) blended with a character-level fuzzy ratio (``difflib``), so small recognition
errors and paraphrases still land on the right intent. Anything below ``min_similarity`` (or below
the recogniser's ``min_confidence``) takes the fallback path: the small language model turns
off-script speech into wrong in-script words (docs/models/local.md#recogniser), so this path is essential.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .lm import tokenize

DEFAULT_SCRIPT = "script.yaml"

_DIGIT_WORDS = {"zero": "0", "oh": "0", "o": "0", "one": "1", "two": "2", "three": "3", "four": "4",
                "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9"}
_SPOKEN = {v: k for k, v in _DIGIT_WORDS.items() if k not in ("oh", "o")}


class ScriptError(ValueError):
    """The dialogue YAML is missing, unreadable or invalid; the message names the file and field."""


class SlotSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["digits"] = "digits"
    min_digits: int = Field(4, ge=1, le=20)
    max_digits: int = Field(10, ge=1, le=20)
    ask: str
    retry: str


class IntentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    examples: list[str] = Field(min_length=1)
    reply: str = ""
    needs: str | None = None
    action: Literal["reply", "escalate", "end"] = "reply"
    reason: str = "caller asked for a human agent"
    mood: str = "neutral"
    # A business tool (docs/tools.md) to call once the slot is filled, when the session declares it:
    # the agent says ``tool_ack`` and calls it with the slot; the tool's result fills ``tool_reply``.
    tool: str | None = None
    tool_ack: str = "One moment, let me look that up."
    tool_reply: str = ""

    @field_validator("name", "examples", mode="before")
    @classmethod
    def _yaml_booleans(cls, value: Any) -> Any:
        # YAML 1.1 reads bare yes/no/on/off as booleans; callers mean the words.
        def word(v: Any) -> Any:
            return ("yes" if v else "no") if isinstance(v, bool) else v
        return [word(v) for v in value] if isinstance(value, list) else word(value)

    @model_validator(mode="after")
    def _reply_present(self) -> IntentSpec:
        if self.action == "reply" and not self.reply:
            raise ValueError(f"intent {self.name!r}: a reply intent needs `reply`")
        return self


class Script(BaseModel):
    """A validated dialogue script (see the bundled script.yaml for the documented shape)."""

    model_config = ConfigDict(extra="forbid")
    agent: str = "Sam"
    company: str = "Acme"
    greeting: str = Field(min_length=1)
    fallback: list[str] = Field(min_length=1)
    handoff: str = Field(min_length=1)
    goodbye: str = Field(min_length=1)
    anything_else: str = "Is there anything else I can help you with?"
    tool_failed: str = "Sorry, I couldn't check that right now. Please try again later, or I can connect you to a person."
    min_confidence: float = Field(0.35, ge=0.0, le=1.0)
    min_similarity: float = Field(0.45, ge=0.0, le=1.0)
    slots: dict[str, SlotSpec] = Field(default_factory=dict)
    intents: list[IntentSpec] = Field(min_length=1)
    vocabulary: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> Script:
        names = [intent.name for intent in self.intents]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate intent names: {', '.join(dupes)}")
        for intent in self.intents:
            if intent.needs is not None and intent.needs not in self.slots:
                raise ValueError(f"intent {intent.name!r} needs unknown slot {intent.needs!r}")
        return self

    def caller_phrases(self) -> list[str]:
        """Everything a caller is expected to say (for the recogniser's language model)."""
        return [e for intent in self.intents for e in intent.examples] + list(self.vocabulary)


def load_script(path: Path | str | None = None) -> Script:
    """Read and validate a dialogue YAML (default: the bundled one). Raises ``ScriptError``."""
    if path is None:
        text = resources.files(__package__).joinpath(DEFAULT_SCRIPT).read_text(encoding="utf-8")
        where = "bundled script.yaml"
    else:
        where = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise ScriptError(f"local dialogue script {where}: cannot read: {error.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ScriptError(f"local dialogue script {where}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ScriptError(f"local dialogue script {where}: the top level must be a mapping")
    try:
        return Script.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ScriptError(f"local dialogue script {where}: {loc or 'script'}: {first['msg']}") from None


# --- persona ---------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Persona:
    agent: str
    company: str
    greeting: str | None = None


_NAME = re.compile(r"\b(?i:your name is|you are called|you're called|call yourself)\s+([A-Z][a-zA-Z]+)")
_NAME2 = re.compile(r"\bYou are ([A-Z][a-z]+)\b(?!\s+(?:a|an|the)\b)")
_COMPANY = re.compile(r"\b(?:for|at|of)\s+((?:[A-Z][A-Za-z0-9&'-]+)(?:\s+[A-Z][A-Za-z0-9&'-]+)*)")
_GREETING = re.compile(r"greet[^\"“\n]*[\"“]([^\"”]{3,300})[\"”]", re.IGNORECASE)
_NOT_NAMES = {"You", "A", "An", "The", "Your", "Keep", "Always", "Never"}


def persona_from_instructions(instructions: str, script: Script) -> Persona:
    """Agent name, company and greeting override parsed from free-text instructions (best effort:
    the script's values are kept for anything not found)."""
    agent, company, greeting = script.agent, script.company, None
    match = _NAME.search(instructions) or _NAME2.search(instructions)
    if match and match.group(1) not in _NOT_NAMES:
        agent = match.group(1)
    match = _COMPANY.search(instructions)
    if match and match.group(1) not in _NOT_NAMES:
        company = match.group(1)
    match = _GREETING.search(instructions)
    if match:
        greeting = match.group(1).strip()
    return Persona(agent=agent, company=company, greeting=greeting)


_QUOTED = re.compile(r"[\"“]([^\"”]{3,400})[\"”]")
_SAY = re.compile(r"\b(?:say|tell the caller)\b[^:]{0,40}:\s*(.+)", re.IGNORECASE | re.DOTALL)


def line_from_instructions(instructions: str) -> str | None:
    """The line a response's ``instructions`` asks the agent to say: a quoted string, else the text
    after "Say ...:", else the whole instruction when it is short; None when there is nothing."""
    text = instructions.strip()
    if not text:
        return None
    match = _QUOTED.search(text)
    if match:
        return match.group(1).strip()
    match = _SAY.search(text)
    if match:
        return match.group(1).strip()
    if len(text.split()) <= 60:
        return text
    return None


# --- matching --------------------------------------------------------------------------------------

def spoken_digits(number: str) -> str:
    """"4567" -> "four five six seven" (how the agent reads an order number back)."""
    return " ".join(_SPOKEN[d] for d in number if d in _SPOKEN)


def extract_digits(words: list[str]) -> str:
    """Digits spoken in a word list ("four five six seven" -> "4567"); "oh" counts as zero only next
    to another digit word."""
    out = []
    for i, word in enumerate(words):
        if word in ("oh", "o"):
            near = (i > 0 and words[i - 1] in _DIGIT_WORDS) or (i + 1 < len(words) and words[i + 1] in _DIGIT_WORDS)
            if near:
                out.append("0")
        elif word in _DIGIT_WORDS:
            out.append(_DIGIT_WORDS[word])
    return "".join(out)


class IntentMatcher:
    """Scores an utterance against every intent's examples; ``best`` returns (intent, score 0-1)."""

    def __init__(self, intents: list[IntentSpec]) -> None:
        self.intents = intents
        self._examples = [(intent, tokenize(e), " ".join(tokenize(e))) for intent in intents for e in intent.examples]
        df: Counter[str] = Counter()
        for _, words, _ in self._examples:
            df.update(set(words))
        n = len(self._examples)
        self._idf = {w: math.log(1.0 + n / c) for w, c in df.items()}
        self._unknown_idf = math.log(1.0 + n)

    def _weight(self, word: str) -> float:
        return self._idf.get(word, self._unknown_idf)

    def score(self, words: list[str], example: list[str], example_text: str) -> float:
        a, b = set(words), set(example)
        if not a or not b:
            return 0.0
        common = sum(self._weight(w) for w in a & b)
        dice = 2.0 * common / (sum(self._weight(w) for w in a) + sum(self._weight(w) for w in b))
        fuzzy = difflib.SequenceMatcher(None, " ".join(words), example_text, autojunk=False).ratio()
        return 0.7 * dice + 0.3 * fuzzy

    def best(self, words: list[str]) -> tuple[IntentSpec | None, float]:
        best: tuple[IntentSpec | None, float] = (None, 0.0)
        for intent, example, text in self._examples:
            s = self.score(words, example, text)
            if s > best[1]:
                best = (intent, s)
        return best


# --- the per-call dialogue -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Reply:
    """What the agent does for one turn: say ``text`` (may be empty) and/or call ``tool``."""

    text: str
    intent: str
    tool: tuple[str, dict[str, Any]] | None = None
    end_call: bool = False


@dataclass
class Dialogue:
    """One call's dialogue state. Not thread-safe; cheap (microseconds per turn)."""

    script: Script
    matcher: IntentMatcher
    persona: Persona
    awaiting: IntentSpec | None = None  # intent waiting for its slot
    fallbacks: int = 0
    offered_handoff: bool = False
    slots: dict[str, str] = field(default_factory=dict)
    tool_intent: IntentSpec | None = None  # the intent whose business tool call is outstanding

    @classmethod
    def create(cls, script: Script, matcher: IntentMatcher | None = None, instructions: str = "") -> Dialogue:
        return cls(script=script, matcher=matcher or IntentMatcher(script.intents),
                   persona=persona_from_instructions(instructions, script))

    def set_instructions(self, instructions: str) -> None:
        self.persona = persona_from_instructions(instructions, self.script)

    def fill(self, template: str) -> str:
        return template.format_map(_Defaults(**self._fields()))

    def greeting(self) -> Reply:
        return Reply(self.persona.greeting or self.fill(self.script.greeting), intent="greeting")

    def handoff_line(self) -> str:
        return self.fill(self.script.handoff)

    def _fallback(self) -> Reply:
        lines = self.script.fallback
        text = lines[min(self.fallbacks, len(lines) - 1)]
        self.fallbacks += 1
        if self.fallbacks >= len(lines):
            self.offered_handoff = True
        return Reply(self.fill(text), intent="fallback")

    def _escalate(self, intent: IntentSpec | None, reason: str, mood: str, tools: frozenset[str]) -> Reply:
        self.awaiting = None
        name = intent.name if intent else "escalate"
        if "escalate_to_human" in tools:
            return Reply("", intent=name, tool=("escalate_to_human", {"reason": reason, "caller_mood": mood}))
        return Reply(self.handoff_line(), intent=name)

    def _answer(self, intent: IntentSpec, words: list[str], tools: frozenset[str]) -> Reply:
        if intent.action == "escalate":
            return self._escalate(intent, intent.reason, intent.mood, tools)
        if intent.action == "end":
            return Reply(self.fill(self.script.goodbye), intent=intent.name, end_call=True)
        if intent.needs is not None:
            spec = self.script.slots[intent.needs]
            digits = extract_digits(words)
            if spec.min_digits <= len(digits) <= spec.max_digits:
                self.slots[intent.needs] = digits
            elif intent.needs not in self.slots:
                self.awaiting = intent
                return Reply(self.fill(spec.ask), intent=intent.name)
        self.awaiting = None
        if intent.tool is not None and intent.tool in tools:
            self.tool_intent = intent
            return Reply(self.fill(intent.tool_ack), intent=intent.name,
                         tool=(intent.tool, {intent.needs: self.slots[intent.needs]} if intent.needs else {}))
        return Reply(self.fill(intent.reply), intent=intent.name)

    def tool_result(self, output: str) -> Reply:
        """The reply once a business tool answered: its result's string fields fill the intent's
        ``tool_reply`` (its plain ``reply`` without one); a failure output gets ``tool_failed``."""
        intent, self.tool_intent = self.tool_intent, None
        try:
            value = json.loads(output)
        except ValueError:
            value = None
        result = value.get("result") if isinstance(value, dict) and value.get("ok") is True else None
        if intent is None or not isinstance(result, dict):
            return Reply(self.fill(self.script.tool_failed), intent="tool_failed")
        fields = {k: str(v) for k, v in result.items() if isinstance(v, str | int | float)}
        text = (intent.tool_reply or intent.reply).format_map(_Defaults({**fields, **self._fields()}))
        return Reply(text, intent=intent.name)

    def _fields(self) -> dict[str, str]:
        number = self.slots.get("order_number", "")
        return {"agent": self.persona.agent, "company": self.persona.company, "order_number": number,
                "order_number_spoken": spoken_digits(number)}

    def respond(self, transcript: str, confidence: float = 1.0, tools: frozenset[str] = frozenset()) -> Reply:
        """The agent's reply to one caller turn. ``confidence`` is the recogniser's (1.0 for text)."""
        words = tokenize(transcript)
        if not words or confidence < self.script.min_confidence:
            return self._fallback()
        intent, similarity = self.matcher.best(words)
        if self.awaiting is not None:
            spec = self.script.slots[self.awaiting.needs or ""]
            digits = extract_digits(words)
            if spec.min_digits <= len(digits) <= spec.max_digits:
                self.slots[self.awaiting.needs or ""] = digits
                self.fallbacks = 0
                return self._answer(self.awaiting, words, tools)
            if intent is not None and similarity >= self.script.min_similarity and intent.action != "reply":
                return self._answer(intent, words, tools)
            self.fallbacks += 1
            if self.fallbacks > len(self.script.fallback):
                self.offered_handoff = True
                return Reply(self.fill(self.script.fallback[-1]), intent="fallback")
            return Reply(self.fill(spec.retry), intent=self.awaiting.name)
        if intent is None or similarity < self.script.min_similarity:
            digits = extract_digits(words)
            for candidate in self.script.intents:  # a bare order number: the first intent needing one
                slot = self.script.slots.get(candidate.needs or "")
                if slot is not None and slot.min_digits <= len(digits) <= slot.max_digits:
                    self.fallbacks = 0
                    return self._answer(candidate, words, tools)
            return self._fallback()
        if self.offered_handoff and intent.name == "yes":
            return self._escalate(None, "caller could not be understood", "neutral", tools)
        self.fallbacks = 0
        self.offered_handoff = False
        return self._answer(intent, words, tools)


class _Defaults(dict[str, str]):
    """format_map mapping that leaves unknown placeholders visible instead of raising."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"
