"""UpdatePrompt from JSON as a Python client writes it: json_format parses the request (FieldMask as a string of
camelCase paths, `*` included), then it goes over gRPC. Message classes come from the descriptor set that
`npm run generate` builds (src/gen/parley.binpb), because the protoc of Debian's python3-grpc-tools (3.5.1)
predates proto3 `optional`.

Usage: prompt_json_update.py <descriptor set> <host:port> <api key> <request JSON>
Prints the response as JSON (or {"code": ..., "message": ...} on an error).
"""
import json
import sys

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

descriptors, address, key, body = sys.argv[1:5]
fds = descriptor_pb2.FileDescriptorSet()
with open(descriptors, "rb") as f:
    fds.ParseFromString(f.read())
pool = descriptor_pool.Default()
for file in fds.file:
    try:
        pool.FindFileByName(file.name)
    except KeyError:
        pool.Add(file)
factory = message_factory.MessageFactory(pool)
Request = factory.GetPrototype(pool.FindMessageTypeByName("parley.prompt.v1.UpdatePromptRequest"))
Response = factory.GetPrototype(pool.FindMessageTypeByName("parley.prompt.v1.UpdatePromptResponse"))

request = json_format.Parse(body, Request())
with grpc.insecure_channel(address) as channel:
    call = channel.unary_unary(
        "/parley.prompt.v1.PromptService/UpdatePrompt",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=Response.FromString,
    )
    try:
        response = call(request, metadata=(("authorization", f"Bearer {key}"),), timeout=30)
        print(json_format.MessageToJson(response, indent=None))
    except grpc.RpcError as e:
        print(json.dumps({"code": e.code().name, "message": e.details()}))
