"""Model sessions from settings: the persona, the session configuration, the wire dialect and how
to open the call's own session (the embedded engine in-process, or a WebSocket). The provider routes
hand these to ``service.call.session.CallSession``; the call core never picks a dialect itself."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from service.call.toolargs import ESCALATION_TOOL_NAME
from service.config import Settings
from service.realtime.events import FunctionTool, RealtimeDialect, RealtimeTransport, SessionConfig
from service.realtime.protocol import dialect_for
from service.tools.registry import declared_tools

ESCALATION_TOOL = FunctionTool(
    name=ESCALATION_TOOL_NAME,
    description=(
        "Transfer the caller to a human agent. Use it when the caller asks for a person, is clearly angry "
        "or distressed, or you cannot resolve the request. Tell the caller you are connecting them first."
    ),
    parameters={
        "type": "object",
        "properties": {
            "reason": {"type": "string", "description": "Why the caller needs a human, in a few words."},
            "caller_mood": {"type": "string", "enum": ["calm", "confused", "frustrated", "angry"]},
        },
        "required": ["reason", "caller_mood"],
    },
)


def load_instructions(settings: Settings) -> str:
    """The persona: ``CALLBRIDGE_INSTRUCTIONS_FILE`` or the bundled empathetic support agent."""
    if settings.instructions_file is not None:
        return Path(settings.instructions_file).read_text(encoding="utf-8")
    return resources.files("service.personas").joinpath("support_agent.md").read_text(encoding="utf-8")


def session_config_from(settings: Settings, extra_tools: tuple[FunctionTool, ...] = ()) -> SessionConfig:
    """The session configuration; ``extra_tools``: the business tools (docs/tools.md) after the escalation tool."""
    return SessionConfig(
        instructions=load_instructions(settings),
        voice=settings.voice,
        vad_threshold=settings.vad_threshold,
        vad_prefix_padding_ms=settings.vad_prefix_padding_ms,
        vad_silence_duration_ms=settings.vad_silence_duration_ms,
        temperature=settings.temperature,
        max_output_tokens=settings.max_output_tokens,
        transcription_model=settings.input_transcription_model,
        reasoning_effort=settings.realtime_reasoning_effort,
        transcription_language=settings.transcription_language,
        tools=(ESCALATION_TOOL, *extra_tools),
    )


async def open_realtime(settings: Settings) -> RealtimeTransport:
    """Open the call's own Realtime session: the embedded engine in-process, or a WebSocket."""
    if settings.provider == "local" and not settings.realtime_url:
        from service.realtime.local import open_local_session

        return await open_local_session(settings)
    from service.realtime.client import connect_realtime

    return await connect_realtime(settings)


def dialect_from(settings: Settings) -> RealtimeDialect:
    """The wire dialect of this deployment's model (the embedded engine speaks GA)."""
    return dialect_for("ga" if settings.provider == "local" else settings.realtime_dialect)


@dataclass(frozen=True, slots=True)
class ModelSide:
    """What a call needs to run its model session: a fresh dialect per call, the configuration,
    and the opener (``open(settings)`` returns a connected transport)."""

    dialect: RealtimeDialect
    config: SessionConfig
    open: Callable[[Settings], Awaitable[RealtimeTransport]]


def model_side(settings: Settings) -> ModelSide:
    """A call's model side from settings (a pre-warmed session gets the same): the escalation tool
    plus the business tools of ``CALLBRIDGE_TOOLS_FILE``. ``open_realtime`` is looked up at call
    time (tests swap it)."""
    tools = declared_tools(settings.tools_file) if settings.tools_file is not None else ()
    return ModelSide(dialect_from(settings), session_config_from(settings, tools), lambda s: open_realtime(s))
