"""TwilioDialect (wire parse/build), TwiML builders and X-Twilio-Signature validation (docs/providers/twilio.md)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.datastructures import FormData

from service.providers.base import (
    DtmfReceived,
    MarkEchoed,
    MediaReceived,
    ProtocolError,
    StreamConnected,
    StreamStarted,
    StreamStopped,
    TelephonyDialect,
)
from service.providers.twilio.dialect import (
    STREAM_TOKEN_PARAMETER,
    TwilioDialect,
    after_stream_twiml,
    compute_twilio_signature,
    connect_stream_twiml,
    redirect_twiml,
    reject_twiml,
    stream_url,
    validate_twilio_request,
)

SID = "MZ" + "0123456789abcdef" * 2
CALL = "CA" + "fedcba9876543210" * 2
ACCOUNT = "AC" + "00112233445566778899aabbccddeeff"
AUDIO = bytes(range(256))[:160]


def start_msg(**overrides: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "event": "start",
        "sequenceNumber": "1",
        "start": {
            "accountSid": ACCOUNT, "streamSid": SID, "callSid": CALL, "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": {"stream_token": "tok", "tenant": "acme"},
        },
        "streamSid": SID,
    }
    msg.update(overrides)
    return msg


def media_msg(seq: int = 2, payload: bytes = AUDIO, **media_over: Any) -> dict[str, Any]:
    media: dict[str, Any] = {"track": "inbound", "chunk": str(seq - 1), "timestamp": str((seq - 2) * 20),
                             "payload": base64.b64encode(payload).decode()}
    media.update(media_over)
    return {"event": "media", "sequenceNumber": str(seq), "media": media, "streamSid": SID}


def started() -> TwilioDialect:
    dialect = TwilioDialect()
    dialect.parse(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
    dialect.parse(json.dumps(start_msg()))
    return dialect


def test_implements_the_protocol() -> None:
    dialect: TelephonyDialect = TwilioDialect()
    assert dialect.name == "twilio"


def test_full_stream_sequence_parses_to_typed_events() -> None:
    dialect = TwilioDialect()
    events = [dialect.parse(json.dumps(m)) for m in (
        {"event": "connected", "protocol": "Call", "version": "1.0.0"},
        start_msg(),
        media_msg(2),
        {"event": "dtmf", "streamSid": SID, "sequenceNumber": "3", "dtmf": {"track": "inbound_track", "digit": "#"}},
        {"event": "mark", "sequenceNumber": "4", "streamSid": SID, "mark": {"name": "item_1:1600"}},
        {"event": "stop", "sequenceNumber": "5", "stop": {"accountSid": ACCOUNT, "callSid": CALL}, "streamSid": SID},
    )]
    assert events == [
        StreamConnected(protocol="Call", version="1.0.0"),
        StreamStarted(stream_id=SID, call_id=CALL, account_id=ACCOUNT,
                      custom_parameters={"stream_token": "tok", "tenant": "acme"}),
        MediaReceived(payload=AUDIO, timestamp_ms=0, chunk=1),
        DtmfReceived(digit="#"),
        MarkEchoed(name="item_1:1600"),
        StreamStopped(call_id=CALL),
    ]
    assert dialect.stream_sid == SID and dialect.call_sid == CALL and dialect.account_sid == ACCOUNT
    assert dialect.last_sequence_number == 5
    assert dialect.stopped


def test_numeric_strings_become_ints_and_bytes_frames_are_accepted() -> None:
    dialect = started()
    event = dialect.parse(json.dumps(media_msg(7, chunk="123456", timestamp="98760")).encode())
    assert isinstance(event, MediaReceived)
    assert (event.chunk, event.timestamp_ms) == (123456, 98760)
    assert dialect.last_sequence_number == 7


def test_start_without_custom_parameters_gives_empty_dict() -> None:
    msg = start_msg()
    del msg["start"]["customParameters"]
    event = TwilioDialect().parse(json.dumps(msg))
    assert isinstance(event, StreamStarted) and event.custom_parameters == {}


def _without(d: dict[str, Any], *path: str) -> dict[str, Any]:
    copy = json.loads(json.dumps(d))
    target = copy
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return copy


def _with(d: dict[str, Any], value: Any, *path: str) -> dict[str, Any]:
    copy = json.loads(json.dumps(d))
    target = copy
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return copy


MALFORMED_AFTER_START: list[tuple[str, str | bytes, str]] = [
    ("not json", "{nope", "not valid JSON"),
    ("invalid utf-8", b"\xff\xfe{", "not valid JSON"),
    ("deep nesting", "[" * 100000 + "]" * 100000, "not valid JSON"),
    ("array", "[1,2]", "JSON object"),
    ("string", '"media"', "JSON object"),
    ("no event", json.dumps({"streamSid": SID}), "no string 'event'"),
    ("event not str", json.dumps({"event": 5}), "no string 'event'"),
    ("unknown event", json.dumps({"event": "clear", "streamSid": SID}), "unknown event"),
    ("media no streamSid", json.dumps(_without(media_msg(), "streamSid")), "without streamSid"),
    ("media other stream", json.dumps(_with(media_msg(), "MZ" + "1" * 32, "streamSid")), "another streamSid"),
    ("media missing", json.dumps(_without(media_msg(), "media")), "media.media is missing"),
    ("media not object", json.dumps(_with(media_msg(), [], "media")), "must be an object"),
    ("payload missing", json.dumps(_without(media_msg(), "media", "payload")), "payload is missing"),
    ("payload not str", json.dumps(_with(media_msg(), 12, "media", "payload")), "must be a string"),
    ("payload empty", json.dumps(media_msg(payload=b"")), "payload is empty"),
    ("payload bad base64", json.dumps(_with(media_msg(), "!!!!", "media", "payload")), "not valid base64"),
    ("payload bad padding", json.dumps(_with(media_msg(), "AAA", "media", "payload")), "not valid base64"),
    ("payload whitespace", json.dumps(_with(media_msg(), "AA AA", "media", "payload")), "not valid base64"),
    ("outbound track", json.dumps(_with(media_msg(), "outbound", "media", "track")), "media.track"),
    ("chunk missing", json.dumps(_without(media_msg(), "media", "chunk")), "media.chunk"),
    ("chunk not numeric", json.dumps(_with(media_msg(), "x1", "media", "chunk")), "media.chunk"),
    ("chunk negative", json.dumps(_with(media_msg(), "-1", "media", "chunk")), "media.chunk"),
    ("chunk float", json.dumps(_with(media_msg(), 1.5, "media", "chunk")), "media.chunk"),
    ("chunk bool", json.dumps(_with(media_msg(), True, "media", "chunk")), "media.chunk"),
    ("chunk unicode digit", json.dumps(_with(media_msg(), "\u0663", "media", "chunk")), "media.chunk"),
    ("timestamp missing", json.dumps(_without(media_msg(), "media", "timestamp")), "media.timestamp"),
    ("sequence not numeric", json.dumps(_with(media_msg(), "two", "sequenceNumber")), "sequenceNumber"),
    ("mark no name", json.dumps({"event": "mark", "streamSid": SID, "mark": {}}), "mark.name is missing"),
    ("mark name int", json.dumps({"event": "mark", "streamSid": SID, "mark": {"name": 3}}), "must be a string"),
    ("mark body list", json.dumps({"event": "mark", "streamSid": SID, "mark": []}), "mark must be an object"),
    ("dtmf bad digit", json.dumps({"event": "dtmf", "streamSid": SID, "dtmf": {"digit": "12"}}), "dtmf.digit"),
    ("dtmf letter", json.dumps({"event": "dtmf", "streamSid": SID, "dtmf": {"digit": "x"}}), "dtmf.digit"),
    ("dtmf missing", json.dumps({"event": "dtmf", "streamSid": SID}), "dtmf must be an object"),
    ("stop bad body", json.dumps({"event": "stop", "streamSid": SID, "stop": "x"}), "stop must be an object"),
    ("second start", json.dumps(start_msg()), "second 'start'"),
    ("connected after start", json.dumps({"event": "connected"}), "'connected' after 'start'"),
]


@pytest.mark.parametrize(("frame", "expected"), [(f, e) for _, f, e in MALFORMED_AFTER_START],
                         ids=[name for name, _, _ in MALFORMED_AFTER_START])
def test_malformed_frames_raise_protocol_error_and_leave_state(frame: str | bytes, expected: str) -> None:
    dialect = started()
    before = (dialect.stream_sid, dialect.call_sid, dialect.last_sequence_number, dialect.stopped)
    with pytest.raises(ProtocolError, match=expected):
        dialect.parse(frame)
    assert (dialect.stream_sid, dialect.call_sid, dialect.last_sequence_number, dialect.stopped) == before
    # The stream goes on after a bad frame.
    assert isinstance(dialect.parse(json.dumps(media_msg(9))), MediaReceived)


BAD_STARTS: list[tuple[str, dict[str, Any], str]] = [
    ("no streamSid", _without(start_msg(), "streamSid"), "streamSid is missing"),
    ("empty streamSid", _with(start_msg(), "", "streamSid"), "streamSid is empty"),
    ("inner sid differs", _with(start_msg(), "MZ" + "9" * 32, "start", "streamSid"), "differs"),
    ("no start body", _without(start_msg(), "start"), "start must be an object"),
    ("no callSid", _without(start_msg(), "start", "callSid"), "callSid is missing"),
    ("callSid int", _with(start_msg(), 5, "start", "callSid"), "callSid must be a string"),
    ("empty callSid", _with(start_msg(), "", "start", "callSid"), "callSid is empty"),
    ("no accountSid", _without(start_msg(), "start", "accountSid"), "accountSid is missing"),
    ("no mediaFormat", _without(start_msg(), "start", "mediaFormat"), "mediaFormat must be an object"),
    ("alaw", _with(start_msg(), "audio/x-alaw", "start", "mediaFormat", "encoding"), "unsupported media encoding"),
    ("16 kHz", _with(start_msg(), 16000, "start", "mediaFormat", "sampleRate"), "unsupported sample rate"),
    ("stereo", _with(start_msg(), 2, "start", "mediaFormat", "channels"), "unsupported channel count"),
    ("rate str junk", _with(start_msg(), "8k", "start", "mediaFormat", "sampleRate"), "sampleRate"),
    ("outbound tracks", _with(start_msg(), ["outbound"], "start", "tracks"), "start.tracks"),
    ("params not object", _with(start_msg(), ["a"], "start", "customParameters"), "customParameters must be"),
    ("param value int", _with(start_msg(), {"a": 1}, "start", "customParameters"), "must be a string"),
]


@pytest.mark.parametrize(("msg", "expected"), [(m, e) for _, m, e in BAD_STARTS], ids=[n for n, _, _ in BAD_STARTS])
def test_bad_start_is_rejected_and_stream_stays_unstarted(msg: dict[str, Any], expected: str) -> None:
    dialect = TwilioDialect()
    with pytest.raises(ProtocolError, match=expected):
        dialect.parse(json.dumps(msg))
    assert not dialect.started
    with pytest.raises(ProtocolError, match="before 'start'"):
        dialect.parse(json.dumps(media_msg()))
    assert isinstance(dialect.parse(json.dumps(start_msg())), StreamStarted)


@pytest.mark.parametrize("event", ["media", "mark", "dtmf", "stop"])
def test_messages_before_start_are_rejected(event: str) -> None:
    msg = {"media": media_msg(), "mark": {"event": "mark", "streamSid": SID, "mark": {"name": "a"}},
           "dtmf": {"event": "dtmf", "streamSid": SID, "dtmf": {"digit": "1"}},
           "stop": {"event": "stop", "streamSid": SID}}[event]
    with pytest.raises(ProtocolError, match=f"'{event}' before 'start'"):
        TwilioDialect().parse(json.dumps(msg))


def test_anything_after_stop_is_rejected() -> None:
    dialect = started()
    assert isinstance(dialect.parse(json.dumps({"event": "stop", "streamSid": SID})), StreamStopped)
    with pytest.raises(ProtocolError, match="after 'stop'"):
        dialect.parse(json.dumps(media_msg()))


def test_stop_without_body_reports_the_started_call() -> None:
    dialect = started()
    assert dialect.parse(json.dumps({"event": "stop", "streamSid": SID})) == StreamStopped(call_id=CALL)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_parse_never_raises_anything_but_protocol_error_on_garbage(frame: str | bytes) -> None:
    dialect = started()
    try:
        dialect.parse(frame)
    except ProtocolError:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10**20) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3),
    max_leaves=10,
)


@settings(max_examples=400, deadline=None)
@given(event=st.sampled_from(["connected", "start", "media", "mark", "dtmf", "stop"]),
       fields=st.dictionaries(
           st.sampled_from(["streamSid", "sequenceNumber", "start", "media", "mark", "dtmf", "stop"]),
           json_values, max_size=5))
def test_parse_of_twilio_shaped_junk_raises_only_protocol_error(event: str, fields: dict[str, Any]) -> None:
    for dialect in (TwilioDialect(), started()):
        try:
            dialect.parse(json.dumps({"event": event, **fields}))
        except ProtocolError:
            pass


def test_builders_emit_exact_twilio_json() -> None:
    dialect = started()
    media = dialect.build_media(AUDIO)
    assert media == ('{"event":"media","streamSid":"' + SID + '","media":{"payload":"'
                     + base64.b64encode(AUDIO).decode() + '"}}')
    assert json.loads(media) == {"event": "media", "streamSid": SID, "media": {"payload": base64.b64encode(AUDIO).decode()}}
    assert dialect.build_mark('it"em\\1') == '{"event":"mark","streamSid":"' + SID + '","mark":{"name":"it\\"em\\\\1"}}'
    assert json.loads(dialect.build_mark('it"em\\1'))["mark"]["name"] == 'it"em\\1'
    assert dialect.build_clear() == '{"event":"clear","streamSid":"' + SID + '"}'


def test_builders_refuse_before_start_and_bad_input() -> None:
    dialect = TwilioDialect()
    for build in (lambda: dialect.build_media(AUDIO), lambda: dialect.build_mark("a"), dialect.build_clear):
        with pytest.raises(ProtocolError, match="no stream has started"):
            build()
    dialect = started()
    with pytest.raises(ProtocolError, match="empty"):
        dialect.build_media(b"")
    with pytest.raises(ProtocolError, match="string"):
        dialect.build_mark(5)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=4000), st.text(max_size=50))
def test_built_frames_round_trip(audio: bytes, name: str) -> None:
    dialect = started()
    assert base64.b64decode(json.loads(dialect.build_media(audio))["media"]["payload"]) == audio
    assert json.loads(dialect.build_mark(name)) == {"event": "mark", "streamSid": SID, "mark": {"name": name}}


def test_media_parse_cost_is_small() -> None:
    dialect = started()
    frames = [json.dumps(media_msg(i + 2)) for i in range(2000)]
    t0 = time.perf_counter()
    for frame in frames:
        dialect.parse(frame)
    per_frame_us = (time.perf_counter() - t0) / len(frames) * 1e6
    t0 = time.perf_counter()
    for _ in range(2000):
        dialect.build_media(AUDIO)
    build_us = (time.perf_counter() - t0) / 2000 * 1e6
    print(f"media parse {per_frame_us:.2f} us/frame, build {build_us:.2f} us/frame")
    # A sanity bound, not a benchmark (load_tests/bench_audio.py measures the real cost, a few us):
    # 10 % of the 20 ms frame budget, which even a starved, shared 2-core machine stays far below.
    assert per_frame_us < 2000 and build_us < 2000


# --- TwiML ----------------------------------------------------------------------------------------


def _xml(text: str) -> ET.Element:
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    return ET.fromstring(text)


@pytest.mark.parametrize(("public", "ws"), [
    ("http://127.0.0.1:8080", "ws://127.0.0.1:8080/twilio/media"),
    ("https://gw.example.com", "wss://gw.example.com/twilio/media"),
    ("https://gw.example.com:8443/prefix", "wss://gw.example.com:8443/prefix/twilio/media"),
    ("https://gw.example.com/prefix/", "wss://gw.example.com/prefix/twilio/media"),
])
def test_stream_url_maps_scheme_and_keeps_port_and_prefix(public: str, ws: str) -> None:
    assert stream_url(public) == ws


def test_connect_stream_twiml_shape() -> None:
    root = _xml(connect_stream_twiml("https://gw.example.com:8443/p", "tok.en", {"tenant": "a&b<\"c"}))
    assert root.tag == "Response"
    assert [child.tag for child in root] == ["Connect", "Redirect"]
    stream = root.find("Connect/Stream")
    assert stream is not None and stream.get("url") == "wss://gw.example.com:8443/p/twilio/media"
    params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    assert params == {STREAM_TOKEN_PARAMETER: "tok.en", "tenant": "a&b<\"c"}
    redirect = root.find("Redirect")
    assert redirect is not None and redirect.get("method") == "POST"
    assert redirect.text == "https://gw.example.com:8443/p/twilio/after-stream"


def test_connect_stream_twiml_options_and_errors() -> None:
    root = _xml(connect_stream_twiml("http://h:1", "t", {}, "/x/after", status_callback_path="/twilio/stream-status"))
    stream = root.find("Connect/Stream")
    assert stream is not None and stream.get("statusCallback") == "http://h:1/twilio/stream-status"
    assert root.findtext("Redirect") == "http://h:1/x/after"
    with pytest.raises(ValueError, match="reserved"):
        connect_stream_twiml("http://h", "t", {STREAM_TOKEN_PARAMETER: "x"})
    for bad in ("ftp://h", "h:80", "https://h/?q=1"):
        with pytest.raises(ValueError):
            connect_stream_twiml(bad, "t", {})


def test_after_stream_twiml_variants() -> None:
    assert [c.tag for c in _xml(after_stream_twiml(False, "support", "+15551234567"))] == ["Hangup"]
    enqueue = _xml(after_stream_twiml(True, "support", ""))
    assert enqueue.findtext("Enqueue") == "support"
    number = _xml(after_stream_twiml(True, "support", "+15551234567"))
    assert number.findtext("Dial/Number") == "+15551234567"
    sip = _xml(after_stream_twiml(True, "support", "sip:queue@pbx.example.com"))
    assert sip.findtext("Dial/Sip") == "sip:queue@pbx.example.com"
    with pytest.raises(ValueError):
        after_stream_twiml(True, " ", "")


def test_reject_and_redirect_twiml() -> None:
    reject = _xml(reject_twiml("We are busy, please call back."))
    assert [c.tag for c in reject] == ["Say", "Hangup"] and reject.findtext("Say") == "We are busy, please call back."
    assert [c.tag for c in _xml(reject_twiml())] == ["Hangup"]
    redirect = _xml(redirect_twiml("https://other.example.com/twilio/voice"))
    assert redirect.findtext("Redirect") == "https://other.example.com/twilio/voice"
    assert redirect.find("Redirect").get("method") == "POST"  # type: ignore[union-attr]


# --- X-Twilio-Signature ---------------------------------------------------------------------------

TOKEN = "12345678901234567890123456789012"
FORM = {"CallSid": CALL, "AccountSid": ACCOUNT, "From": "+15551230000", "To": "+15559870000",
        "CallStatus": "ringing", "Direction": "inbound", "ApiVersion": "2010-04-01"}


def reference_signature(token: str, url: str, params: dict[str, list[str]], digest: Any = hashlib.sha1) -> str:
    """The algorithm of docs/providers/twilio.md#signatures, written independently of the SDK."""
    s = url
    for name in sorted(params):
        for value in sorted(params[name]):
            s += name + value
    return base64.b64encode(hmac.new(token.encode(), s.encode(), digest).digest()).decode()


