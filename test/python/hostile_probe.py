"""Sends hostile requests to parley as a Python service would, and prints one JSON line per case.

Usage: hostile_probe.py <generated stubs dir> <host:port> <api key> <session id>
Each line: {"case": ..., "code": "INVALID_ARGUMENT" | "OK" | ..., "fields": [violated field paths]}.
"""
import json
import sys

sys.path.insert(0, sys.argv[1])
import grpc  # noqa: E402
from google.protobuf import struct_pb2, timestamp_pb2  # noqa: E402
from parley.genie.v1 import genie_pb2, genie_pb2_grpc  # noqa: E402
from parley.prompt.v1 import prompt_pb2, prompt_pb2_grpc  # noqa: E402

address, key, session_id = sys.argv[2], sys.argv[3], sys.argv[4]
md = (("authorization", f"Bearer {key}"),)


def varint(b, i):
    shift = result = 0
    while True:
        byte = b[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, i
        shift += 7


def fields_of(b, wanted):
    """Length-delimited fields numbered `wanted` of a protobuf message, as bytes."""
    out, i = [], 0
    while i < len(b):
        tag, i = varint(b, i)
        no, wire = tag >> 3, tag & 7
        if wire == 2:
            n, i = varint(b, i)
            if no == wanted:
                out.append(b[i : i + n])
            i += n
        elif wire == 0:
            _, i = varint(b, i)
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ValueError("unexpected wire type")
    return out


def violated(err):
    """BadRequest field paths from grpc-status-details-bin (google.rpc.Status → Any → BadRequest)."""
    for k, v in err.trailing_metadata() or ():
        if k != "grpc-status-details-bin":
            continue
        paths = []
        for any_ in fields_of(v, 3):
            type_url = b"".join(fields_of(any_, 1)).decode()
            if not type_url.endswith("google.rpc.BadRequest"):
                continue
            for value in fields_of(any_, 2):
                for violation in fields_of(value, 1):
                    paths += [f.decode() for f in fields_of(violation, 1)]
        return paths
    return []


def case(name, call):
    try:
        call()
        print(json.dumps({"case": name, "code": "OK", "fields": []}), flush=True)
    except grpc.RpcError as err:
        print(json.dumps({"case": name, "code": err.code().name, "fields": violated(err), "message": err.details()[:2000]}), flush=True)


def struct(d):
    s = struct_pb2.Struct()
    s.update(d)
    return s


def nested(levels):
    v = {"leaf": 1}
    for _ in range(levels - 1):
        v = {"a": v}
    return v


with grpc.insecure_channel(address) as channel:
    genie = genie_pb2_grpc.GenieServiceStub(channel)
    prompt = prompt_pb2_grpc.PromptServiceStub(channel)
    t = 20
    case("proto_key", lambda: genie.CreateSession(genie_pb2.CreateSessionRequest(model_type="qa", fields=struct({"__proto__": {"isAdmin": True}})), metadata=md, timeout=t))
    case("proto_mask", lambda: genie.UpdateSession(
        genie_pb2.UpdateSessionRequest(session=genie_pb2.GenieSession(session_id=session_id), update_mask={"paths": ["fields.__proto__.hasOwnProperty"]}),
        metadata=md, timeout=t))
    case("nul", lambda: genie.SendEvent(genie_pb2.SendEventRequest(session_id=session_id, event_name="user_input", actor_input="a\x00b"), metadata=md, timeout=t))
    case("nan", lambda: genie.CreateSession(genie_pb2.CreateSessionRequest(model_type="qa", fields=struct({"n": float("nan")})), metadata=md, timeout=t))
    case("deep", lambda: genie.CreateSession(genie_pb2.CreateSessionRequest(model_type="qa", fields=struct(nested(40))), metadata=md, timeout=t))
    case("timestamp", lambda: prompt.ListPrompts(prompt_pb2.ListPromptsRequest(created_after=timestamp_pb2.Timestamp(seconds=10**12)), metadata=md, timeout=t))
    case("timestamp_nanos", lambda: prompt.ListPrompts(prompt_pb2.ListPromptsRequest(created_after=timestamp_pb2.Timestamp(seconds=0, nanos=-1)), metadata=md, timeout=t))
    case("int64_past_2_53", lambda: genie.SendEvent(genie_pb2.SendEventRequest(session_id=session_id, event_name="user_input", expected_revision=2**53 + 1), metadata=md, timeout=t))
    case("mask_flood", lambda: prompt.UpdatePrompt(
        prompt_pb2.UpdatePromptRequest(prompt=prompt_pb2.Prompt(id="00000000-0000-4000-8000-000000000000"), update_mask={"paths": ["x" * 90 + str(i) for i in range(1000)]}),
        metadata=md, timeout=t))
    case("still_served", lambda: genie.GetSession(genie_pb2.GetSessionRequest(session_id=session_id), metadata=md, timeout=t))
