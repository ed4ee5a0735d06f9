"""A protocol-exact stand-in for the part of Twilio's REST API a conference transfer uses, with
simulated agents (docs/providers/twilio.md#rest-transfer, #warm-transfer).

``TwilioRestStandIn(standin, agents)`` serves, on 127.0.0.1 (uvicorn, ``async with``):

- ``POST /2010-04-01/Accounts/{AccountSid}/Calls.json`` (create: ``To``, ``From``, ``Url``,
  ``StatusCallback``, ``MachineDetection``, ``Timeout``) -> 201 ``{"sid": "CA..."}``, then plays the
  agent ``agents[To]`` (``answer``, ``machine``, ``busy``, ``no-answer``, ``failed``) in a task: an
  answering agent makes Twilio's signed request to ``Url`` (with ``AnsweredBy`` when machine detection
  was asked for), hears the ``<Say>`` there and joins the ``<Dial><Conference>``; every agent call
  ends with the signed ``StatusCallback`` (``CallStatus``).
- ``POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`` (update with ``Twiml``) -> 200, the
  TwiML kept in ``updates``.

HTTP Basic auth must be ``AccountSid:AuthToken`` (401 otherwise, counted in ``violations``). Agents
dialled are kept as ``service.simcaller.twilio_transfer.AgentLeg`` records. Bounded: at most 20
agent calls per stand-in (a gateway that keeps dialling is a violation, not a loop).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.simcaller.twilio_caller import TwilioCallerStandIn, new_sid
from service.simcaller.twilio_transfer import AgentLeg

MAX_AGENT_CALLS = 20


@dataclass
class RestAgentCall:
    """One agent call placed through REST: the create form, the leg as the agent lived it, the conference joined."""

    sid: str
    form: dict[str, str]
    leg: AgentLeg
    conference: str = ""
    status_callback_status: int | None = None


@dataclass
class CallUpdate:
    call_sid: str
    twiml: str


@dataclass
class _State:
    calls: list[RestAgentCall] = field(default_factory=list)
    updates: list[CallUpdate] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)


class TwilioRestStandIn:
    """See the module docstring. ``url`` is the API base to configure as ``CALLBRIDGE_TWILIO_API_BASE``."""

    def __init__(self, standin: TwilioCallerStandIn, agents: Mapping[str, str], *, port: int) -> None:
        self.standin = standin
        self.agents = dict(agents)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.state = _State()
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        app = Starlette(routes=[
            Route("/2010-04-01/Accounts/{account}/Calls.json", self._create, methods=["POST"]),
            Route("/2010-04-01/Accounts/{account}/Calls/{call_sid}.json", self._update, methods=["POST"]),
        ])
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                                     lifespan="off"))
        self._serve: asyncio.Task[None] | None = None

    @property
    def calls(self) -> list[RestAgentCall]:
        return self.state.calls

    @property
    def updates(self) -> list[CallUpdate]:
        return self.state.updates

    @property
    def violations(self) -> list[str]:
        return self.state.violations

    async def __aenter__(self) -> TwilioRestStandIn:
        self._serve = asyncio.create_task(self._server.serve())
        async with asyncio.timeout(10):
            while not self._server.started:
                if self._serve.done():
                    self._serve.result()
                await asyncio.sleep(0.01)  # uvicorn exposes no started event; bounded poll
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._server.should_exit = True
        if self._serve is not None:
            with contextlib.suppress(Exception):
                await self._serve

    async def wait_for(self, predicate: object, timeout_s: float = 15.0) -> None:
        """Until ``predicate()`` holds (re-checked whenever a call or an update lands)."""
        assert callable(predicate)
        async with asyncio.timeout(timeout_s):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    def _authorised(self, request: Request) -> bool:
        expected = f"{self.standin.account_sid}:{self.standin.auth_token}"
        header = request.headers.get("authorization", "")
        try:
            ok = header.startswith("Basic ") and base64.b64decode(header[6:]).decode() == expected
        except ValueError:
            ok = False
        if not ok or request.path_params["account"] != self.standin.account_sid:
            self.state.violations.append(f"bad REST credentials on {request.url.path}")
            return False
        return True

    async def _create(self, request: Request) -> Response:
        if not self._authorised(request):
            return JSONResponse({"code": 20003, "message": "Authenticate"}, status_code=401)
        form = {key: str(value) for key, value in (await request.form()).items()}
        missing = [name for name in ("To", "From", "Url") if not form.get(name)]
        if missing:
            self.state.violations.append(f"Calls.json create without {missing}")
            return JSONResponse({"code": 21201, "message": f"missing {missing}"}, status_code=400)
        if len(self.state.calls) >= MAX_AGENT_CALLS:
            self.state.violations.append("too many agent calls: the gateway keeps dialling")
            return JSONResponse({"code": 20429, "message": "too many"}, status_code=429)
        call = RestAgentCall(new_sid("CA"), form, AgentLeg(target=form["To"], behaviour=self.agents.get(form["To"],
                                                                                                        "answer")))
        self.state.calls.append(call)
        task = asyncio.create_task(self._play_agent(call))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._changed.set()
        return JSONResponse({"sid": call.sid, "status": "queued", "to": form["To"]}, status_code=201)

    async def _update(self, request: Request) -> Response:
        if not self._authorised(request):
            return JSONResponse({"code": 20003, "message": "Authenticate"}, status_code=401)
        form = {key: str(value) for key, value in (await request.form()).items()}
        self.state.updates.append(CallUpdate(request.path_params["call_sid"], form.get("Twiml", "")))
        self._changed.set()
        return JSONResponse({"sid": request.path_params["call_sid"], "status": "in-progress"})

    async def _play_agent(self, call: RestAgentCall) -> None:
        leg, form = call.leg, call.form
        base = self.standin.call_form(call.sid, form["From"], form["To"], status="in-progress")
        base["Direction"] = "outbound-api"
        status = {"busy": "busy", "no-answer": "no-answer", "failed": "failed"}.get(leg.behaviour, "completed")
        try:
            if leg.behaviour in ("answer", "machine"):
                answer = dict(base)
                if form.get("MachineDetection"):
                    leg.answered_by = "machine_start" if leg.behaviour == "machine" else "human"
                    answer["AnsweredBy"] = leg.answered_by
                response = await self.standin.post_signed(form["Url"], answer)
                leg.whisper_status = response.status_code
                if response.status_code == 200:
                    for verb in ET.fromstring(response.text):
                        if verb.tag == "Say":
                            leg.heard.append(verb.text or "")
                            leg.say_language, leg.say_voice = verb.get("language", ""), verb.get("voice", "")
                        elif verb.tag == "Dial":
                            room = verb.find("Conference")
                            if room is not None:
                                call.conference = (room.text or "").strip()
                                leg.bridged = True
                else:
                    self.state.violations.append(f"agent Url answered HTTP {response.status_code}")
            leg.dial_status = status
            if form.get("StatusCallback"):
                done = {**base, "CallStatus": status, "CallDuration": "30" if leg.bridged else "0"}
                response = await self.standin.post_signed(form["StatusCallback"], done)
                call.status_callback_status = response.status_code
                if response.status_code >= 300:
                    self.state.violations.append(f"StatusCallback answered HTTP {response.status_code}")
        finally:
            self._changed.set()