def test_signature_matches_the_reference_algorithm_and_validates() -> None:
    url = "https://gw.example.com/twilio/voice"
    sig = compute_twilio_signature(TOKEN, url, FORM)
    assert sig == reference_signature(TOKEN, url, {k: [v] for k, v in FORM.items()})
    assert validate_twilio_request(TOKEN, "https://gw.example.com", "/twilio/voice", FORM, sig)


def test_signature_rejections() -> None:
    url = "https://gw.example.com/twilio/voice"
    sig = compute_twilio_signature(TOKEN, url, FORM)
    assert not validate_twilio_request(TOKEN, "https://gw.example.com", "/twilio/voice", {**FORM, "From": "+1"}, sig)
    assert not validate_twilio_request(TOKEN, "https://evil.example.com", "/twilio/voice", FORM, sig)
    assert not validate_twilio_request(TOKEN, "https://gw.example.com", "/twilio/other", FORM, sig)
    assert not validate_twilio_request("x" + TOKEN[1:], "https://gw.example.com", "/twilio/voice", FORM, sig)
    assert not validate_twilio_request("", "https://gw.example.com", "/twilio/voice", FORM, sig)
    assert not validate_twilio_request(TOKEN, "https://gw.example.com", "/twilio/voice", FORM, None)
    assert not validate_twilio_request(TOKEN, "https://gw.example.com", "/twilio/voice", FORM, "")
    assert not validate_twilio_request(TOKEN, "https://gw.example.com", "/twilio/voice", FORM, "garbage")


