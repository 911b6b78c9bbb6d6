#!/usr/bin/env python3
"""A non-Swift client of the crm.v1 gRPC API (grpcio), for tests that must see the cluster as
other languages' clients do.

  crm_grpc_client.py relayed-errors --target HOST:PORT --tls CA,CERT,KEY
      Sends each bad request a member can relay while other calls are in flight on the same
      HTTP/2 connection; prints one JSON line per case: the code and message the client got,
      and how the calls around it ended.
  crm_grpc_client.py flood --target HOST:PORT --tls CA,CERT,KEY --count N [--key K]
      N linearizable reads at once on one connection; prints a JSON line with counts by code.

Stubs are generated from proto/ at start into a temporary directory (grpc_tools.protoc).
"""
import argparse
import asyncio
import importlib
import json
import os
import sys
import tempfile
import time

import grpc
from grpc_tools import protoc

REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_stubs():
    out = tempfile.mkdtemp(prefix="crm-py-stubs-")
    proto_root = os.path.join(REPOSITORY, "proto")
    files = [os.path.join("crm", "v1", name) for name in ("kv.proto", "health.proto")]
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    status = protoc.main(["protoc", f"-I{proto_root}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}"] + files)
    if status != 0:
        sys.exit(f"protoc failed with {status}")
    sys.path.insert(0, out)
    return importlib.import_module("crm.v1.kv_pb2"), importlib.import_module("crm.v1.kv_pb2_grpc")


def channel(target, tls):
    ca, cert, key = [open(path, "rb").read() for path in tls.split(",")]
    credentials = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
    # Member certificates name crm://member/<id>, not a host: accept the cluster CA's certificate
    # for any name, as the project's own clients do (the CA is private to the cluster).
    options = [("grpc.ssl_target_name_override", "localhost"), ("grpc.max_send_message_length", 64 << 20),
               ("grpc.max_receive_message_length", 64 << 20)]
    return grpc.aio.secure_channel(target, credentials, options=options)


def bad_requests(pb):
    session = pb.WriteSession(session_id=0x7FFF_FFFF_FFFF_FFF1, sequence=1)
    return [
        ("put empty key", "Put", pb.PutRequest(key=b"", value=b"v"), "INVALID_ARGUMENT"),
        ("put over-long key", "Put", pb.PutRequest(key=b"k" * 1025, value=b"v"), "INVALID_ARGUMENT"),
        ("get over-long key", "Get", pb.GetRequest(key=b"k" * 1025), "INVALID_ARGUMENT"),
        ("put over-size value", "Put", pb.PutRequest(key=b"big", value=b"v" * ((1 << 20) + 1)), "INVALID_ARGUMENT"),
        ("put in an unknown session", "Put", pb.PutRequest(key=b"s", value=b"v", session=session), "FAILED_PRECONDITION"),
        ("close an unknown session", "CloseSession", pb.CloseSessionRequest(session_id=0x7FFF_FFFF_FFFF_FFF1), "NOT_FOUND"),
        ("get with an unknown consistency", "Get", pb.GetRequest(key=b"ok", consistency=7), "INVALID_ARGUMENT"),
        ("range from an over-long key", "Range", pb.RangeRequest(**{"from": b"r" * 5000}), "INVALID_ARGUMENT"),
        ("range over the limit", "Range", pb.RangeRequest(limit=20000), "INVALID_ARGUMENT"),
    ]


async def relayed_errors(args):
    pb, stubs = load_stubs()
    async with channel(args.target, args.tls) as ch:
        kv = stubs.KVStub(ch)
        await kv.Put(pb.PutRequest(key=b"ok", value=b"fine"), timeout=10)
        for name, method, request, expected in bad_requests(pb):
            async def good():
                await asyncio.sleep(0.001)
                response = await kv.Get(pb.GetRequest(key=b"ok"), timeout=10)
                return response.value == b"fine"

            async def bad():
                try:
                    await getattr(kv, method)(request, timeout=10)
                    return "OK", ""
                except grpc.aio.AioRpcError as error:
                    return error.code().name, error.details() or ""

            started = time.monotonic()
            results = await asyncio.gather(bad(), *[good() for _ in range(args.others)], return_exceptions=True)
            code, message = results[0] if not isinstance(results[0], BaseException) else ("EXCEPTION", repr(results[0]))
            others = results[1:]
            failures = [repr(r) for r in others if r is not True]
            print(json.dumps({"case": name, "expected": expected, "code": code, "message": message[:300],
                              "others_ok": len(others) - len(failures), "others_failed": len(failures),
                              "first_other_failure": failures[0][:300] if failures else None,
                              "seconds": round(time.monotonic() - started, 3)}), flush=True)


async def flood(args):
    pb, stubs = load_stubs()
    async with channel(args.target, args.tls) as ch:
        kv = stubs.KVStub(ch)

        async def read():
            try:
                response = await kv.Get(pb.GetRequest(key=args.key.encode()), timeout=args.timeout)
                return "OK" if response.found else "NOT_FOUND_KEY"
            except grpc.aio.AioRpcError as error:
                return error.code().name

        started = time.monotonic()
        results = await asyncio.gather(*[read() for _ in range(args.count)])
        counts = {}
        for result in results:
            counts[result] = counts.get(result, 0) + 1
        print(json.dumps({"count": args.count, "seconds": round(time.monotonic() - started, 3), "codes": counts}), flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["relayed-errors", "flood"])
    parser.add_argument("--target", required=True)
    parser.add_argument("--tls", required=True, help="CA,CERT,KEY paths (PEM)")
    parser.add_argument("--others", type=int, default=20, help="calls in flight around each bad one")
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--key", default="hot")
    parser.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args()
    asyncio.run(relayed_errors(args) if args.command == "relayed-errors" else flood(args))


if __name__ == "__main__":
    main()
