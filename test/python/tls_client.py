"""A Python client over mutual TLS: grpc.ssl_channel_credentials with the CA and a client certificate.

Usage: tls_client.py <generated stubs dir> <host:port> <admin token> <ca.pem> [<client.pem> <client.key>]

Creates an account with the admin token (the certificate authenticates the connection, the token the caller),
reads it back, and prints one JSON line with what it saw. Without a client certificate, or when the server
refuses the handshake, the first call fails and the line carries its status code instead.
"""
import json
import sys

sys.path.insert(0, sys.argv[1])
import grpc  # noqa: E402
from parley.admin.v1 import admin_pb2, admin_pb2_grpc  # noqa: E402

TIMEOUT = 30  # seconds, per call


def read(path):
    with open(path, "rb") as f:
        return f.read()


def main():
    address, token, ca = sys.argv[2], sys.argv[3], sys.argv[4]
    cert, key = (read(sys.argv[5]), read(sys.argv[6])) if len(sys.argv) > 6 else (None, None)
    creds = grpc.ssl_channel_credentials(root_certificates=read(ca), private_key=key, certificate_chain=cert)
    md = (("authorization", f"Bearer {token}"),)
    with grpc.secure_channel(address, creds) as channel:
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        try:
            account = admin.CreateAccount(admin_pb2.CreateAccountRequest(display_name="Python over mTLS"), metadata=md, timeout=TIMEOUT).account
        except grpc.RpcError as err:
            print(json.dumps({"code": err.code().name}))
            return
        again = admin.GetAccount(admin_pb2.GetAccountRequest(id=account.id), metadata=md, timeout=TIMEOUT).account
        print(json.dumps({"code": "OK", "account_id": account.id, "display_name": again.display_name}))


main()