def test_signature_port_variants_query_and_prefix() -> None:
    signed_with_port = compute_twilio_signature(TOKEN, "https://gw.example.com:443/twilio/voice", FORM)
    assert validate_twilio_request(TOKEN, "https://gw.example.com", "/twilio/voice", FORM, signed_with_port)
    with_query = compute_twilio_signature(TOKEN, "http://127.0.0.1:9000/p/twilio/voice?tenant=a", FORM)
    assert validate_twilio_request(TOKEN, "http://127.0.0.1:9000/p", "/twilio/voice", FORM, with_query, query="tenant=a")
    assert not validate_twilio_request(TOKEN, "http://127.0.0.1:9000/p", "/twilio/voice", FORM, with_query)


def test_signature_with_repeated_form_keys_as_multidict() -> None:
    url = "https://gw.example.com/twilio/voice"
    pairs: list[tuple[str, Any]] = [*FORM.items(), ("Tag", "b"), ("Tag", "a")]
    expected = reference_signature(TOKEN, url, {**{k: [v] for k, v in FORM.items()}, "Tag": ["b", "a"]})
    assert compute_twilio_signature(TOKEN, url, {**FORM, "Tag": ["b", "a"]}) == expected
    assert validate_twilio_request(TOKEN, "https://gw.example.com", "/twilio/voice", FormData(pairs), expected)
    only_one = FormData([*pairs[:-2], ("Tag", "a")])
    assert not validate_twilio_request(TOKEN, "https://gw.example.com", "/twilio/voice", only_one, expected)


