"""A genie-flow application's Python side reading a session `parley import --from genie-flow` moved.

Usage: genie_flow_read.py <generated stubs dir> <host:port> <api key> <session id>

Reads the session (GetSession), its dialogue (ListDialogue) and each secondary value (ListSecondaryKeys,
GetSecondary), and loads every secondary value the way genie-flow's SecondaryStore loads one from its Redis
hash — `{class}:` then `{schema_version}:{0|1}:{payload}`, the payload Snappy-compressed when the flag is
1 — without pydantic: the class name, the version and the JSON object. Prints one JSON object.
"""
import json
import sys

sys.path.insert(0, sys.argv[1])
import grpc  # noqa: E402
from google.protobuf import json_format  # noqa: E402
from parley.genie.v1 import genie_pb2, genie_pb2_grpc  # noqa: E402

TIMEOUT = 30  # seconds, per call


def load_secondary(payload: bytes):
    """genie-flow's SecondaryStore.from_serialized and VersionedModel.deserialize, minus the model class."""
    payload_type, payload = payload.split(b":", maxsplit=1)
    persisted_version, compression, payload = payload.split(b":", maxsplit=2)
    if compression == b"1":
        import snappy

        model_json = snappy.decompress(payload).decode("utf-8")
    else:
        model_json = payload.decode("utf-8")
    return {"class": payload_type.decode("utf-8"), "schema_version": int(persisted_version), "value": json.loads(model_json)}


def main():
    _, _, address, api_key, session_id = sys.argv
    md = (("authorization", f"Bearer {api_key}"),)
    with grpc.insecure_channel(address) as channel:
        genie = genie_pb2_grpc.GenieServiceStub(channel)
        session = genie.GetSession(genie_pb2.GetSessionRequest(session_id=session_id), metadata=md, timeout=TIMEOUT).session
        elements = genie.ListDialogue(genie_pb2.ListDialogueRequest(session_id=session_id), metadata=md, timeout=TIMEOUT).elements
        keys = genie.ListSecondaryKeys(genie_pb2.ListSecondaryKeysRequest(session_id=session_id), metadata=md, timeout=TIMEOUT).entries
        secondary = {}
        for entry in keys:
            value = genie.GetSecondary(genie_pb2.GetSecondaryRequest(session_id=session_id, key=entry.key), metadata=md, timeout=TIMEOUT).value
            secondary[entry.key] = load_secondary(value)
    print(
        json.dumps(
            {
                "state": session.state,
                "actor": genie_pb2.Actor.Name(session.actor),
                "fields": json_format.MessageToDict(session.fields),
                "dialogue": [
                    {"actor": genie_pb2.Actor.Name(e.actor), "timestamp": e.timestamp.ToJsonString(), "actor_text": e.actor_text}
                    for e in elements
                ],
                "secondary": secondary,
            }
        )
    )


if __name__ == "__main__":
    main()