def test_shared_key_hmac_sha256_variant() -> None:
    url = "https://gw.example.com/twilio/voice"
    shared = "shared-key-secret"
    sig256 = reference_signature(shared, url, {k: [v] for k, v in FORM.items()}, hashlib.sha256)
    header = "key=webhooks_sharedkey_1,algorithm=HMAC_SHA256"
    assert compute_twilio_signature(shared, url, FORM, algorithm="HMAC_SHA256") == sig256
    assert validate_twilio_request(shared, "https://gw.example.com", "/twilio/voice", FORM, sig256,
                                   signature_settings=header)
    # Without the header the same signature is checked as HMAC-SHA1 and fails.
    assert not validate_twilio_request(shared, "https://gw.example.com", "/twilio/voice", FORM, sig256)
    assert not validate_twilio_request(shared, "https://gw.example.com", "/twilio/voice", FORM, sig256,
                                       signature_settings="key=k,algorithm=HMAC_SHA512")


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=12), max_size=6), st.text(max_size=30))
def test_signature_validates_any_form_it_signed(form: dict[str, str], path_tail: str) -> None:
    path = "/twilio/voice/" + "".join(c for c in path_tail if c.isalnum())
    sig = compute_twilio_signature(TOKEN, "https://gw.example.com" + path, form)
    assert sig == reference_signature(TOKEN, "https://gw.example.com" + path, {k: [v] for k, v in form.items()})
    assert validate_twilio_request(TOKEN, "https://gw.example.com", path, form, sig)


_counter_values = (
    st.from_regex(r"\A[0-9]{1,20}\Z", fullmatch=True)
    | st.text(alphabet="0123456789\u0663\u00b2 -+x", max_size=20)
    | st.integers(-3, 10**19)
    | st.booleans()
    | st.none()
    | st.floats(allow_nan=False, allow_infinity=False)
)


def _expected_counter(value: Any) -> int | None:
    """The counter rule written out independently: ASCII decimal strings of 1-18 digits, or
    non-negative JSON integers (not booleans); None means the value must be refused."""
    if isinstance(value, str):
        ok = 1 <= len(value) <= 18 and all(c in "0123456789" for c in value)
        return int(value) if ok else None
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value >= 0 else None
    return None


@settings(max_examples=500, deadline=None)
@given(seq=_counter_values, chunk=_counter_values, timestamp=_counter_values)
def test_media_counters_follow_one_rule_on_every_path(seq: Any, chunk: Any, timestamp: Any) -> None:
    """The media hot path checks the usual all-string counters inline; every other shape goes through
    the general checks. Both must accept and refuse exactly the same values, naming the field."""
    dialect = started()
    before = dialect.last_sequence_number
    expected = {"sequenceNumber": None if seq is None else _expected_counter(seq),
                "media.chunk": _expected_counter(chunk), "media.timestamp": _expected_counter(timestamp)}
    message = media_msg(chunk=chunk, timestamp=timestamp)
    if seq is None:
        del message["sequenceNumber"]
    else:
        message["sequenceNumber"] = seq
    bad = [name for name, value in expected.items() if value is None and not (name == "sequenceNumber" and seq is None)]
    if bad:
        with pytest.raises(ProtocolError, match=bad[0].replace(".", r"\.")):
            dialect.parse(json.dumps(message))
        assert dialect.last_sequence_number == before  # a failed parse changes nothing
        return
    event = dialect.parse(json.dumps(message))
    assert isinstance(event, MediaReceived)
    assert (event.payload, event.chunk, event.timestamp_ms) == (AUDIO, expected["media.chunk"], expected["media.timestamp"])
    assert dialect.last_sequence_number == (expected["sequenceNumber"] or before)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("callSid", CALL + ":transcript"),
        ("callSid", "CA" + "x" * (1 << 20)),
        ("callSid", "CA" + "F" * 32),
        ("streamSid", "MZ123"),
        ("accountSid", "XX" + "0" * 32),
    ],
)
def test_start_with_an_ill_formed_provider_id_is_refused(field: str, value: str) -> None:
    """Regression (issue 12.2): ids reach Redis keys and logs, so only Twilio's exact format passes,
    and the error message stays short whatever the peer sent."""
    msg = start_msg()
    if field == "streamSid":
        msg["streamSid"] = value
        msg["start"]["streamSid"] = value
    else:
        msg["start"][field] = value
    dialect = TwilioDialect()
    with pytest.raises(ProtocolError) as caught:
        dialect.parse(json.dumps(msg))
    assert len(str(caught.value)) < 200
    assert not dialect.started
